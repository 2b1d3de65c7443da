//go:build e2e

// End-to-end tests: the real envctl binary ($ENVCTL_BIN) against a real
// libvirt daemon, real VMs (TCG here), real CRI-O, crictl and runc/crun
// built at the pinned versions, and the real test steps. `make e2e` builds
// the binary, prepares the host and the image, then runs these.
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func bin(t testing.TB) string {
	b := os.Getenv("ENVCTL_BIN")
	if b == "" {
		t.Skip("ENVCTL_BIN is not set; run `make e2e`")
	}
	return b
}

// envctl runs the binary from the repository root and returns stdout, stderr and the exit code.
func envctl(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin(t), args...)
	cmd.Dir = "../.."
	return runLogged(t, cmd, "", args)
}

// runLogged runs an envctl command and logs its exit status and time,
// prefixed with where it ran (a state directory) when that is given.
func runLogged(t testing.TB, cmd *exec.Cmd, where string, args []string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("envctl %v: %v", args, err)
	}
	if where != "" {
		where = "[" + where + "] "
	}
	t.Logf("%senvctl %s → exit %d in %s", where, strings.Join(args, " "), code, time.Since(start).Round(time.Second))
	return out.String(), errb.String(), code
}

// mustLock locks a profile the test made. A shipped profile's lock is
// committed and must be used as it is: it is only checked to be current.
func mustLock(t *testing.T, profile string) {
	t.Helper()
	if !strings.ContainsRune(profile, os.PathSeparator) {
		if out, errOut, code := envctl(t, "plan", profile); code != 0 || strings.Contains(out, "writes it on first use") || !strings.Contains(out, "(image ") {
			t.Fatalf("the committed lock of %s is not current (exit %d):\n%s%s", profile, code, out, errOut)
		}
		return
	}
	if out, errOut, code := envctl(t, "lock", profile); code != 0 {
		t.Fatalf("lock %s: exit %d\n%s%s", profile, code, out, errOut)
	}
}

// assertClean checks that no envctl domain, volume or environment record
// is left, apart from what was on the host before the suite started. virsh
// is the test's independent witness; the product never runs it.
func assertClean(t *testing.T) {
	t.Helper()
	for _, l := range witness() {
		if !preexisting[l] {
			t.Errorf("left behind: %s", l)
		}
	}
	state, _ := exec.Command(bin(t), "status", "-o", "json").Output()
	if s := strings.TrimSpace(string(state)); s != "null" && s != "[]" {
		t.Errorf("environments left: %s", s)
	}
}

type upReport struct {
	Cell       string  `json:"cell"`
	Host       string  `json:"host"`
	Seconds    float64 `json:"seconds"`
	Verdict    string  `json:"verdict"`
	Error      string  `json:"error"`
	Components []struct {
		Name, Locked, Actual, Commit string
		Verified                     bool
		CRIAPI                       string `json:"cri_api"`
	} `json:"components"`
	Steps []struct {
		Name, Status, Message, Output, Suite string
	} `json:"steps"`
	Suites []struct {
		Suite, Verdict          string
		Passed, Failed, Skipped int
		Skips                   []string
	} `json:"suites"`
	Disagreement string                        `json:"disagreement"`
	Summary      string                        `json:"summary"`
	Notes        []string                      `json:"notes"`
	Start        string                        `json:"start"`
	VerifiedBy   string                        `json:"verified_by"`
	Diagnosis    []struct{ Cause, Fix string } `json:"diagnosis"`
	Warnings     []struct{ Cause string }      `json:"warnings"`
	Phases       []phase                       `json:"phases"`
	Results      string                        `json:"results_dir"`
	Image        *struct {
		Name, Digest, From, Detail string
		Repin                      *struct {
			Was   string
			Moved []string
		} `json:"repinned"`
	} `json:"image"`
	Env     string  `json:"env"`
	TestCPU *cpuUse `json:"test_cpu"`
}

// cpuUse is a report's test_cpu: the guest's CPU time over the test.
type cpuUse struct {
	Seconds, Wall, Busy float64
	VCPUs               int
}

type phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

func phaseSeconds(ps []phase, name string) float64 {
	for _, p := range ps {
		if p.Name == name {
			return p.Seconds
		}
	}
	return 0
}

func parseReport(t *testing.T, out string) upReport {
	t.Helper()
	var r upReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("up -o json printed no report: %v\n%s", err, out)
	}
	return r
}

// TestE2EBootSSHDown: a VM boots, answers SSH with the pinned key, shows in
// status, and `down` removes everything.
func TestE2EBootSSHDown(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	out, errOut, code := envctl(t, "up", "crio-1.34-runc", "--no-install", "--keep", "-o", "json")
	if code != 0 {
		t.Fatalf("up --no-install --keep: exit %d\n%s\n%s", code, out, errOut)
	}
	var r upReport
	_ = json.Unmarshal([]byte(out), &r)
	t.Logf("boot to SSH: %.1fs", phaseSeconds(r.Phases, "boot"))
	status, _, _ := envctl(t, "status")
	if !strings.Contains(status, r.Env) || !strings.Contains(status, "kept") {
		t.Errorf("status does not show %s:\n%s", r.Env, status)
	}
	uname, errOut, code := envctl(t, "ssh", r.Env, "--", "uname", "-a")
	if code != 0 || !strings.Contains(uname, "Linux") {
		t.Errorf("ssh uname: exit %d %q %s", code, uname, errOut)
	}
	// The remote command's exit status is envctl's, and several
	// arguments are quoted one by one.
	if _, errOut, code := envctl(t, "ssh", r.Env, "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("`ssh ENV -- sh -c 'exit 7'` gave exit %d, want 7 (%s)", code, errOut)
	}
	if out, _, code := envctl(t, "ssh", r.Env, "--", "echo", "a b", "it's"); code != 0 || strings.TrimSpace(out) != "a b it's" {
		t.Errorf("quoted arguments: exit %d %q", code, out)
	}
	if _, errOut, code := envctl(t, "down", r.Env); code != 0 {
		t.Errorf("down: exit %d %s", code, errOut)
	}
	assertClean(t)
}

// TestE2EKillThenGC: SIGKILL mid-boot leaves a domain behind; gc removes it.
func TestE2EKillThenGC(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	cmd := exec.Command(bin(t), "up", "crio-1.34-runc", "--no-install")
	cmd.Dir = "../.."
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--name").Output()
		if strings.Contains(string(out), "envctl-") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--name").Output()
	if !strings.Contains(string(out), "envctl-") {
		t.Fatalf("no domain was left running after SIGKILL (the test needs one): %s", out)
	}
	gcOut, errOut, code := envctl(t, "gc")
	if code != 0 || !strings.Contains(gcOut, "removed domain") {
		t.Errorf("gc: exit %d\n%s%s", code, gcOut, errOut)
	}
	assertClean(t)
}

// TestE2EInterruptTearsDown: Ctrl-C (SIGINT) during boot tears everything down.
func TestE2EInterruptTearsDown(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	// The signal comes once the domain is being booted, not after a fixed
	// time: under KVM a --no-install run may be over in a few seconds.
	r := newRunner(t)
	s := r.start("==> booting ", "up", "crio-1.34-runc", "--no-install")
	time.Sleep(time.Second) // into the boot
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	sent := time.Now()
	code := s.wait(t, time.Minute)
	if d := time.Since(sent); d > 15*time.Second {
		t.Errorf("up took %s to stop after SIGINT", d.Round(time.Second))
	}
	if code != 3 {
		t.Errorf("interrupted up: exit %d, want 3\n%s", code, s.stderr)
	}
	assertClean(t)
	r.noEnvsLeft(t)
}

// TestE2EBootTimeout: a VM that does not answer in time fails with exit 3,
// the console's last lines and the full log's path.
func TestE2EBootTimeout(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	// Under TCG a boot to SSH takes 15 s or more; under KVM a few seconds.
	timeout := "4s"
	if hostHasKVM() {
		timeout = "1s"
	}
	_, errOut, code := envctl(t, "up", "crio-1.34-runc", "--no-install", "--boot-timeout", timeout)
	if code != 3 || !strings.Contains(errOut, "SSH did not answer") || !strings.Contains(errOut, "full log:") {
		t.Errorf("boot timeout: exit %d\n%s", code, errOut)
	}
	assertClean(t)
}

// hostHasKVM reports whether the system daemon offers KVM domains on a
// host with a /dev/kvm (envctl's own check, `--accel auto`, also looks
// at the CPU's flags; this only decides how short a timeout must be).
func hostHasKVM() bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	return exec.Command("virsh", "-c", "qemu:///system", "domcapabilities", "--virttype", "kvm").Run() == nil
}

// TestE2ELifecyclePasses: CRI-O 1.34 + crictl 1.34 + runc 1.3.6 (gomod)
// pass every step; JSON and JUnit are written.
//
// It runs as after `go install`: in a directory without profiles and with
// an empty config directory, so the profile and its lock are the ones
// built into the binary (the same files as ./profiles, so the same warm
// state).
func TestE2ELifecyclePasses(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	junit := filepath.Join(t.TempDir(), "junit.xml")
	inEmptyDir := installedElsewhere(t)
	if out, _, code := inEmptyDir("profiles"); code != 0 || !regexp.MustCompile(`crio-1\.34-runc\s+built-in`).MatchString(out) {
		t.Errorf("profiles in an empty directory: exit %d\n%s", code, out)
	}
	out, errOut, code := inEmptyDir("up", "crio-1.34-runc", "-o", "json", "--junit", junit)
	t.Logf("stderr:\n%s", errOut)
	r := parseReport(t, out)
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("up: exit %d verdict %q error %q\n%s", code, r.Verdict, r.Error, out)
	}
	if len(r.Steps) < 12 {
		t.Errorf("only %d steps", len(r.Steps))
	}
	for _, s := range r.Steps {
		if s.Status != "pass" {
			t.Errorf("step %s: %s %s", s.Name, s.Status, s.Message)
		}
	}
	for _, c := range r.Components {
		if !c.Verified || c.Actual != c.Locked {
			t.Errorf("component %s: locked %s, installed %s", c.Name, c.Locked, c.Actual)
		}
	}
	// The drift check read each Go build's commit from the binary itself,
	// `crio --version` included: the module proxy's for cri-o, the
	// catalog's release commit for cri-tools and runc (their proxy
	// records none).
	for _, want := range []struct{ name, commit string }{{"cri-o", "5dd0877c91adb0d2b253f8009d12bb6531ca0104"}, {"cri-tools", "ca0237b9fec5"}, {"runc", "491b69bab9fa206b984fb26ba07d3110d62e671f"}} {
		for _, c := range r.Components {
			if c.Name == want.name && c.Commit != want.commit {
				t.Errorf("%s reports commit %q in the guest, want %q", c.Name, c.Commit, want.commit)
			}
		}
	}
	var doc struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	b, err := os.ReadFile(junit)
	if err != nil || xml.Unmarshal(b, &doc) != nil || doc.Suites[0].Tests != len(r.Steps) || doc.Suites[0].Failures != 0 {
		t.Errorf("JUnit report: %v %+v", err, doc)
	}
	// The files came in on the artifact disk (no SFTP fallback), and the
	// drift check above compared every installed file with its digest.
	diskBuilt := false
	for _, p := range r.Phases {
		diskBuilt = diskBuilt || p.Name == "fetch.artifact-disk"
	}
	if !diskBuilt || strings.Contains(strings.Join(r.Notes, " "), "files went in over") {
		t.Errorf("artifact disk not used: phases %+v notes %v", r.Phases, r.Notes)
	}
	t.Logf("upload phase: %.1fs (artifact disk)", phaseSeconds(r.Phases, "install.upload"))
	writePhases(t, "crio-1.34-runc", r.Phases)
	assertClean(t)
}

// TestE2ESeedCaseFails: CRI-O 1.34 with crictl 1.30 fails with
// "mount.HostPath is empty", and envctl says why, before and after.
func TestE2ESeedCaseFails(t *testing.T) {
	mustLock(t, "seed-crictl-1.30")
	plan, _, code := envctl(t, "plan", "seed-crictl-1.30")
	if code != 0 || !strings.Contains(plan, "crictl v1.30.0 does not send CRI Mount.image") {
		t.Errorf("plan does not predict the failure (exit %d):\n%s", code, plan)
	}
	// Once crictl 1.30 is built, plan also reads its cri-api from the binary.
	if _, errOut, code := envctl(t, "fetch", "seed-crictl-1.30"); code != 0 {
		t.Fatalf("fetch: exit %d %s", code, errOut)
	}
	plan, _, _ = envctl(t, "plan", "seed-crictl-1.30")
	if !strings.Contains(plan, "was built with cri-api ≈ v0.30") {
		t.Errorf("plan does not predict from the binary's build info:\n%s", plan)
	}
	out, errOut, code := envctl(t, "up", "seed-crictl-1.30", "-o", "json")
	r := parseReport(t, out)
	if code != 1 || r.Verdict != "fail" {
		t.Fatalf("up: exit %d verdict %q, want 1 and fail\n%s\n%s", code, r.Verdict, out, errOut)
	}
	joined := out
	if !strings.Contains(joined, "mount.HostPath is empty") {
		t.Errorf("the raw error is missing:\n%s", out)
	}
	found := false
	for _, d := range r.Diagnosis {
		if strings.Contains(d.Cause, "crictl v1.30.0 does not send CRI Mount.image (image volumes need cri-tools ≥ 1.31)") && strings.Contains(d.Fix, "upgrade cri-tools or pin a matching pair") {
			found = true
		}
	}
	if !found {
		t.Errorf("diagnosis missing: %+v", r.Diagnosis)
	}
	if !strings.Contains(errOut, "predicted failure") {
		t.Errorf("up did not warn before booting:\n%s", errOut)
	}
	if r.Results == "" {
		t.Error("no results directory")
	} else {
		for _, f := range []string{"crio-journal.log", "console.log", "container.json"} {
			if _, err := os.Stat(filepath.Join(r.Results, f)); err != nil {
				t.Errorf("results lack %s", f)
			}
		}
	}
	// Once more for a person, keeping the failing guest to look into.
	table, errOut, code := envctl(t, "up", "seed-crictl-1.30", "--keep=on-failure")
	if code != 1 || !strings.Contains(table, "DIAGNOSIS: crictl v1.30.0 does not send CRI Mount.image") || !strings.Contains(table, "FAIL seed-crictl-1.30") {
		t.Errorf("human output (exit %d):\n%s", code, table)
	}
	m := regexp.MustCompile(`==> kept (\S+): `).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("--keep=on-failure kept no VM:\n%s\n%s", table, errOut)
	}
	t.Cleanup(func() { envctl(t, "down", m[1]) }) // also when a check below fails
	if !strings.Contains(table, "VM kept: `envctl ssh "+m[1]+"`") {
		t.Errorf("the report does not say how to get into the kept VM:\n%s", table)
	}
	lookIntoKeptGuest(t, m[1])
	if _, errOut, code := envctl(t, "down", m[1]); code != 0 {
		t.Errorf("down: exit %d %s", code, errOut)
	}
	assertClean(t)
}

// lastN is the last n lines of s.
func lastN(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// installedElsewhere installs envctl as a user does (go install into a
// GOBIN of its own) and returns a runner for it in an empty directory
// with a fresh HOME: no ./profiles, no config directory, so profiles and
// locks are the binary's own. The cache and state directories stay the
// suite's, as a CI cache restore gives them (a cold cache would build for
// a quarter of an hour).
func installedElsewhere(t *testing.T) func(args ...string) (string, string, int) {
	t.Helper()
	gobin := t.TempDir()
	install := exec.Command("go", "install", "./cmd/envctl")
	install.Dir = "../.."
	install.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install ./cmd/envctl: %v\n%s", err, out)
	}
	cacheDir, stateDir := os.Getenv("ENVCTL_CACHE_DIR"), os.Getenv("ENVCTL_STATE_DIR")
	if cacheDir == "" {
		c, _ := os.UserCacheDir()
		cacheDir = filepath.Join(c, "envctl")
	}
	if stateDir == "" {
		h, _ := os.UserHomeDir()
		stateDir = cmp.Or(os.Getenv("XDG_STATE_HOME"), filepath.Join(h, ".local", "state"))
		stateDir = filepath.Join(stateDir, "envctl")
	}
	home, work := t.TempDir(), t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "XDG_") && k != "HOME" && !strings.HasPrefix(k, "ENVCTL_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home, "ENVCTL_CACHE_DIR="+cacheDir, "ENVCTL_STATE_DIR="+stateDir)
	return func(args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(gobin, "envctl"), args...)
		cmd.Dir, cmd.Env = work, env
		return runLogged(t, cmd, "go install, empty dir, fresh HOME", args)
	}
}

// lookIntoKeptGuest uses what a developer uses on a kept, failed guest:
// status ENV, logs, cp both ways, and OpenSSH with ssh-config's block.
func lookIntoKeptGuest(t *testing.T, id string) {
	t.Helper()
	if out, errOut, code := envctl(t, "status", id); code != 0 || !strings.Contains(out, "kept:") || !strings.Contains(out, "collected logs:") {
		t.Errorf("status %s: exit %d\n%s%s", id, code, out, errOut)
	}
	if out, errOut, code := envctl(t, "logs", id, "--tail", "20"); code != 0 || !strings.Contains(out, "==> serial console") ||
		!strings.Contains(out, "==> CRI-O's journal") || !strings.Contains(out, "==> collected") {
		t.Errorf("logs %s: exit %d\n%s%s", id, code, out, errOut)
	}
	// CRI-O's journal has the failure: the image mount it was given had
	// no host path, since crictl 1.30 sent no image.
	if out, errOut, code := envctl(t, "logs", id, "--source", "crio"); code != 0 || !strings.Contains(out, "HostPath") {
		t.Errorf("logs --source crio: exit %d, no line of the failure:\n%s%s", code, lastN(out, 30), errOut)
	}
	dir := t.TempDir()
	if _, errOut, code := envctl(t, "cp", id+":/etc/crio", dir); code != 0 {
		t.Errorf("cp out: exit %d %s", code, errOut)
	} else if _, err := os.Stat(filepath.Join(dir, "crio")); err != nil {
		t.Errorf("cp out copied nothing: %v", err)
	}
	if logFile, _, _ := envctl(t, "ssh", id, "--", "find /var/log -type f -size +0 | head -n 1"); strings.TrimSpace(logFile) != "" {
		logFile = strings.TrimSpace(logFile)
		if _, errOut, code := envctl(t, "cp", id+":"+logFile, dir); code != 0 {
			t.Errorf("cp %s out: exit %d %s", logFile, code, errOut)
		} else if fi, err := os.Stat(filepath.Join(dir, filepath.Base(logFile))); err != nil || fi.Size() == 0 {
			t.Errorf("cp %s out: %v", logFile, err)
		}
	} else {
		t.Errorf("the guest has no file under /var/log to copy")
	}
	note := filepath.Join(dir, "note.txt")
	_ = os.WriteFile(note, []byte("from the host\n"), 0o644)
	if _, errOut, code := envctl(t, "cp", note, id+":/tmp/"); code != 0 {
		t.Errorf("cp in: exit %d %s", code, errOut)
	}
	cfg, errOut, code := envctl(t, "ssh-config", id)
	if code != 0 {
		t.Fatalf("ssh-config: exit %d %s", code, errOut)
	}
	cfgFile := filepath.Join(dir, "ssh_config")
	_ = os.WriteFile(cfgFile, []byte(cfg), 0o600)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Logf("no OpenSSH client here: ssh-config's block not tried (%v)", err)
		return
	}
	out, err := exec.Command("ssh", "-F", cfgFile, "envctl-"+id, "cat /tmp/note.txt && crictl version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "from the host") || !strings.Contains(string(out), "RuntimeName:  cri-o") {
		t.Errorf("OpenSSH with ssh-config's block: %v\n%s\n%s", err, out, cfg)
	}
}

// TestE2ECrunOldFailsWithDiagnosis: Debian's crun 1.8.1 (a file:// source)
// is installed and verified, but it refuses the OCI runtime-spec 1.2.1 that
// CRI-O 1.34 writes; envctl predicts it from crio's build info and explains
// the failure.
func TestE2ECrunOldFailsWithDiagnosis(t *testing.T) {
	mustLock(t, "crio-1.34-crun-1.8.1")
	out, errOut, code := envctl(t, "up", "crio-1.34-crun-1.8.1", "-o", "json")
	r := parseReport(t, out)
	if code != 1 || r.Verdict != "fail" {
		t.Fatalf("up: exit %d verdict %q, want 1 and fail\n%s\n%s", code, r.Verdict, out, errOut)
	}
	for _, c := range r.Components {
		if c.Name == "crun" && (!c.Verified || c.Actual != "1.8.1") {
			t.Errorf("crun not installed and verified: %+v", c)
		}
	}
	if !strings.Contains(out, "unknown version specified") {
		t.Errorf("raw error missing:\n%s", out)
	}
	found := false
	for _, d := range r.Diagnosis {
		if strings.Contains(d.Cause, "runtime-spec v1.2") && strings.Contains(d.Fix, "crun ≥ 1.14.3") {
			found = true
		}
	}
	if !found {
		t.Errorf("diagnosis missing: %+v", r.Diagnosis)
	}
	assertClean(t)
}

// TestE2ECrunOnDebian13Passes: CRI-O 1.34 with Debian 13's crun 1.21, from
// the guest's own package (its version checked against the lock), passes
// the image-volume lifecycle.
func TestE2ECrunOnDebian13Passes(t *testing.T) {
	mustLock(t, "crio-1.34-crun")
	out, errOut, code := envctl(t, "up", "crio-1.34-crun", "-o", "json")
	r := parseReport(t, out)
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("up: exit %d verdict %q error %q\n%s", code, r.Verdict, r.Error, errOut)
	}
	for _, c := range r.Components {
		if c.Name == "crun" && (!c.Verified || c.Actual != "1.21") {
			t.Errorf("crun from the package not verified: %+v", c)
		}
	}
	if len(r.Warnings) > 0 {
		t.Errorf("predicted failures for a good pair: %+v", r.Warnings)
	}
	assertClean(t)
}

// TestE2EUpstreamSuiteBothPass: CRI-O's own test/oci_volumes.bats, from
// the locked CRI-O module, runs in the guest after envctl's own suite:
// upstream's four applicable tests pass and its SELinux test is skipped
// (SELinux is not enforcing); the suites agree.
func TestE2EUpstreamSuiteBothPass(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	plan, _, _ := envctl(t, "plan", "crio-1.34-runc", "--test", "both")
	if !strings.Contains(plan, "upstream's test/oci_volumes.bats") {
		t.Errorf("plan does not name the upstream suite:\n%s", plan)
	}
	out, errOut, code := envctl(t, "up", "crio-1.34-runc", "--test", "both", "-o", "json")
	r := parseReport(t, out)
	t.Logf("stderr:\n%s", errOut)
	if code != 0 || r.Verdict != "pass" || len(r.Suites) != 2 || r.Disagreement != "" {
		t.Fatalf("up --test both: exit %d verdict %q suites %+v disagreement %q error %q\n%s", code, r.Verdict, r.Suites, r.Disagreement, r.Error, out)
	}
	up := r.Suites[1]
	if up.Suite != "upstream" || up.Verdict != "pass" || up.Passed != 4 || up.Skipped != 1 || len(up.Skips) != 1 || !strings.Contains(up.Skips[0], "not enforcing") {
		t.Errorf("upstream suite %+v", up)
	}
	if own := r.Suites[0]; own.Suite != "envctl" || own.Verdict != "pass" || own.Failed != 0 {
		t.Errorf("envctl suite %+v", own)
	}
	for _, s := range r.Steps {
		if s.Suite == "upstream" && s.Name == "OCI image volume SELinux" && s.Status != "skip" {
			t.Errorf("SELinux test: %+v", s)
		}
	}
	secs := phaseSeconds(r.Phases, "test.upstream")
	t.Logf("upstream suite: %.0fs under TCG (envctl's own: %.0fs)", secs, phaseSeconds(r.Phases, "test.envctl"))
	writeBenchNote(t, "upstream-suite", map[string]float64{"upstream": secs, "envctl": phaseSeconds(r.Phases, "test.envctl"), "up": r.Seconds})
	assertClean(t)
}

// TestE2ESeedUpstreamNotTested: with crictl 1.30.0, upstream's
// requires_crictl gate skips every test and bats exits 0. envctl reads the
// TAP lines: "not tested", exit 1, with upstream's reason next to its own
// diagnosis, and plan predicted the skip before anything booted.
func TestE2ESeedUpstreamNotTested(t *testing.T) {
	mustLock(t, "seed-crictl-1.30")
	plan, _, _ := envctl(t, "plan", "seed-crictl-1.30", "--test", "upstream")
	if !strings.Contains(plan, `requires_crictl "1.31"`) {
		t.Errorf("plan does not predict upstream's skip:\n%s", plan)
	}
	out, errOut, code := envctl(t, "up", "seed-crictl-1.30", "--test", "upstream", "-o", "json")
	r := parseReport(t, out)
	if code != 1 || r.Verdict != "not-tested" || len(r.Suites) != 1 || r.Suites[0].Skipped != 5 {
		t.Fatalf("up --test upstream: exit %d verdict %q suites %+v error %q\n%s\n%s", code, r.Verdict, r.Suites, r.Error, out, errOut)
	}
	if len(r.Suites[0].Skips) != 1 || !strings.Contains(r.Suites[0].Skips[0], "requires crictl version") {
		t.Errorf("upstream's reason: %+v", r.Suites[0])
	}
	diagnosed := false
	for _, d := range r.Diagnosis {
		diagnosed = diagnosed || strings.Contains(d.Cause, "crictl v1.30.0 does not send CRI Mount.image")
	}
	if !diagnosed {
		t.Errorf("envctl's diagnosis missing: %+v", r.Diagnosis)
	}
	// The verdict line carries both reasons.
	if s := r.Summary; !strings.Contains(s, "NOT TESTED") || !strings.Contains(s, "upstream skipped: requires crictl version") || !strings.Contains(s, "envctl: crictl v1.30.0 does not send CRI Mount.image") {
		t.Errorf("verdict line: %s", s)
	}
	assertClean(t)
}

// TestE2EDriftIsRefused: a lock that claims crun 1.9 for a file that is
// really crun 1.8.1 fails the drift check with exit 3.
func TestE2EDriftIsRefused(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "drift.yaml")
	os.WriteFile(profile, []byte(`name: drift
image: debian-12
source: gomod
components:
  cri-o:     {version: "1.34.0", commit: 5dd0877c}
  cri-tools: {version: "1.34.0"}
  runtime:   {name: crun, version: "1.9", source: "file:///usr/bin/crun"}
  conmon:    {version: "2.1.6", source: package}
test: image-volume-lifecycle
`), 0o644)
	mustLock(t, profile)
	_, errOut, code := envctl(t, "up", profile, "--no-test")
	if code != 3 || !strings.Contains(errOut, "drift") || !strings.Contains(errOut, "crun: locked 1.9, installed \"1.8.1\"") {
		t.Errorf("drift: exit %d\n%s", code, errOut)
	}
	assertClean(t)
}

// TestE2EUpRefusesStaleLock: editing the profile after locking is refused (exit 2).
func TestE2EUpRefusesStaleLock(t *testing.T) {
	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	profile := filepath.Join(dir, "p.yaml")
	os.WriteFile(profile, src, 0o644)
	mustLock(t, profile)
	os.WriteFile(profile, bytes.Replace(src, []byte(`"1.3.6"`), []byte(`"1.3.5"`), 1), 0o644)
	_, errOut, code := envctl(t, "up", profile)
	if code != 2 || !strings.Contains(errOut, "envctl lock") || !strings.Contains(errOut, `components.runtime.version from "1.3.6" to "1.3.5"`) {
		t.Errorf("stale lock: exit %d\n%s", code, errOut)
	}
}

// TestE2ELockedRefusesUnlocked: `up --locked` on a profile without a lock
// exits 2 at once, writes nothing and boots nothing.
func TestE2ELockedRefusesUnlocked(t *testing.T) {
	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	profile := filepath.Join(dir, "p.yaml")
	os.WriteFile(profile, src, 0o644)
	start := time.Now()
	_, errOut, code := envctl(t, "up", profile, "--locked")
	if code != 2 || !strings.Contains(errOut, "has no lock file") || time.Since(start) > 20*time.Second {
		t.Errorf("--locked: exit %d after %s\n%s", code, time.Since(start).Round(time.Second), errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "p.lock")); err == nil {
		t.Error("--locked wrote a lock")
	}
	assertClean(t)
}

// TestE2EPlainGoBuildLocksOnFirstUseAndPasses: a new user's path. envctl
// built with a plain `go build` (cgo on, so dynamically linked) runs `up`
// on a profile that has no lock yet: it writes the lock, says so, and the
// lifecycle test passes.
func TestE2EPlainGoBuildLocksOnFirstUseAndPasses(t *testing.T) {
	bin(t)
	dir := t.TempDir()
	dyn := filepath.Join(dir, "envctl")
	build := exec.Command("go", "build", "-o", dyn, "./cmd/envctl")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, _ := exec.Command("file", dyn).Output(); !strings.Contains(string(out), "dynamically linked") {
		t.Logf("note: this toolchain built a static envctl: %s", out)
	}
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	profile := filepath.Join(dir, "first-use.yaml")
	os.WriteFile(profile, src, 0o644)
	cmd := exec.Command(dyn, "up", profile, "-o", "json")
	cmd.Dir = "../.."
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	t.Logf("stderr:\n%s", errb.String())
	r := parseReport(t, out.String())
	if err != nil || r.Verdict != "pass" {
		t.Fatalf("up with a plain go build: %v, verdict %q, error %q", err, r.Verdict, r.Error)
	}
	if !strings.Contains(errb.String(), "first-use.lock on first use") {
		t.Errorf("up did not say it wrote the lock")
	}
	if _, err := os.Stat(filepath.Join(dir, "first-use.lock")); err != nil {
		t.Errorf("no lock written: %v", err)
	}
	assertClean(t)
}

func writePhases(t *testing.T, profile string, phases []phase) {
	b, _ := json.MarshalIndent(map[string]any{"profile": profile, "phases": phases, "when": time.Now().UTC().Format(time.RFC3339)}, "", "  ")
	os.WriteFile(filepath.Join(os.TempDir(), "envctl-e2e-phases.json"), b, 0o644)
	t.Logf("phases: %s", b)
}

// TestE2ELockRefusesMovedTags: cri-o 1.34.0 from the module proxy is a
// snapshot whose tag moved upstream. Locking it without a commit pin exits
// 2 and names both commits; --allow-moved-tags accepts it and the lock
// holds the snapshot's commit.
func TestE2ELockRefusesMovedTags(t *testing.T) {
	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	unpinned := strings.Replace(string(src), `cri-o:     {version: "1.34.0", commit: 5dd0877c}`, `cri-o:     {version: "1.34.0"}`, 1)
	if unpinned == string(src) {
		t.Fatal("the shipped profile no longer pins the commit")
	}
	profile := filepath.Join(dir, "moved.yaml")
	_ = os.WriteFile(profile, []byte(unpinned), 0o644)
	_, errOut, code := envctl(t, "lock", profile)
	if code != 2 || !strings.Contains(errOut, "5dd0877c91adb0d2b253f8009d12bb6531ca0104 (2025-05-14)") || !strings.Contains(errOut, "d91a449706dbbd6c285e4d365bbd3b65fd8de43c (2025-09-10)") {
		t.Errorf("lock of a moved tag: exit %d\n%s", code, errOut)
	}
	out, errOut, code := envctl(t, "lock", profile, "--allow-moved-tags")
	if code != 0 || !strings.Contains(out, "1.34.0 (module snapshot 5dd0877c, 2025-05-14; release is d91a4497)") {
		t.Fatalf("lock --allow-moved-tags: exit %d\n%s%s", code, out, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "moved.lock"))
	if !strings.Contains(string(b), "commit: 5dd0877c91adb0d2b253f8009d12bb6531ca0104") || !strings.Contains(string(b), "release_commit: d91a449706dbbd6c285e4d365bbd3b65fd8de43c") {
		t.Errorf("the lock does not hold both commits:\n%s", b)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
