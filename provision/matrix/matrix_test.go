package matrix_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/cellrun/cellruntest"
	"github.com/envctl/envctl/provision/crio/criotest"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/matrix"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/vm"
)

func cells(names ...string) []lock.LockedCell {
	var out []lock.LockedCell
	for _, n := range names {
		crictl := profiles.ParseCellName(n)[profiles.RoleCRITools]
		out = append(out, cellruntest.Cell(n, crictl))
	}
	return out
}

// concurrency counts how many guests run at once.
type concurrency struct {
	mu       sync.Mutex
	now, max int
}

// Each guest pulls its workload image once, before the test's cases (which
// run side by side within a guest).
func (c *concurrency) tweak(s *criotest.Stack, srv *guesttest.Server) {
	srv.Handle(`^crictl pull '[^']*workload`, func(cmd string, _ []string) guesttest.Reply {
		c.mu.Lock()
		c.now++
		c.max = max(c.max, c.now)
		c.mu.Unlock()
		// Wait here for another guest (up to a second): guests that run
		// at once meet here, however their boots were staggered; guests
		// that do not never do.
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			c.mu.Lock()
			met := c.now > 1
			c.mu.Unlock()
			if met {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
		return guesttest.Reply{Stdout: "ok\n"}
	})
}

func TestJobsBound(t *testing.T) {
	tests := []struct {
		name string
		jobs int
		cap  vm.Capacity
		want int
	}{
		{"-j 1", 1, vm.Capacity{CPUs: 16, Available: 64 << 30}, 1},
		{"-j 2", 2, vm.Capacity{CPUs: 16, Available: 64 << 30}, 2},
		{"-j 2 beyond what the host seems to hold", 2, vm.Capacity{CPUs: 2, Available: 64 << 30}, 2},
		{"from capacity: 4 CPUs hold two 2-vCPU cells", 0, vm.Capacity{CPUs: 4, Available: 64 << 30}, 2},
		{"from capacity: memory for one", 0, vm.Capacity{CPUs: 16, Available: 3 << 30}, 1},
		{"from capacity under KVM: 2 CPUs hold two 2-vCPU cells", 0, vm.Capacity{CPUs: 2, Available: 64 << 30, Type: vm.DomainKVM}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := cellruntest.New(t)
			h.Driver.Cap = tt.cap
			if tt.cap.Type != "" {
				h.Driver.Type = tt.cap.Type // what DomainType answers
			}
			var c concurrency
			h.Tweak = c.tweak
			res := matrix.Run(context.Background(), cells("cri-tools=1.34.0", "cri-tools=1.36.0", "cri-tools=1.37.0", "cri-tools=1.35.0"), matrix.Options{Run: h.Opts, Jobs: tt.jobs})
			if res.Jobs != tt.want || c.max > tt.want || len(res.Reports) != 4 {
				t.Errorf("jobs %d, at most %d at once, %d reports; want %d", res.Jobs, c.max, len(res.Reports), tt.want)
			}
			if tt.want > 1 && c.max < 2 {
				t.Errorf("cells never ran in parallel")
			}
			h.AssertClean(t)
		})
	}
}

// TestSharedArtifactsFetchOnce: the cells share CRI-O and runc; each
// distinct artifact is fetched (built) once up front.
func TestSharedArtifactsFetchOnce(t *testing.T) {
	h := cellruntest.New(t)
	res := matrix.Run(context.Background(), cells("cri-tools=1.34.0", "cri-tools=1.36.0"), matrix.Options{Run: h.Opts, Jobs: 2})
	if res.Prefetched != 6 { // cri-o, runc, conmon, cni, and two crictls
		t.Errorf("prefetched %d distinct artifacts", res.Prefetched)
	}
	crio := cellruntest.Cell("", "1.34.0").Components[0].Key()
	// Once up front, then each cell's own fetch phase finds it cached.
	if n := h.Fetch.Calls[crio]; n != 3 {
		t.Errorf("CRI-O fetched %d times, want 1 up front + 1 cache hit per cell", n)
	}
}

// TestSpreadOverHosts: cells go to the host with the most free slots; a
// host that cannot be reached takes none, and the others go on.
func TestSpreadOverHosts(t *testing.T) {
	h := cellruntest.New(t)
	h.Driver.Cap = vm.Capacity{CPUs: 2, Available: 8 << 30} // one slot a host
	base := h.Opts.VM.Connect
	dead := map[string]bool{"fake://dead/system": true}
	h.Opts.VM.Connect = func(ctx context.Context, uri string) (vm.Driver, error) {
		if dead[uri] {
			return nil, fault.Infraf("cannot reach libvirt at %s", uri)
		}
		return base(ctx, uri)
	}
	res := matrix.Run(context.Background(), cells("cri-tools=1.34.0", "cri-tools=1.36.0", "cri-tools=1.37.0"),
		matrix.Options{Run: h.Opts, Hosts: []string{"fake://a/system", "fake://dead/system", "fake://b/system"}})
	if res.Jobs != 2 || len(res.Reports) != 3 {
		t.Fatalf("jobs %d reports %d", res.Jobs, len(res.Reports))
	}
	if res.Reports[0].Host != "fake://a/system" || res.Reports[1].Host != "fake://b/system" {
		t.Errorf("hosts %s %s", res.Reports[0].Host, res.Reports[1].Host)
	}
	for _, r := range res.Reports {
		if r.Verdict != report.VerdictPass {
			t.Errorf("%s on %s: %s %s", r.Cell, r.Host, r.Verdict, r.Error)
		}
	}
	if res.Hosts[1].Failed == "" || res.Hosts[1].Cells != 0 || res.Hosts[0].Cells+res.Hosts[2].Cells != 3 {
		t.Errorf("host use %+v", res.Hosts)
	}
	// With every host gone, the cells could not be tested.
	dead["fake://a/system"] = true
	res = matrix.Run(context.Background(), cells("cri-tools=1.34.0"), matrix.Options{Run: h.Opts, Hosts: []string{"fake://a/system"}})
	if len(res.Reports) != 1 || res.Reports[0].Verdict != report.VerdictError || res.Reports[0].ErrorClass != fault.Infra {
		t.Errorf("no host: %+v", res.Reports)
	}
}

// TestFailFastKeepsFinishedReports: after the first failure no new cell
// starts, and the finished ones are all reported.
func TestFailFastKeepsFinishedReports(t *testing.T) {
	h := cellruntest.New(t)
	res := matrix.Run(context.Background(), cells("cri-tools=1.34.0", "cri-tools=1.30.0", "cri-tools=1.36.0"), matrix.Options{Run: h.Opts, Jobs: 1, FailFast: true})
	if len(res.Reports) != 2 || len(res.NotRun) != 1 || res.NotRun[0] != "cri-tools=1.36.0" {
		t.Fatalf("reports %d, not run %v", len(res.Reports), res.NotRun)
	}
	if res.Reports[0].Verdict != report.VerdictPass || res.Reports[1].Verdict != report.VerdictFail {
		t.Errorf("verdicts %s %s", res.Reports[0].Verdict, res.Reports[1].Verdict)
	}
	var buf bytes.Buffer
	matrix.WriteSummary(&buf, res)
	if !strings.Contains(buf.String(), "not run") || !strings.Contains(buf.String(), "PASS") {
		t.Errorf("summary:\n%s", buf.String())
	}
	h.AssertClean(t)
}

func TestGrid(t *testing.T) {
	rep := func(cell string, v report.Verdict, diag string) *report.Report {
		r := &report.Report{Cell: cell, Verdict: v}
		if diag != "" {
			r.Error = diag
		}
		return r
	}
	reps := []*report.Report{
		rep("cri-tools=1.30.0,runtime=runc@1.3.6", report.VerdictFail, "crictl v1.30.0 does not send CRI Mount.image"),
		rep("cri-tools=1.34.0,runtime=runc@1.3.6", report.VerdictPass, ""),
		rep("cri-tools=1.30.0,runtime=crun@1.8.1", report.VerdictFail, "crictl v1.30.0 does not send CRI Mount.image"),
		rep("cri-tools=1.34.0,runtime=crun@1.8.1", report.VerdictError, "drift: crun"),
	}
	grids := matrix.Grids(reps)
	if len(grids) != 1 {
		t.Fatalf("%d grids", len(grids))
	}
	g := grids[0]
	if g.Rows != profiles.RoleCRITools || g.Cols != profiles.RoleRuntime || g.Cells["1.30.0|runc@1.3.6"] != "FAIL [1]" || g.Cells["1.30.0|crun@1.8.1"] != "FAIL [1]" || g.Cells["1.34.0|crun@1.8.1"] != "ERROR [2]" || g.Cells["1.34.0|runc@1.3.6"] != "PASS" {
		t.Errorf("grid %+v", g.Cells)
	}
	var txt, md bytes.Buffer
	matrix.WriteGrids(&txt, grids)
	matrix.WriteGridsMarkdown(&md, "p", grids, matrix.Result{Reports: reps})
	for _, want := range []string{"cri-tools \\ runtime", "FAIL [1]", "[2] drift: crun"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text grid lacks %q:\n%s", want, txt.String())
		}
	}
	if !strings.Contains(md.String(), "| 1.30.0 | FAIL [1] | FAIL [1] |") || !strings.Contains(md.String(), "- [1] crictl v1.30.0") {
		t.Errorf("markdown grid:\n%s", md.String())
	}
	if matrix.Grids(reps[:1][:1]) != nil && len(profiles.ParseCellName("cri-tools=1.30.0")) < 2 {
		t.Log("one axis: no grid")
	}
	if got := matrix.Grids([]*report.Report{rep("cri-tools=1.30.0", report.VerdictPass, "")}); got != nil {
		t.Errorf("a one-axis matrix has a grid: %+v", got)
	}
	three := matrix.Grids([]*report.Report{rep("cri-o=1.34.0,cri-tools=1.30.0,runtime=runc@1.3.6", report.VerdictPass, ""), rep("cri-o=1.33.0,cri-tools=1.30.0,runtime=runc@1.3.6", report.VerdictPass, "")})
	if len(three) != 1 || three[0].Title != "runtime=runc@1.3.6" {
		t.Errorf("three axes: %+v", three)
	}
}

func TestGitHubMatrix(t *testing.T) {
	p := &profiles.Profile{Name: "p", Components: map[profiles.Role]profiles.ComponentSpec{profiles.RoleCRITools: {Version: "1.34.0"}},
		Matrix: &profiles.Matrix{Axes: map[profiles.Role][]profiles.AxisValue{profiles.RoleCRITools: {{Label: "1.30.0", Spec: profiles.ComponentSpec{Version: "1.30.0"}}, {Label: "1.34.0", Spec: profiles.ComponentSpec{Version: "1.34.0"}}}}}}
	b, err := matrix.GitHubMatrix(p.Cells())
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Include []map[string]string `json:"include"`
	}
	if err := json.Unmarshal(b, &m); err != nil || len(m.Include) != 2 || m.Include[0]["cell"] != "cri-tools=1.30.0" || m.Include[1]["cri-tools"] != "1.34.0" {
		t.Errorf("matrix %s", b)
	}
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	pr := matrix.NewProgress(&buf, []string{"a", "b"}, false)
	pr.Event(cellrun.Event{Cell: "a", Phase: "boot"})
	pr.Event(cellrun.Event{Cell: "a", Phase: "boot", Done: true})
	pr.Finish(&report.Report{Cell: "a", Verdict: report.VerdictPass})
	pr.Wait()
	if !strings.Contains(buf.String(), "[a] boot") || !strings.Contains(buf.String(), "PASS a") {
		t.Errorf("progress:\n%s", buf.String())
	}
	var live bytes.Buffer
	pr = matrix.NewProgress(&live, []string{"a", "b"}, true)
	pr.Event(cellrun.Event{Cell: "a", Phase: "boot"})
	pr.Finish(&report.Report{Cell: "a", Verdict: report.VerdictFail})
	pr.Wait()
	if !strings.Contains(live.String(), "FAIL") || !strings.Contains(live.String(), "not run") {
		t.Errorf("live progress:\n%s", live.String())
	}
}
