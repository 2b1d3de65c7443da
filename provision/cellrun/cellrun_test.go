package cellrun_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/cellrun/cellruntest"
	"github.com/envctl/envctl/provision/crio/criotest"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/vm/vmtest"
	"github.com/envctl/envctl/provision/warm"
)

func cell(crictl string) lock.LockedCell { return cellruntest.Cell("p", crictl) }

type harness struct {
	*cellruntest.Harness
	drv   *vmtest.Driver
	fetch *cellruntest.Fetcher
	opts  cellrun.Options
}

func newHarness(t *testing.T) *harness {
	h := cellruntest.New(t)
	return &harness{Harness: h, drv: h.Driver, fetch: h.Fetch, opts: h.Opts}
}

func (h *harness) assertClean(t *testing.T) { h.AssertClean(t) }

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
	var lines []string
	var mu sync.Mutex
	h.opts.Step = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != report.VerdictPass || len(rep.Steps) != 17 || rep.Passed() != 17 {
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
	if rep.Phase("test.registry") <= 0 || rep.Env == "" || rep.Accel != "qemu" || rep.Results != "" {
		t.Errorf("report %+v", rep)
	}
	if got := strings.Join(h.Events(), ","); got != "fetch,fetch done,boot,boot done,install,install done,verify,verify done,test,test done,teardown,teardown done" {
		t.Errorf("events %s", got)
	}
	// The verdict is said before the teardown, not only after it.
	verdict := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "verdict: PASS ") })
	teardown := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "tearing down ") })
	if verdict < 0 || teardown < 0 || verdict > teardown {
		t.Errorf("verdict at line %d, teardown at %d:\n%s", verdict, teardown, strings.Join(lines, "\n"))
	}
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "versions verified against the lock") && strings.Contains(l, "checked in the guest")
	}) {
		t.Errorf("the verify line does not say its proof:\n%s", strings.Join(lines, "\n"))
	}
	if rep.VerifiedBy != "digests" {
		t.Errorf("verified_by %q after a cold start", rep.VerifiedBy)
	}
	// verdict_seconds: when the verdict was said, before the teardown.
	if rep.VerdictSeconds <= 0 || rep.VerdictSeconds > rep.Seconds+0.1 {
		t.Errorf("verdict_seconds %.2f, seconds %.2f: want the verdict within the run", rep.VerdictSeconds, rep.Seconds)
	}
	h.assertClean(t)
}

func TestRunFailsWithDiagnosis(t *testing.T) {
	h := newHarness(t)
	h.opts.ResultsDir = filepath.Join(t.TempDir(), "results")
	rep, err := cellrun.Run(context.Background(), cell("1.30.0"), h.opts)
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
	h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
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
		{"fetch fails", func(h *harness) { h.fetch.Fail = fault.Infraf("go build: exit 1") }, fault.Infra, "fetch"},
		{"image missing", func(h *harness) { h.opts.Images = cellruntest.Images{Fail: fault.Inputf("image gone")} }, fault.Input, "fetch"},
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
			if h.fetch.Total() != 0 || h.drv.Opened != 0 || len(rep.Phases) != 0 {
				t.Errorf("work was done before validation failed: fetch %v, connections %d", h.fetch.Calls, h.drv.Opened)
			}
		})
	}
}

func TestStopEarlyAndKeep(t *testing.T) {
	h := newHarness(t)
	h.opts.Stop = cellrun.AfterBoot
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if err != nil || rep.Verdict != report.VerdictReady || h.fetch.Total() != 0 {
		t.Fatalf("--no-install: %v %s %v", err, rep.Verdict, h.fetch.Calls)
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
	// The kept VM pins what it boots from (here its artifact disk):
	// cache gc cannot remove it while the environment exists.
	pins := h.opts.Cache.Pinned()
	if len(pins) != 1 {
		t.Fatalf("pins %v, want the kept environment's", pins)
	}
	for owner, roots := range pins {
		if !strings.Contains(owner, rep.Env) || len(roots) == 0 {
			t.Fatalf("pin %s %v", owner, roots)
		}
		entries, _ := h.opts.Cache.Entries()
		for _, e := range entries {
			var inUse *cache.InUseError
			if err := h.opts.Cache.RemoveEntry(context.Background(), e); !errors.As(err, &inUse) || inUse.PinnedBy == "" {
				t.Errorf("cache gc of %s under a kept VM: %v", e.Name, err)
			}
		}
	}
	if err := vm.Down(context.Background(), h.opts.VM, rep.Env); err != nil {
		t.Fatal(err)
	}
	if pins := h.opts.Cache.Pinned(); len(pins) != 0 {
		t.Errorf("pins after down: %v", pins)
	}
	h.assertClean(t)
}

func TestInterruptedRunTearsDown(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
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
	f := &cellruntest.Fetcher{Dir: t.TempDir()}
	got := cellrun.Predict(cell("1.30.0"), f)
	if len(got) != 1 || !strings.Contains(got[0].Cause, "crictl v1.30.0") {
		t.Errorf("predict %+v", got)
	}
	fetched, err := cellrun.Fetch(context.Background(), cell("1.34.0"), f, nil)
	if err != nil || len(fetched.Parts) != 5 || !fetched.Parts[3].Files.InGuest {
		t.Errorf("fetch %+v %v", fetched, err)
	}
}

// The fetched files must be what the lock records; a Go build by another
// toolchain is checked against its own digests, with a note.
func TestFetchChecksTheLocksDigests(t *testing.T) {
	f := &cellruntest.Fetcher{Dir: t.TempDir()}
	tests := []struct {
		name  string
		tweak func(c *lock.LockedCell)
		err   string
		note  string
	}{
		{"as locked", func(*lock.LockedCell) {}, "", ""},
		{"edited digest", func(c *lock.LockedCell) {
			c.Components[1].Binaries = map[string]string{"crictl": strings.Repeat("1", 64)}
		},
			"crictl has sha256", ""},
		{"binary the artifact lacks", func(c *lock.LockedCell) { c.Components[1].Binaries["critest"] = strings.Repeat("1", 64) },
			"records binary critest", ""},
		{"another toolchain", func(c *lock.LockedCell) {
			c.Components[1].Binaries = map[string]string{"crictl": strings.Repeat("1", 64)}
			c.Components[1].Toolchain = "go1.0"
		}, "", "built with go"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cell("1.34.0")
			tt.tweak(&c)
			got, err := cellrun.Fetch(context.Background(), c, f, nil)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !fault.Is(err, fault.Input)) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
			if tt.note != "" && (len(got.Notes) != 1 || !strings.Contains(got.Notes[0], tt.note) || got.Parts[1].Binaries != nil) {
				t.Errorf("notes %v, binaries %v", got.Notes, got.Parts[1].Binaries)
			}
		})
	}
}

func TestRecordBinaries(t *testing.T) {
	c := cell("1.34.0")
	f := &lock.File{Cells: []lock.Cell{{Name: "p", Components: map[profiles.Role]string{}}}}
	for _, part := range c.Components {
		a := part.Artifact
		a.Binaries = nil
		f.Artifacts = append(f.Artifacts, a)
		f.Cells[0].Components[part.Role] = a.Key()
	}
	p := &profiles.Profile{Name: "p", Test: profiles.TestImageVolume}
	if err := cellrun.RecordBinaries(context.Background(), f, p, &cellruntest.Fetcher{Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	for i, a := range f.Artifacts {
		want := c.Components[i].Binaries
		if !maps.Equal(a.Binaries, want) || (a.CarriesFiles() && a.Toolchain == "") {
			t.Errorf("%s: binaries %v toolchain %q, want %v", a.Key(), a.Binaries, a.Toolchain, want)
		}
	}
}

// A phase that overruns its limit ends the run as "could not test", says
// which phase and limit, and the VM is torn down.
func TestPhaseTimeout(t *testing.T) {
	h := newHarness(t)
	h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
		srv.Handle(`^crictl pull`, func(string, []string) guesttest.Reply {
			time.Sleep(3 * time.Second)
			return guesttest.Reply{}
		})
	}
	h.opts.Timeouts = map[string]time.Duration{cellrun.PhaseTest: time.Second}
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	var pt *cellrun.PhaseTimeoutError
	if !errors.As(err, &pt) || pt.Phase != cellrun.PhaseTest || !fault.Is(err, fault.Infra) || rep.Verdict != report.VerdictError {
		t.Fatalf("err %v verdict %s", err, rep.Verdict)
	}
	h.assertClean(t)
}

// A panic is an internal error, not a stack trace, and the VM is torn
// down like on any failure; before the VM exists there is nothing to
// tear down.
func TestPanicsAreTornDown(t *testing.T) {
	for _, phase := range []string{cellrun.PhaseFetch, cellrun.PhaseInstall, cellrun.PhaseTest} {
		t.Run(phase, func(t *testing.T) {
			h := newHarness(t)
			h.opts.Progress = func(e cellrun.Event) {
				if e.Phase == phase && !e.Done {
					panic("boom in " + phase)
				}
			}
			rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
			if err == nil || !strings.Contains(err.Error(), "internal error: boom in "+phase) || !fault.Is(err, fault.Infra) || rep.Verdict != report.VerdictError {
				t.Fatalf("err %v", err)
			}
			h.assertClean(t)
		})
	}
}

// The guest stopping mid-test makes the run "could not test" (exit 3),
// not a failed test.
func TestGuestLostMidTest(t *testing.T) {
	h := newHarness(t)
	h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
		srv.Handle(`^crictl run `, func(string, []string) guesttest.Reply {
			go srv.Close()
			time.Sleep(200 * time.Millisecond)
			return guesttest.Reply{}
		})
	}
	rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if !fault.Is(err, fault.Infra) || rep.Verdict != report.VerdictError || !strings.Contains(err.Error(), "stopped answering") {
		t.Fatalf("err %v verdict %s", err, rep.Verdict)
	}
	h.assertClean(t)
}

// --test-images upstream: the host pulls upstream's images (here from a
// stand-in upstream registry) and serves them like the local ones; the
// guest stays offline and pulls them from the host under stable names.
func TestUpstreamImagesKeepTheGuestOffline(t *testing.T) {
	h := newHarness(t)
	up, err := testimages.Serve(context.Background(), h.opts.Workload)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	old := testimages.Upstream
	defer func() { testimages.Upstream = old }()
	testimages.Upstream.Artifact = up.Addr + "/" + testimages.ArtifactRepo
	testimages.Upstream.Workload = up.Addr + "/" + testimages.WorkloadRepo
	testimages.Upstream.Pause = up.Addr + "/" + testimages.PauseRepo
	var pulls []string
	var mu sync.Mutex
	h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
		srv.Handle(`^crictl pull (.*)$`, func(_ string, m []string) guesttest.Reply {
			mu.Lock()
			pulls = append(pulls, m[1])
			mu.Unlock()
			return guesttest.Reply{Stdout: "Image is up to date\n"}
		})
	}
	online := false
	boot := h.drv.OnStart
	h.drv.OnStart = func(spec vm.DomainSpec, seed []byte) error { online = online || spec.Online; return boot(spec, seed) }
	h.opts.TestImages = cellrun.UpstreamImages
	_, err = cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
	if online {
		t.Error("the guest was given a network for upstream images")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pulls) == 0 {
		t.Fatalf("no pulls (err %v)", err)
	}
	for _, p := range pulls {
		if !strings.Contains(p, "localhost:5000/upstream/127.0.0.1-") {
			t.Errorf("the guest pulled %s, not the host's copy", p)
		}
	}
}

// Upstream's suite runs after envctl's own (test both) or alone, from the
// locked tools; its TAP lines become steps, and the suites are compared.
func TestUpstreamSuite(t *testing.T) {
	const pass = "1..5\nok 1 OCI image volume mount lifecycle # in 2000 ms\nok 2 OCI image volume SELinux # skip not enforcing\nok 3 OCI image volume does not exist locally # in 900 ms\nok 4 OCI image volume mount with sub path # in 1500 ms\nok 5 OCI image volume mount with invalid sub path # in 1400 ms\n"
	const gated = "1..2\nok 1 OCI image volume mount lifecycle # skip requires crictl version \"1.31\" or newer\nok 2 OCI image volume SELinux # skip requires crictl version \"1.31\" or newer\n"
	const fail = "1..1\nnot ok 1 OCI image volume mount lifecycle # in 2000 ms\n# (in test file oci_volumes.bats, line 41)\n#   `false' failed\n"
	for _, tc := range []struct {
		name, crictl string
		test         profiles.TestName
		tap          string
		verdict      report.Verdict
		suites       int
		disagree     string
		summary      []string
	}{
		{"both pass", "1.34.0", profiles.TestBoth, pass, report.VerdictPass, 2, "", []string{"PASS p: both"}},
		{"upstream only, gated", "1.30.0", profiles.TestUpstream, gated, report.VerdictNotTested, 1, "",
			[]string{"NOT TESTED p", `upstream skipped: requires crictl version "1.31" or newer`, "envctl: crictl v1.30.0 does not send CRI Mount.image"}},
		{"upstream fails where envctl passes", "1.34.0", profiles.TestBoth, fail, report.VerdictFail, 2, "envctl PASS, upstream FAIL", []string{"SUITES DISAGREE: envctl PASS, upstream FAIL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
				srv.Reply(`^dpkg -i .*systemctl stop crio`, guesttest.Reply{})
				srv.Reply(`get_images`, guesttest.Reply{})
				srv.Reply(`bats --tap --timing oci_volumes.bats$`, guesttest.Reply{Stdout: tc.tap})
			}
			c := cell(tc.crictl)
			c.Test = tc.test
			rep, err := cellrun.Run(context.Background(), c, h.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Verdict != tc.verdict || len(rep.Suites) != tc.suites || rep.Disagreement != tc.disagree {
				t.Fatalf("verdict %s, suites %+v, disagreement %q", rep.Verdict, rep.Suites, rep.Disagreement)
			}
			for _, s := range tc.summary {
				if !strings.Contains(rep.Summary(), s) {
					t.Errorf("summary %q lacks %q", rep.Summary(), s)
				}
			}
			if !slices.ContainsFunc(rep.Phases, func(p report.Phase) bool { return p.Name == "test.upstream" }) {
				t.Errorf("no upstream time: %+v", rep.Phases)
			}
			if h.fetch.Calls["bats@1.11.1-1/release"] != 1 || h.fetch.Calls["cri-o-tests@1.34.0/gomod"] != 1 {
				t.Errorf("tools fetched %v", h.fetch.Calls)
			}
			h.assertClean(t)
		})
	}
}

func TestUpstreamSuiteNeedsItsTools(t *testing.T) {
	h := newHarness(t)
	c := cell("1.34.0")
	c.Test, c.Tools = profiles.TestUpstream, nil
	rep, err := cellrun.Run(context.Background(), c, h.opts)
	if err == nil || fault.ClassOf(err) != fault.Input || !strings.Contains(err.Error(), "pins no bats") || rep.Verdict != report.VerdictError {
		t.Fatalf("err %v verdict %s", err, rep.Verdict)
	}
	if phaseSeconds := rep.Phase(cellrun.PhaseBoot); phaseSeconds != 0 || len(h.drv.DomainNames()) != 0 {
		t.Error("booted without the tools")
	}
}

// A bats file the locked CRI-O tree does not have is an input error
// before any VM, naming the files it has.
func TestUnknownBatsFileIsAnInputError(t *testing.T) {
	h := newHarness(t)
	c := cell("1.34.0")
	c.Test = profiles.TestName("upstream:no_such.bats")
	rep, err := cellrun.Run(context.Background(), c, h.opts)
	if err == nil || fault.ClassOf(err) != fault.Input || !strings.Contains(err.Error(), "has no no_such.bats") ||
		!strings.Contains(err.Error(), "oci_volumes.bats") || rep.Verdict != report.VerdictError {
		t.Fatalf("err %v verdict %s", err, rep.Verdict)
	}
	if len(h.drv.DomainNames()) != 0 || rep.Phase(cellrun.PhaseBoot) != 0 {
		t.Error("booted for a bats file that is not there")
	}
}

// The cell's files reach the guest on one artifact disk, unpacked with one
// tar command; a guest that cannot read it gets them over SFTP, and the
// report says so; --upload sftp never builds a disk.
func TestArtifactDisk(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upload   cellrun.Upload
		noDisk   bool
		diskUsed bool
		note     string
	}{
		{"disk", "", false, true, ""},
		{"a guest that cannot read the disk", cellrun.UploadDisk, true, false, "files went in over sftp (the artifact disk could not be unpacked"},
		{"sftp asked for", cellrun.UploadSFTP, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.opts.Upload = tc.upload
			if tc.noDisk {
				h.Tweak = func(_ *criotest.Stack, srv *guesttest.Server) {
					srv.Reply(`^test -b /dev/disk/by-id/virtio-envctl-artifacts`, guesttest.Reply{Exit: 1})
				}
			}
			rep, err := cellrun.Run(context.Background(), cell("1.34.0"), h.opts)
			if err != nil || rep.Verdict != report.VerdictPass {
				t.Fatalf("verdict %s err %v", rep.Verdict, err)
			}
			built := slices.ContainsFunc(rep.Phases, func(p report.Phase) bool { return p.Name == "fetch.artifact-disk" })
			if built != (tc.upload != cellrun.UploadSFTP) {
				t.Errorf("artifact disk built: %v", built)
			}
			noted := strings.Join(rep.Notes, "\n")
			if tc.note != "" && !strings.Contains(noted, tc.note) || tc.note == "" && strings.Contains(noted, "files went in") {
				t.Errorf("notes %q", noted)
			}
			h.assertClean(t)
		})
	}
}

// passes runs a cell with the harness's options and requires a pass.
func passes(t *testing.T, h *harness) func(lock.LockedCell) *report.Report {
	return func(c lock.LockedCell) *report.Report {
		t.Helper()
		rep, err := cellrun.Run(context.Background(), c, h.opts)
		if err != nil || rep.Verdict != report.VerdictPass {
			t.Fatalf("verdict %s err %v start %q notes %v", rep.Verdict, err, rep.Start, rep.Notes)
		}
		return rep
	}
}

func has(r *report.Report, phase string) bool {
	return slices.ContainsFunc(r.Phases, func(p report.Phase) bool { return p.Name == phase })
}

// A cold run saves its verified guest; the next run with the same lock
// entry restores it (no install), a changed version boots cold, and a
// damaged save is dropped for a cold boot that still passes.
func TestWarmStarts(t *testing.T) {
	h := newHarness(t)
	h.opts.Warm = &warm.Store{Dir: t.TempDir()}
	run := passes(t, h)
	first := run(cell("1.34.0"))
	if !strings.HasPrefix(first.Start, "cold: no saved state") || !has(first, cellrun.PhaseSave) {
		t.Fatalf("first run: start %q phases %v notes %v", first.Start, phases(first), first.Notes)
	}
	second := run(cell("1.34.0"))
	if !strings.HasPrefix(second.Start, "warm: restored") || has(second, cellrun.PhaseSave) || has(second, "install.upload") {
		t.Errorf("second run: start %q phases %v; first notes %v", second.Start, phases(second), first.Notes)
	}
	// The restored guest's files and versions are proven by its seal and
	// the check it passed before it was saved, the cold one's by their
	// digests and version commands; both say the same versions.
	if first.VerifiedBy != "digests" || second.VerifiedBy != "seal+record" {
		t.Errorf("verified by %q, then %q; want digests, then seal+record", first.VerifiedBy, second.VerifiedBy)
	}
	for k, c := range second.Components {
		if k >= len(first.Components) || c.Actual != first.Components[k].Actual || c.Commit != first.Components[k].Commit || !c.Verified {
			t.Errorf("warm run's %s: %+v; the cold run found %+v", c.Name, c, first.Components)
		}
	}
	other := run(cell("1.36.0"))
	if !strings.HasPrefix(other.Start, "cold: no saved state") {
		t.Errorf("changed version: start %q", other.Start)
	}
	states, _ := h.opts.Warm.List()
	if len(states) != 2 {
		t.Fatalf("%d warm states", len(states))
	}
	for _, st := range states {
		if err := os.WriteFile(st.Save, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	damaged := run(cell("1.34.0"))
	if !strings.HasPrefix(damaged.Start, "cold: the saved state did not restore") || !has(damaged, "install.upload") {
		t.Errorf("damaged save: start %q phases %v", damaged.Start, phases(damaged))
	}
	h.opts.Cold = true
	if cold := run(cell("1.34.0")); cold.Start != "cold: --cold" {
		t.Errorf("--cold: start %q", cold.Start)
	}
	h.assertClean(t)
}

// Cells on one image and VM shape share a post-boot state: the first
// boots and saves it, the next (another lock entry) restores it, gets the
// artifact disk hot-plugged and installs; a damaged post-boot state is
// dropped for a boot that saves a new one; --cold uses none.
func TestSharedBoot(t *testing.T) {
	h := newHarness(t)
	h.opts.Warm = &warm.Store{Dir: t.TempDir()}
	h.opts.Boot = &warm.Store{Dir: t.TempDir()}
	run := passes(t, h)
	first := run(cell("1.34.0"))
	if !strings.Contains(first.Start, "saved a post-boot state") || !has(first, "boot.save") || !has(first, "boot.attach") {
		t.Fatalf("first run: start %q phases %v notes %v", first.Start, phases(first), first.Notes)
	}
	second := run(cell("1.36.0"))
	if !strings.HasPrefix(second.Start, "post-boot: ") || has(second, "boot.save") || !has(second, "boot.attach") || !has(second, "install.upload") || !has(second, cellrun.PhaseSave) {
		t.Errorf("second run: start %q phases %v notes %v", second.Start, phases(second), second.Notes)
	}
	if slices.ContainsFunc(second.Notes, func(n string) bool { return strings.Contains(n, "files went in") }) {
		t.Errorf("the hot-plugged artifact disk was not used: %v", second.Notes)
	}
	// Where each boot's time went: the seal's check before a restore,
	// the domain's start and the wait for SSH.
	for _, tc := range []struct {
		name string
		rep  *report.Report
		want []string
		not  []string
	}{
		{"a boot", first, []string{"boot.start", "boot.answer"}, []string{"boot.check"}},
		{"a restore", second, []string{"boot.check", "boot.start", "boot.answer"}, nil},
	} {
		for _, p := range tc.want {
			if !has(tc.rep, p) {
				t.Errorf("%s: no phase %s in %v", tc.name, p, phases(tc.rep))
			}
		}
		for _, p := range tc.not {
			if has(tc.rep, p) {
				t.Errorf("%s: phase %s in %v", tc.name, p, phases(tc.rep))
			}
		}
	}
	// A domain left running under the slot's name by a run that was
	// killed outright (restored domains are not AUTODESTROY) is removed
	// as gc would, and the restore goes ahead.
	boots0, _ := h.opts.Boot.List()
	h.drv.AddDomain(vm.DomainSpec{Name: boots0[0].Domain, Metadata: vm.OwnerOf(h.opts.VM.Store).Stamp(vm.Metadata{ID: "dead-run"}, h.opts.VM.URI)}, vm.DomainRunning)
	if r := run(cell("1.37.0")); !strings.HasPrefix(r.Start, "post-boot: ") || !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "taken by a run that died") }) {
		t.Errorf("orphan under the slot's name: start %q notes %v", r.Start, r.Notes)
	}
	// The warm state of a cell that started from a post-boot state
	// restores too (its disk is backed by the post-boot state's).
	if again := run(cell("1.36.0")); !strings.HasPrefix(again.Start, "warm: restored") {
		t.Errorf("warm start on a post-boot state: start %q notes %v", again.Start, again.Notes)
	}
	// A damaged warm state gives its domain name back: the run starts
	// from the post-boot state in that slot.
	states, _ := h.opts.Warm.List()
	for _, st := range states {
		if err := os.WriteFile(st.Save, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if damaged := run(cell("1.36.0")); !strings.HasPrefix(damaged.Start, "post-boot: the saved state did not restore") || !strings.Contains(damaged.Start, "slot 0") {
		t.Errorf("damaged warm state: start %q notes %v", damaged.Start, damaged.Notes)
	}
	boots, _ := h.opts.Boot.List()
	if len(boots) != 1 || boots[0].Domain != warm.SlotDomain(boots[0].Key, 0) {
		t.Fatalf("post-boot states %+v", boots)
	}
	if err := os.WriteFile(boots[0].Save, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := run(cell("1.37.0"))
	if !strings.Contains(third.Start, "saved a post-boot state") || !slices.ContainsFunc(third.Notes, func(n string) bool { return strings.Contains(n, "did not restore") }) {
		t.Errorf("damaged post-boot state: start %q notes %v", third.Start, third.Notes)
	}
	// A warm state whose post-boot state is gone is never used.
	if again := run(cell("1.36.0")); strings.HasPrefix(again.Start, "warm: ") {
		t.Errorf("a warm state on a removed post-boot state restored: %q", again.Start)
	}
	// A live domain of another state directory under the warm state's
	// name makes the restore fail; the run goes on without it and leaves
	// that domain alone.
	held, _ := h.opts.Warm.List()
	foreign := held[0].Domain
	other := vm.Owner{Host: vm.HostID(), StateDir: "/elsewhere"}
	h.drv.AddDomain(vm.DomainSpec{Name: foreign, Metadata: other.Stamp(vm.Metadata{ID: "someone-else"}, h.opts.VM.URI)}, vm.DomainRunning)
	if r := run(cell("1.37.0")); strings.HasPrefix(r.Start, "warm: ") {
		t.Errorf("restored under a name another run holds: %q", r.Start)
	}
	if !slices.Contains(h.drv.DomainNames(), foreign) {
		t.Fatal("a failed restore removed the domain that held the name")
	}
	if c, err := h.drv.Connect(context.Background(), h.opts.VM.URI); err == nil {
		_ = c.Remove(context.Background(), foreign)
	}
	h.opts.Cold = true
	if cold := run(cell("1.34.0")); cold.Start != "cold: --cold" || has(cold, "boot.attach") {
		t.Errorf("--cold: start %q", cold.Start)
	}
	h.assertClean(t)
}

// A lock whose image cannot be had and a build here with other packages
// takes its place: plain runs re-pin the image in the lock (the stack
// stays as it was) and say so; --locked refuses with the packages.
func TestObtainImageRepins(t *testing.T) {
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
	c.Image.Packages = map[string]string{"zlib1g": "1:1.2.13.dfsg-1"}
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
	if _, err := cellrun.Resolve(ctx, p, "amd64", cellrun.LockOnFirstUse, l.lock); err != nil {
		t.Fatal(err)
	}
	before, _ := lock.Read(p.LockPath())
	beforeBytes, _ := os.ReadFile(p.LockPath())
	rebuilt := c.Image
	rebuilt.Digest, rebuilt.Snapshot = "sha256:"+strings.Repeat("b", 64), "20261204T081651Z"
	rebuilt.Packages = map[string]string{"zlib1g": "1:1.2.13.dfsg-1+deb12u1"}
	moved := func(_ context.Context, want lock.Image) (images.Obtained, error) {
		return images.Obtained{Image: rebuilt, Name: rebuilt.Name, Digest: rebuilt.Digest, Snapshot: rebuilt.Snapshot, From: images.FromBuild, Detail: "built from Debian's mirrors",
			Repin: &images.Repin{Was: want.Digest, Moved: images.PackageChanges(want.Packages, rebuilt.Packages), Tried: []string{"it is not in the cache"}}}, nil
	}

	res, err := cellrun.Resolve(ctx, p, "amd64", cellrun.Locked, l.lock)
	if err != nil {
		t.Fatal(err)
	}
	err = res.ObtainImage(ctx, p, cellrun.Locked, moved)
	var me *images.MovedError
	if !errors.As(err, &me) || !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "zlib1g 1:1.2.13.dfsg-1 → 1:1.2.13.dfsg-1+deb12u1") ||
		!strings.Contains(err.Error(), "envctl image import") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("--locked: %v", err)
	}
	if after, _ := lock.Read(p.LockPath()); after.Image.Digest != before.Image.Digest {
		t.Fatal("--locked changed the lock")
	}

	res, err = cellrun.Resolve(ctx, p, "amd64", cellrun.LockOnFirstUse, l.lock)
	if err != nil {
		t.Fatal(err)
	}
	oldHash := res.Cells[0].Hash
	if err := res.ObtainImage(ctx, p, cellrun.LockOnFirstUse, moved); err != nil {
		t.Fatal(err)
	}
	after, _ := lock.Read(p.LockPath())
	if after.Image.Digest != rebuilt.Digest || after.Image.Snapshot != rebuilt.Snapshot || res.Cells[0].Image.Digest != rebuilt.Digest || res.Cells[0].Hash == oldHash {
		t.Errorf("re-pin: lock image %s, cell image %s", after.Image.Digest, res.Cells[0].Image.Digest)
	}
	if d := lock.Diff(before, after); len(d) == 0 || slices.ContainsFunc(d, func(x lock.Difference) bool { return x.Part != "image" }) {
		t.Errorf("the re-pin changed more than the image: %+v", d)
	}
	notice := strings.Join(res.RepinNotice(p.LockPath()), "\n")
	for _, want := range []string{"zlib1g 1:1.2.13.dfsg-1 → 1:1.2.13.dfsg-1+deb12u1", "the runtime stack is unchanged", "lock updated: review and commit it", rebuilt.Digest} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice lacks %q:\n%s", want, notice)
		}
	}
	// The lock now matches its profile: the next run takes it as it is.
	if _, err := cellrun.Resolve(ctx, p, "amd64", cellrun.Locked, l.lock); err != nil {
		t.Errorf("the re-pinned lock: %v", err)
	}

	// A built-in profile's lock is never edited: the re-pin goes to a
	// copy the user owns, and the notice says where.
	ld := profiles.Loader{Builtin: fstest.MapFS{"p.yaml": {Data: []byte(src)}, "p.lock": {Data: beforeBytes}},
		BuiltinDir: filepath.Join(dir, "builtin"), AdoptDir: filepath.Join(dir, "mine")}
	bp, err := ld.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	unpacked := bp.LockPath()
	if res, err = cellrun.Resolve(ctx, bp, "amd64", cellrun.LockOnFirstUse, l.lock); err != nil {
		t.Fatal(err)
	}
	res.Adopt = ld.Adopt
	if err := res.ObtainImage(ctx, bp, cellrun.LockOnFirstUse, moved); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(unpacked); !bytes.Equal(b, beforeBytes) {
		t.Error("the re-pin edited the binary's copy of the lock")
	}
	mine, _ := lock.Read(filepath.Join(dir, "mine", "p.lock"))
	if bp.Path != filepath.Join(dir, "mine", "p.yaml") || mine == nil || mine.Image.Digest != rebuilt.Digest {
		t.Errorf("the re-pin went to %s (%+v)", bp.Path, mine)
	}
	if notice := strings.Join(res.RepinNotice(bp.LockPath()), "\n"); !strings.Contains(notice, "copied there first ("+bp.Path+")") || !strings.Contains(notice, filepath.Join(dir, "mine", "p.lock")) {
		t.Errorf("notice does not say where:\n%s", notice)
	}
}

// A restored guest (not AUTODESTROY) gets a dead-man timer of the run's
// --timeout right after the restore; a booted one (AUTODESTROY) none; a
// guest restored from a post-boot state stops its timer before its warm
// state is saved (no saved guest carries one) and sets it again after.
func TestDeadmanTimer(t *testing.T) {
	h := newHarness(t)
	h.opts.Warm = &warm.Store{Dir: t.TempDir()}
	h.opts.Boot = &warm.Store{Dir: t.TempDir()}
	h.opts.Deadman = 3 * time.Minute
	var mu sync.Mutex
	var stacks []*criotest.Stack
	h.Tweak = func(s *criotest.Stack, _ *guesttest.Server) {
		mu.Lock()
		defer mu.Unlock()
		stacks = append(stacks, s)
	}
	run := passes(t, h)
	timers := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		var out [][]string
		for _, s := range stacks {
			out = append(out, s.Deadman)
		}
		stacks = nil
		return out
	}
	tests := []struct {
		name, crictl string
		start        string
		want         []string // the timer of the run's guest
	}{
		{"a cold boot: AUTODESTROY, no timer", "1.34.0", "cold: ", nil},
		{"from the post-boot state: set, stopped for the warm save, set again", "1.36.0", "post-boot: ", []string{"180s", "stopped", "180s"}},
		{"a warm start: set at once", "1.36.0", "warm: ", []string{"180s"}},
	}
	for _, tt := range tests {
		rep := run(cell(tt.crictl))
		if !strings.HasPrefix(rep.Start, tt.start) {
			t.Fatalf("%s: start %q", tt.name, rep.Start)
		}
		got := timers()
		if len(got) != 1 || !slices.Equal(got[0], tt.want) {
			t.Errorf("%s: dead-man timer %v, want %v", tt.name, got, tt.want)
		}
	}
	h.assertClean(t)
}

// --keep=on-failure keeps the VM of a failed run, says how to get in, and
// tears a passing run's VM down.
func TestKeepOnFailure(t *testing.T) {
	tests := []struct {
		name    string
		crictl  string
		verdict report.Verdict
		kept    bool
	}{
		{"a failed test keeps its VM", "1.30.0", report.VerdictFail, true},
		{"a pass tears it down", "1.34.0", report.VerdictPass, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.opts.KeepOnFailure = true
			root := t.TempDir()
			h.opts.Warm = &warm.Store{Dir: filepath.Join(root, "warm")}
			h.opts.Boot = &warm.Store{Dir: filepath.Join(root, "boot")}
			rep, err := cellrun.Run(context.Background(), cell(tt.crictl), h.opts)
			if err != nil || rep.Verdict != tt.verdict || rep.Kept != tt.kept {
				t.Fatalf("%v: verdict %s, kept %v", err, rep.Verdict, rep.Kept)
			}
			if !strings.Contains(rep.Start, "--keep or --keep=on-failure") {
				t.Errorf("start %q: a VM that may be kept must not be restored", rep.Start)
			}
			if !tt.kept {
				h.assertClean(t)
				return
			}
			if d := h.drv.DomainNames(); len(d) != 1 {
				t.Fatalf("kept domains %v", d)
			}
			if !slices.ContainsFunc(rep.Notes, func(n string) bool {
				return strings.Contains(n, "was kept (--keep=on-failure)") && strings.Contains(n, "envctl ssh "+rep.Env)
			}) {
				t.Errorf("the report does not say how to get in: %v", rep.Notes)
			}
			var table bytes.Buffer
			rep.Table(&table)
			if !strings.Contains(table.String(), "VM kept: `envctl ssh "+rep.Env+"`") {
				t.Errorf("the table does not say how to get in:\n%s", table.String())
			}
		})
	}
}

// The report says how busy the guest was while the test ran, as the
// hypervisor counts it; a hypervisor that cannot say costs only that.
func TestReportsTheGuestCPUOfTheTest(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail error
		want float64 // CPU seconds; 0: no test_cpu
	}{
		{"the hypervisor says", nil, 3},
		{"the hypervisor cannot say", errors.New("no CPU stats"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.drv.CPUStep = 3 * time.Second
			if tc.fail != nil {
				h.drv.Fail["CPUTime"] = tc.fail
			}
			c := cell("1.34.0")
			rep, err := cellrun.Run(context.Background(), c, h.opts)
			if err != nil || rep.Verdict != report.VerdictPass {
				t.Fatalf("verdict %s, err %v", rep.Verdict, err)
			}
			switch got := rep.TestCPU; {
			case tc.want == 0 && got != nil:
				t.Errorf("test_cpu %+v from a hypervisor that could not say", got)
			case tc.want != 0 && (got == nil || got.Seconds != tc.want || got.VCPUs != c.VM.CPUs || got.Wall <= 0 || got.Busy <= 0):
				t.Errorf("test_cpu %+v, want %.0f s of %d vCPUs", got, tc.want, c.VM.CPUs)
			}
			h.assertClean(t)
		})
	}
}
