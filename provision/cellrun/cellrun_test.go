package cellrun_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/crio/criotest"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/vm/vmtest"
)

// fakeFetcher hands out real files for gomod components and marks package
// components as the guest's.
type fakeFetcher struct {
	dir   string
	mu    sync.Mutex
	calls []string
	fail  error
}

func (f *fakeFetcher) Fetch(ctx context.Context, cell lock.LockedCell, c lock.Part) (artifacts.Files, error) {
	f.mu.Lock()
	f.calls = append(f.calls, c.Component)
	f.mu.Unlock()
	if f.fail != nil {
		return artifacts.Files{}, f.fail
	}
	if c.Source == profiles.SourcePackage {
		return artifacts.Files{InGuest: true}, nil
	}
	names := map[string][]string{"cri-o": {"crio", "pinns"}, "cri-tools": {"crictl"}, "runc": {"runc"}}[c.Component]
	out := artifacts.Files{Binaries: map[string]string{}}
	for _, n := range names {
		p := filepath.Join(f.dir, n)
		if err := os.WriteFile(p, []byte("#!"+n+" "+c.Version), 0o755); err != nil {
			return out, err
		}
		out.Binaries[n] = p
	}
	return out, nil
}

func (f *fakeFetcher) Cached(cell lock.LockedCell, c lock.Part) (artifacts.Files, bool) {
	files, err := f.Fetch(context.Background(), cell, c)
	return files, err == nil
}

type fakeImages struct{ fail error }

func (f fakeImages) Ensure(ctx context.Context, ref lock.Image) (images.Files, error) {
	return images.Files{Disk: "/cache/base.raw", Format: "raw", Kernel: "/cache/vmlinuz", Initrd: "/cache/initrd", FastSeed: true}, f.fail
}

func cell(crictl string) lock.LockedCell {
	art := func(role profiles.Role, comp, v string, src profiles.Source) lock.Part {
		a := lock.Artifact{Component: comp, Version: v, Source: src}
		if src == profiles.SourcePackage {
			a.Package = map[string]string{"conmon": "conmon", "cni-plugins": "containernetworking-plugins"}[comp]
		}
		return lock.Part{Role: role, Artifact: a}
	}
	return lock.LockedCell{Profile: "p", Name: "p", Test: profiles.TestImageVolume,
		VM:    profiles.VM{CPUs: 2, Memory: 2 << 30, Disk: 10 << 30},
		Image: lock.Image{Name: "debian-12", Kind: lock.ImageLocal, Digest: "sha256:" + strings.Repeat("a", 64), Format: "raw"},
		Components: []lock.Part{
			art(profiles.RoleCRIO, "cri-o", "1.34.0", profiles.SourceGoMod),
			art(profiles.RoleCRITools, "cri-tools", crictl, profiles.SourceGoMod),
			art(profiles.RoleRuntime, "runc", "1.3.6", profiles.SourceGoMod),
			art(profiles.RoleConmon, "conmon", "2.1.6", profiles.SourcePackage),
			art(profiles.RoleCNI, "cni-plugins", "1.1.1", profiles.SourcePackage),
		}}
}

// workloadDir caches the static test workload across the package's tests.
var workloadDir = filepath.Join(os.TempDir(), "envctl-cellrun-test-workload")

type harness struct {
	drv    *vmtest.Driver
	fetch  *fakeFetcher
	opts   cellrun.Options
	events []string
	stacks []*criotest.Stack
	mu     sync.Mutex
	tweak  func(*criotest.Stack, *guesttest.Server)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{drv: vmtest.New(), fetch: &fakeFetcher{dir: t.TempDir()}}
	h.drv.BootGuests(t, func(srv *guesttest.Server) {
		s := criotest.Install(srv)
		h.mu.Lock()
		h.stacks = append(h.stacks, s)
		tweak := h.tweak
		h.mu.Unlock()
		if tweak != nil {
			tweak(s, srv)
		}
	})
	self, err := testimages.WorkloadBinary(context.Background(), workloadDir, "")
	if err != nil {
		t.Fatal(err)
	}
	h.opts = cellrun.Options{
		VM:    vm.Options{URI: "fake:///system", Store: env.Store{Dir: t.TempDir()}, Connect: h.drv.Connect, BootTimeout: 20 * time.Second},
		Fetch: h.fetch, Images: fakeImages{}, Workload: self, TestImages: cellrun.LocalImages,
		Progress: func(e cellrun.Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if e.Done {
				h.events = append(h.events, e.Phase+" done")
			} else {
				h.events = append(h.events, e.Phase)
			}
		},
	}
	return h
}

func (h *harness) assertClean(t *testing.T) {
	t.Helper()
	if d := h.drv.DomainNames(); len(d) != 0 {
		t.Errorf("domains left: %v", d)
	}
	if v := h.drv.VolumeNames(); len(v) != 0 {
		t.Errorf("volumes left: %v", v)
	}
	if envs, _ := h.opts.VM.Store.List(); len(envs) != 0 {
		t.Errorf("environments left: %d", len(envs))
	}
}

func phases(r *report.Report) []string {
	var out []string
	for _, p := range r.Phases {
		if !strings.Contains(p.Name, ".") {
			out = append(out, p.Name)
		}
	}
	return out
}

func TestRunPasses(t *testing.T) {
	h := newHarness(t)
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != report.VerdictPass || len(rep.Steps) != 16 || rep.Passed() != 16 {
		t.Fatalf("verdict %s, %d/%d steps: %+v", rep.Verdict, rep.Passed(), len(rep.Steps), rep.Steps)
	}
	for _, c := range rep.Components {
		if !c.Verified || c.Actual == "" {
			t.Errorf("component %+v not verified", c)
		}
	}
	if got := strings.Join(phases(rep), " "); got != "fetch boot install verify test teardown" {
		t.Errorf("phases %s", got)
	}
	if rep.Phase("install.registry") <= 0 || rep.Env == "" || rep.Accel != "qemu" || rep.Results != "" {
		t.Errorf("report %+v", rep)
	}
	if got := strings.Join(h.events, ","); got != "fetch,fetch done,boot,boot done,install,install done,verify,verify done,test,test done,teardown,teardown done" {
		t.Errorf("events %s", got)
	}
	h.assertClean(t)
}

func TestRunFailsWithDiagnosis(t *testing.T) {
	h := newHarness(t)
	h.tweak = func(s *criotest.Stack, _ *guesttest.Server) { s.DropsMount = true }
	h.opts.ResultsDir = filepath.Join(t.TempDir(), "results")
	c := cell("1.30.0")
	criotest.Versions[`^/usr/local/bin/crictl --version$`] = "crictl version v1.30.0\n"
	defer func() { criotest.Versions[`^/usr/local/bin/crictl --version$`] = "crictl version v1.34.0\n" }()
	rep, err := cellrun.Run(context.Background(), c, h.opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != report.VerdictFail || len(rep.Diagnosis) != 1 || !strings.Contains(rep.Diagnosis[0].Cause, "crictl v1.30.0 does not send CRI Mount.image") {
		t.Fatalf("verdict %s diagnosis %+v", rep.Verdict, rep.Diagnosis)
	}
	if len(rep.Warnings) == 0 {
		t.Error("no prediction before boot")
	}
	for _, f := range []string{"crio-journal.log", "crictl-ps.txt", "container.json", "crictl-run.txt"} {
		if _, err := os.Stat(filepath.Join(h.opts.ResultsDir, f)); err != nil {
			t.Errorf("results lack %s", f)
		}
	}
	if !slices.Contains(phases(rep), cellrun.PhaseCollect) {
		t.Errorf("no collect phase: %v", phases(rep))
	}
	h.assertClean(t)
}

func TestRunDriftIsCouldNotTest(t *testing.T) {
	h := newHarness(t)
	h.tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
		srv.Reply(`^/usr/local/bin/runc --version$`, guesttest.Reply{Stdout: "runc version 1.3.5\n"})
	}
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if !fault.Is(err, fault.Infra) || rep.Verdict != report.VerdictError || rep.ErrorClass != fault.Infra {
		t.Fatalf("err %v verdict %s", err, rep.Verdict)
	}
	if !strings.Contains(rep.Error, `runc: locked 1.3.6, installed "1.3.5"`) || len(rep.Steps) != 0 {
		t.Errorf("report %+v", rep)
	}
	for _, c := range rep.Components {
		if c.Name == "runc" && (c.Verified || c.Actual != "1.3.5") {
			t.Errorf("runc %+v", c)
		}
	}
	h.assertClean(t)
}

func TestRunFailuresBeforeTheGuest(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *harness)
		class  fault.Class
		phases string
	}{
		{"fetch fails", func(h *harness) { h.fetch.fail = fault.Infraf("go build: exit 1") }, fault.Infra, "fetch"},
		{"image missing", func(h *harness) { h.opts.Images = fakeImages{fail: fault.Inputf("image gone")} }, fault.Input, "fetch"},
		{"domain does not start", func(h *harness) { h.drv.Fail["Start"] = fault.Infraf("qemu: %w", vmtest.ErrInjected) }, fault.Infra, "fetch boot"},
		{"no hypervisor", func(h *harness) { h.drv.Fail["Connect"] = fault.Infraf("cannot reach libvirt") }, fault.Infra, "fetch boot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
			if fault.ClassOf(err) != tt.class || rep.Verdict != report.VerdictError || rep.ErrorClass != tt.class {
				t.Fatalf("err %v (%v), verdict %s", err, fault.ClassOf(err), rep.Verdict)
			}
			if got := strings.Join(phases(rep), " "); got != tt.phases {
				t.Errorf("phases %s, want %s", got, tt.phases)
			}
			delete(h.drv.Fail, "Start")
			delete(h.drv.Fail, "Connect")
			h.assertClean(t)
		})
	}
}

func TestValidateBeforeAnyWork(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*cellrun.Options, *lock.LockedCell)
		class  fault.Class
		want   string
	}{
		{"bad accelerator", func(o *cellrun.Options, _ *lock.LockedCell) { o.VM.Accel = "hvf" }, fault.Input, "--accel"},
		{"bad test images", func(o *cellrun.Options, _ *lock.LockedCell) { o.TestImages = "docker" }, fault.Input, "--test-images"},
		{"workload missing", func(o *cellrun.Options, _ *lock.LockedCell) { o.Workload = "/nonexistent/envctl" }, fault.Infra, "test images"},
		{"no components", func(_ *cellrun.Options, c *lock.LockedCell) { c.Components = nil }, fault.Input, "pins no components"},
		{"no fetcher", func(o *cellrun.Options, _ *lock.LockedCell) { o.Fetch = nil }, fault.Input, "no artifact"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := cell("1.34.0")
			tt.mutate(&h.opts, &c)
			rep, err := cellrun.Run(context.Background(), c, h.opts)
			if fault.ClassOf(err) != tt.class || !strings.Contains(err.Error(), tt.want) || rep.Verdict != report.VerdictError {
				t.Fatalf("err %v", err)
			}
			if len(h.fetch.calls) != 0 || h.drv.Opened != 0 || len(rep.Phases) != 0 {
				t.Errorf("work was done before validation failed: fetch %v, connections %d", h.fetch.calls, h.drv.Opened)
			}
		})
	}
}

func TestStopEarlyAndKeep(t *testing.T) {
	h := newHarness(t)
	h.opts.Stop = cellrun.AfterBoot
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if err != nil || rep.Verdict != report.VerdictReady || len(h.fetch.calls) != 0 {
		t.Fatalf("--no-install: %v %s %v", err, rep.Verdict, h.fetch.calls)
	}
	h.opts.Stop = cellrun.AfterInstall
	h.opts.Keep = true
	h.opts.Workload = "" // no test, no test images: no workload needed
	rep, err = cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if err != nil || rep.Verdict != report.VerdictReady || !rep.Kept || !rep.Components[0].Verified {
		t.Fatalf("--no-test --keep: %v %+v", err, rep)
	}
	if d := h.drv.DomainNames(); len(d) != 1 {
		t.Fatalf("kept domains %v", d)
	}
	if err := vm.Down(context.Background(), h.opts.VM, rep.Env); err != nil {
		t.Fatal(err)
	}
	h.assertClean(t)
}

func TestInterruptedRunTearsDown(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	h.tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
		srv.Handle(`^crictl pull`, func(string, []string) guesttest.Reply {
			cancel()
			time.Sleep(200 * time.Millisecond)
			return guesttest.Reply{Exit: 1}
		})
	}
	h.opts.Keep = true // a cancelled run is never kept
	rep, err := cellrun.Run(ctx, cell("1.34.0"), h.opts)
	if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "interrupted") || rep.Kept {
		t.Fatalf("err %v kept %v", err, rep.Kept)
	}
	h.assertClean(t)
}

type fakeLocker struct {
	calls int
	file  func(p *profiles.Profile) *lock.File
}

func (f *fakeLocker) lock(ctx context.Context, p *profiles.Profile) (*lock.File, error) {
	f.calls++
	return f.file(p), nil
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	src := "source: gomod\ncomponents:\n  cri-o: {version: \"1.34.0\"}\n  cri-tools: {version: \"1.34.0\"}\n  runtime: {name: runc, version: \"1.3.6\"}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := profiles.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := cell("1.34.0")
	l := &fakeLocker{file: func(p *profiles.Profile) *lock.File {
		f := &lock.File{LockVersion: lock.FormatVersion, Profile: p.Name, ProfileHash: p.Hash(), Inputs: p.Inputs(), Arch: "amd64", Image: c.Image}
		lc := lock.Cell{Name: p.Name, Components: map[profiles.Role]string{}}
		for _, part := range c.Components[:3] {
			f.Artifacts = append(f.Artifacts, part.Artifact)
			lc.Components[part.Role] = part.Key()
		}
		f.Cells = []lock.Cell{lc}
		return f
	}}
	ctx := context.Background()
	_, err = cellrun.Resolve(ctx, p, "amd64", cellrun.Locked, l.lock)
	var missing *lock.MissingError
	if !errors.As(err, &missing) || !fault.Is(err, fault.Input) || l.calls != 0 {
		t.Fatalf("--locked without a lock: %v", err)
	}
	res, err := cellrun.Resolve(ctx, p, "amd64", cellrun.LockOnFirstUse, l.lock)
	if err != nil || !res.Wrote || len(res.Cells) != 1 || l.calls != 1 {
		t.Fatalf("first use: %+v %v", res, err)
	}
	if _, err := os.Stat(p.LockPath()); err != nil {
		t.Fatal("no lock written")
	}
	res, err = cellrun.Resolve(ctx, p, "amd64", cellrun.Locked, l.lock, p.Name)
	if err != nil || res.Wrote || l.calls != 1 || res.Cells[0].Components[2].Version != "1.3.6" {
		t.Fatalf("second use: %+v %v", res, err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(src, "1.3.6", "1.3.5", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p2, _ := profiles.LoadFile(path)
	for _, mode := range []cellrun.LockMode{cellrun.Locked, cellrun.LockOnFirstUse} {
		_, err = cellrun.Resolve(ctx, p2, "amd64", mode, l.lock)
		if !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "components.runtime.version") {
			t.Errorf("stale lock (mode %d): %v", mode, err)
		}
	}
	if _, err := cellrun.Resolve(ctx, p, "amd64", cellrun.Locked, l.lock, "nope"); !fault.Is(err, fault.Input) {
		t.Errorf("unknown cell: %v", err)
	}
}

func TestPredictReadsOnlyWhatIsCached(t *testing.T) {
	f := &fakeFetcher{dir: t.TempDir()}
	got := cellrun.Predict(cell("1.30.0"), f)
	if len(got) != 1 || !strings.Contains(got[0].Cause, "crictl v1.30.0") {
		t.Errorf("predict %+v", got)
	}
	parts, _, err := cellrun.Fetch(context.Background(), cell("1.34.0"), f)
	if err != nil || len(parts) != 5 || !parts[3].Files.InGuest {
		t.Errorf("fetch %+v %v", parts, err)
	}
}

// TestRunAll: every cell's report survives a failure; --fail-fast stops
// after the first cell that does not pass, keeping the ones before.
func TestRunAll(t *testing.T) {
	h := newHarness(t)
	good := cell("1.34.0")
	good.Name = "good"
	bad := cell("1.30.0") // the guest reports crictl 1.34.0: drift, could not test
	bad.Name = "bad"
	var seen []string
	reps := cellrun.RunAll(context.Background(), []lock.LockedCell{good, bad, good}, h.opts, true, func(r *report.Report) { seen = append(seen, r.Cell+":"+string(r.Verdict)) })
	if strings.Join(seen, " ") != "good:pass bad:error" || len(reps) != 2 {
		t.Errorf("fail-fast: %v", seen)
	}
	reps = cellrun.RunAll(context.Background(), []lock.LockedCell{good, bad, good}, h.opts, false, nil)
	if len(reps) != 3 || reps[2].Verdict != report.VerdictPass {
		t.Errorf("without fail-fast: %d reports", len(reps))
	}
	if v, class := report.Worst(reps); v != report.VerdictError || class != fault.Infra {
		t.Errorf("aggregate %s %v", v, class)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if reps := cellrun.RunAll(ctx, []lock.LockedCell{good}, h.opts, false, nil); len(reps) != 0 {
		t.Errorf("a cancelled matrix ran %d cells", len(reps))
	}
	h.assertClean(t)
}
