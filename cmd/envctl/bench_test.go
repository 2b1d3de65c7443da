//go:build e2e

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const benchRuns = 5

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// localImage returns the cached files of the local debian-12 build.
func localImage(b *testing.B) (disk, kernel, initrd string) {
	out, err := exec.Command(bin(b), "image", "ls", "-o", "json").Output()
	if err != nil {
		b.Fatal(err)
	}
	var rows []struct{ Name, Kind, Digest string }
	json.Unmarshal(out, &rows)
	cache := os.Getenv("ENVCTL_CACHE_DIR")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = home + "/.cache/envctl"
	}
	reg, err := os.ReadFile(cache + "/images/local.json")
	if err != nil {
		b.Fatal(err)
	}
	var locals map[string]struct{ Disk, Kernel, Initrd string }
	json.Unmarshal(reg, &locals)
	l := locals["debian-12"]
	p := func(d string) string { return cache + "/blobs/" + strings.Replace(d, ":", "/", 1) }
	return p(l.Disk), p(l.Kernel), p(l.Initrd)
}

// BenchmarkBootToSSH compares envctl's boot-to-SSH with the hand-written
// baseline on the same image, median of 5 each, and records both in
// docs/benchmarks.md.
func BenchmarkBootToSSH(b *testing.B) {
	mustLockB(b, "crio-1.34-runc")
	disk, kernel, initrd := localImage(b)
	var ours, base []float64
	bootOnce := func() float64 {
		out, errOut, code := envctl(b, "up", "crio-1.34-runc", "--no-install", "-o", "json")
		if code != 0 {
			b.Fatalf("up: %d %s", code, errOut)
		}
		var r upReport
		_ = json.Unmarshal([]byte(out), &r)
		return phaseSeconds(r.Phases, "boot")
	}
	// One discarded boot warms the page cache for both sides; then the two
	// alternate, so host noise falls on both alike.
	bootOnce()
	for i := 0; i < benchRuns; i++ {
		ours = append(ours, bootOnce())
		out, err := exec.Command("bash", "../../scripts/bench/baseline-boot.sh", disk, kernel, initrd).Output()
		if err != nil {
			b.Fatalf("baseline: %v", err)
		}
		s, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		base = append(base, s)
	}
	mo, mb := median(ours), median(base)
	b.ReportMetric(mo, "envctl-s")
	b.ReportMetric(mb, "baseline-s")
	b.ReportMetric(mb/mo, "speedup")
	recordBench(b, "boot", fmt.Sprintf(`## Boot to SSH (median of %d, TCG, 2 vCPU, 2 GiB, same local debian-12 image, runs interleaved after one warm-up boot)

| | median | runs (s) |
|---|---|---|
| envctl (libvirt API, Go seed, pinned host key, envctl-seed fast path) | **%.1f s** | %s |
| baseline (virt-install + genisoimage + ssh retry loop, cloud-init) | %.1f s | %s |
| speedup | **%.2f×** | |
`, benchRuns, mo, list(ours), mb, list(base), mb/mo))
}

// BenchmarkUpPhases records the wall time of each phase of a full `up`.
func BenchmarkUpPhases(b *testing.B) {
	mustLockB(b, "crio-1.34-runc")
	out, errOut, code := envctl(b, "up", "crio-1.34-runc", "-o", "json")
	if code != 0 {
		b.Fatalf("up: %d %s", code, errOut)
	}
	var r struct {
		Seconds float64 `json:"seconds"`
		Phases  []phase `json:"phases"`
	}
	_ = json.Unmarshal([]byte(out), &r)
	var rows []string
	for _, p := range r.Phases {
		rows = append(rows, fmt.Sprintf("| %s | %.1f s |", p.Name, p.Seconds))
		b.ReportMetric(p.Seconds, strings.ReplaceAll(p.Name, ".", "-")+"-s")
	}
	recordBench(b, "phases", fmt.Sprintf(`## Phases of `+"`envctl up crio-1.34-runc`"+` (warm caches, TCG)

| phase | wall time |
|---|---|
%s
| **total** | **%.1f s** |
`, strings.Join(rows, "\n"), r.Seconds))
}

// BenchmarkUpstreamSuite runs both suites on crio-1.34-runc and records
// each suite's time under TCG: envctl's 17 steps, and CRI-O's own
// oci_volumes.bats (tools upload, image import with copyimg, five tests
// that each start a fresh crio).
func BenchmarkUpstreamSuite(b *testing.B) {
	mustLockB(b, "crio-1.34-runc")
	out, errOut, code := envctl(b, "up", "crio-1.34-runc", "--test", "both", "-o", "json")
	if code != 0 {
		b.Fatalf("up --test both: %d %s", code, errOut)
	}
	var r struct {
		Seconds float64 `json:"seconds"`
		Phases  []phase `json:"phases"`
		Steps   []struct {
			Name, Suite, Status string
			Seconds             float64
		} `json:"steps"`
	}
	_ = json.Unmarshal([]byte(out), &r)
	own, upstream := phaseSeconds(r.Phases, "test.envctl"), phaseSeconds(r.Phases, "test.upstream")
	b.ReportMetric(own, "envctl-s")
	b.ReportMetric(upstream, "upstream-s")
	var rows []string
	for _, s := range r.Steps {
		if s.Suite == "upstream" {
			rows = append(rows, fmt.Sprintf("| %s | %s | %.1f s |", s.Name, s.Status, s.Seconds))
		}
	}
	recordBench(b, "upstream", fmt.Sprintf(`## Both suites: `+"`envctl up crio-1.34-runc --test both`"+` (warm caches, TCG)

| suite | wall time |
|---|---|
| envctl's own (17 steps) | %.1f s |
| upstream's oci_volumes.bats (tools, copyimg image import, 5 tests) | %.1f s |
| whole run | %.1f s |

| upstream test | status | bats' own time |
|---|---|---|
%s
`, own, upstream, r.Seconds, strings.Join(rows, "\n")))
}

// BenchmarkWarmStart runs the same lock twice, cold then warm (a VM shape
// of its own, so the first run is cold), and records both with phases.
func BenchmarkWarmStart(b *testing.B) {
	dir := b.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	body := strings.Replace(string(src), "disk: 10GiB", "disk: 12GiB", 1)
	profile := filepath.Join(dir, "bench-warm.yaml")
	if err := os.WriteFile(profile, []byte(strings.Replace(body, "name: crio-1.34-runc", "name: bench-warm", 1)), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, errOut, code := envctl(b, "lock", profile); code != 0 {
		b.Fatalf("lock: %s", errOut)
	}
	type run struct {
		Seconds float64 `json:"seconds"`
		Start   string  `json:"start"`
		Phases  []phase `json:"phases"`
	}
	var runs []run
	var cpu []float64 // envctl's own CPU time (user + system) as a share of the run
	for range 2 {
		cmd := exec.Command(bin(b), "up", profile, "-o", "json")
		cmd.Dir = "../.."
		var outb, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &outb, &errb
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("up: %v %s", err, errb.String())
		}
		wall := time.Since(start)
		cpu = append(cpu, (cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()).Seconds()/wall.Seconds())
		var r run
		_ = json.Unmarshal([]byte(outb.String()), &r)
		runs = append(runs, r)
	}
	cold, warm := runs[0], runs[1]
	if !strings.HasPrefix(warm.Start, "warm") {
		b.Fatalf("second run was not warm: %s", warm.Start)
	}
	b.ReportMetric(cold.Seconds, "cold-s")
	b.ReportMetric(warm.Seconds, "warm-s")
	row := func(name string) string {
		return fmt.Sprintf("| %s | %.1f s | %.1f s |", name, phaseSeconds(cold.Phases, name), phaseSeconds(warm.Phases, name))
	}
	var rows []string
	for _, p := range []string{"fetch.artifact-disk", "boot", "install.upload", "install", "verify", "save", "test", "teardown"} {
		rows = append(rows, row(p))
	}
	recordBench(b, "warm", fmt.Sprintf(`## Cold and warm `+"`envctl up`"+` of the same lock (TCG, 2 vCPU, 2 GiB)

| phase | cold (saves a warm state) | warm (restores it) |
|---|---|---|
%s
| **total** | **%.1f s** | **%.1f s** |
| envctl's own CPU (user + system) | %.1f%% of the run | %.1f%% of the run |
`, strings.Join(rows, "\n"), cold.Seconds, warm.Seconds, 100*cpu[0], 100*cpu[1]))
}

// mustLockB checks that a shipped profile's committed lock is current (it
// is used as it is, never rewritten).
func mustLockB(b *testing.B, profile string) {
	if out, errOut, code := envctl(b, "plan", profile); code != 0 || strings.Contains(out, "writes it on first use") {
		b.Fatalf("the committed lock of %s is not current: %s%s", profile, out, errOut)
	}
}

func list(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.1f", x))
	}
	return strings.Join(s, ", ")
}

// recordBench replaces one section of docs/benchmarks.md.
func recordBench(b testing.TB, section, body string) {
	recordSection(b, "../../docs/benchmarks.md", section, body, "make bench")
}

// recordSection replaces one marked section of a document (or appends it).
func recordSection(t testing.TB, path, section, body, by string) {
	old, _ := os.ReadFile(path)
	begin, end := "<!-- bench:"+section+" -->", "<!-- /bench:"+section+" -->"
	block := begin + "\n" + body + "\n_Measured " + time.Now().UTC().Format("2006-01-02 15:04 UTC") + " by `" + by + "`._\n" + end
	s := string(old)
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + block + s[j+len(end):]
	} else {
		s += "\n" + block + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Error(err)
	}
}

// BenchmarkMatrix runs the same 4-cell matrix (crictl 1.30.0, 1.34.0,
// 1.36.0 and 1.37.0 on CRI-O 1.34.0): fully cold (--cold) at -j 1, then
// from a shared post-boot state (none saved before: the first cell boots
// and saves it) at -j 1 and -j 2, then warm at -j 2, and records the wall
// times against one fully cold cell.
func BenchmarkMatrix(b *testing.B) {
	dir := b.TempDir()
	profile := filepath.Join(dir, "bench-matrix.yaml")
	// A VM shape of its own: its saved guests are this benchmark's.
	body := strings.Replace(matrixBase, "disk: 10GiB", "disk: 13GiB", 1)
	_ = os.WriteFile(profile, []byte("name: bench-matrix\n"+body+"matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\", \"1.36.0\", \"1.37.0\"]\n"), 0o644)
	dropWarmStates(b, "bench-matrix")
	b.Cleanup(func() { dropWarmStates(b, "bench-matrix") })
	var rows []string
	oneCold := 0.0
	for _, run := range []struct {
		name, jobs string
		drop       bool
		flags      []string
	}{
		{"cold, nothing saved (`--cold`)", "1", true, []string{"--cold"}},
		{"shared post-boot state (the first cell boots and saves it)", "1", true, nil},
		{"shared post-boot state (the first cell boots and saves it)", "2", true, nil},
		{"warm (each cell restores its saved guest)", "2", false, nil},
	} {
		if run.drop {
			dropWarmStates(b, "bench-matrix")
		}
		out, errOut, code := envctl(b, append([]string{"matrix", profile, "-j", run.jobs, "-o", "json"}, run.flags...)...)
		if code != 1 {
			b.Fatalf("matrix -j %s: exit %d %s", run.jobs, code, errOut)
		}
		var m matrixOut
		_ = json.Unmarshal([]byte(out), &m)
		sum := 0.0
		for _, r := range m.Reports {
			sum += r.Seconds
		}
		if oneCold == 0 && len(m.Reports) > 0 {
			oneCold = sum / float64(len(m.Reports))
		}
		ratio := 0.0
		if oneCold > 0 {
			ratio = m.Seconds / oneCold
		}
		rows = append(rows, fmt.Sprintf("| %s | -j %s | %.0f s | %.0f s | %.1f× |", run.name, run.jobs, m.Seconds, sum, ratio))
		b.ReportMetric(m.Seconds, "j"+run.jobs+"-wall-s")
	}
	recordBench(b, "matrix", fmt.Sprintf(`## 4-cell matrix (crictl 1.30.0, 1.34.0, 1.36.0 and 1.37.0 on CRI-O 1.34.0, TCG, 2 vCPU each, on 2 host cores)

One fully cold cell takes %.0f s on average here (the first run, -j 1).

| run | jobs | wall time | sum of the cells' times | wall / one cold cell |
|---|---|---|---|---|
%s

On this 2-core machine two TCG guests of 2 vCPUs each share the two
cores, so each cell runs about twice as slowly and -j 2 buys little; the
default -j (from free CPUs and memory per cell) is 1 here. With a shared
post-boot state only the first cell boots; the others restore the guest
as it was when SSH first answered, get their artifact disk hot-plugged
and install. The warm run restores each cell's own saved guest, installed
and verified, instead.
`, oneCold, strings.Join(rows, "\n")))
}

// BenchmarkBisect bisects cri-tools 1.37.0 (good) to 1.30.0 (bad) with a
// fresh verdict ledger, so every probe really runs.
func BenchmarkBisect(b *testing.B) {
	dir := b.TempDir()
	profile := filepath.Join(dir, "bench-bisect.yaml")
	_ = os.WriteFile(profile, []byte("name: bench-bisect\n"+matrixBase), 0o644)
	cmd := exec.Command(bin(b), "bisect", profile, "--axis", "cri-tools", "--good", "1.37.0", "--bad", "1.30.0", "-o", "json")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "ENVCTL_STATE_DIR="+filepath.Join(dir, "state"))
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("bisect: %v", err)
	}
	var res struct {
		FirstBad string   `json:"first_bad"`
		LastGood string   `json:"last_good"`
		Path     []string `json:"path"`
		Probes   []struct {
			Spec    string  `json:"spec"`
			Outcome string  `json:"outcome"`
			Seconds float64 `json:"seconds"`
		} `json:"probes"`
	}
	_ = json.Unmarshal(out, &res)
	var rows []string
	for _, p := range res.Probes {
		rows = append(rows, fmt.Sprintf("| %s | %s | %.0f s |", p.Spec, p.Outcome, p.Seconds))
	}
	b.ReportMetric(wall.Seconds(), "wall-s")
	recordBench(b, "bisect", fmt.Sprintf(`## Bisect: cri-tools 1.37.0 (good) → 1.30.0 (bad), every probe a real run

Path of %d specs (the versions the module proxy serves); %d probes, both
ends included; wall time **%.0f s**. Answer: first bad %s, last good %s.

| probe | outcome | time |
|---|---|---|
%s
`, len(res.Path), len(res.Probes), wall.Seconds(), res.FirstBad, res.LastGood, strings.Join(rows, "\n")))
}
