//go:build e2e

package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// run is envctl with its own state directory (and more environment).
type runner struct {
	t     testing.TB
	state string
	env   []string
}

func newRunner(t testing.TB, env ...string) *runner {
	return &runner{t: t, state: t.TempDir(), env: env}
}

func (r *runner) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(bin(r.t), args...)
	cmd.Dir = "../.."
	cmd.Env = append(append(os.Environ(), "ENVCTL_STATE_DIR="+r.state), r.env...)
	return cmd
}

func (r *runner) run(args ...string) (string, string, int) {
	r.t.Helper()
	return runLogged(r.t, r.cmd(args...), filepath.Base(r.state), args)
}

// started is envctl running in the background: its stderr is collected,
// and its lines are handed to whoever waits for a marker.
type started struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	lines  chan string
	done   chan error
	domain string
	// ended is set when the process ended before the marker.
	ended bool
}

func (s *started) collect(pipe io.Reader) {
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		s.stderr.WriteString(sc.Text() + "\n")
		s.lines <- sc.Text()
	}
	close(s.lines)
	s.done <- s.cmd.Wait()
}

// startMaybe runs envctl in the background and returns once a line of its
// stderr contains marker, or once it ended (ended is then set).
func (r *runner) startMaybe(marker string, args ...string) *started {
	r.t.Helper()
	cmd := r.cmd(args...)
	pipe, _ := cmd.StderrPipe()
	s := &started{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan string, 1000), done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go s.collect(pipe)
	for l := range s.lines {
		if f := strings.Fields(l); len(f) > 2 && f[1] == "booting" {
			s.domain = f[2]
		}
		if strings.Contains(l, marker) {
			return s
		}
	}
	s.ended = true
	return s
}

// start is startMaybe for a marker that must come.
func (r *runner) start(marker string, args ...string) *started {
	r.t.Helper()
	s := r.startMaybe(marker, args...)
	if s.ended {
		r.t.Fatalf("envctl %v ended before %q:\n%s", args, marker, s.stderr)
	}
	return s
}

func (s *started) wait(t testing.TB, limit time.Duration) int {
	t.Helper()
	go func() {
		for range s.lines {
		}
	}()
	select {
	case err := <-s.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 0
	case <-time.After(limit):
		_ = s.cmd.Process.Kill()
		t.Fatalf("envctl did not end within %s:\n%s", limit, s.stderr)
	}
	return -1
}

func virsh(args ...string) string {
	out, _ := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	return string(out)
}

func domState(name string) string { return strings.TrimSpace(virsh("domstate", name)) }

// noEnvsLeft checks a state directory: no environment, no domain, no
// volume of it.
func (r *runner) noEnvsLeft(t *testing.T) {
	t.Helper()
	out, _, _ := r.run("status", "-o", "json")
	if s := strings.TrimSpace(out); s != "null" && s != "[]" {
		t.Errorf("environments left in %s: %s", r.state, s)
	}
	if entries, _ := os.ReadDir(filepath.Join(r.state, "envs")); len(entries) != 0 {
		t.Errorf("environment directories left in %s: %v", r.state, entries)
	}
	if vols, err := filepath.Glob(filepath.Join(r.state, "pool", "*")); err == nil && len(vols) != 0 {
		t.Errorf("volumes left in %s: %v", r.state, vols)
	}
}

// TestE2EStateDirectoryIsolation: A keeps a VM with the stack installed; B
// runs gc and leaves it alone; paused (as QEMU does when the host disk
// fills), it survives gc of both state directories; A still reaches it.
// Then a guest binary is replaced: the drift check names it and both
// digests, exit 3. down removes it all.
func TestE2EStateDirectoryIsolation(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	a, b := newRunner(t), newRunner(t)
	out, errOut, code := a.run("up", "crio-1.34-runc", "--no-test", "--keep", "-o", "json")
	if code != 0 {
		t.Fatalf("A: up --keep: exit %d\n%s", code, errOut)
	}
	id := parseReport(t, out).Env
	dom := "envctl-" + id
	t.Cleanup(func() { a.run("down", id) })

	if gcOut, errOut, code := b.run("gc"); code != 0 || strings.Contains(gcOut, id) {
		t.Errorf("B: gc: exit %d\n%s%s", code, gcOut, errOut)
	}
	if st := domState(dom); st != "running" {
		t.Fatalf("A's VM after B's gc: %q", st)
	}
	virsh("suspend", dom)
	for _, r := range []*runner{b, a} {
		if gcOut, errOut, code := r.run("gc"); code != 0 || strings.Contains(gcOut, id) {
			t.Errorf("gc of %s with the VM paused: exit %d\n%s%s", filepath.Base(r.state), code, gcOut, errOut)
		}
	}
	if st := domState(dom); st != "paused" {
		t.Fatalf("the paused kept VM after gc: %q", st)
	}
	status, _, _ := a.run("status")
	if !strings.Contains(status, id) || !strings.Contains(status, "paused") {
		t.Errorf("A's status does not show the paused VM:\n%s", status)
	}
	virsh("resume", dom)
	if out, errOut, code := a.run("ssh", id, "--", "cat", "/etc/hostname"); code != 0 || !strings.Contains(out, "envctl-") {
		t.Errorf("A: ssh after B's gc: exit %d %q %s", code, out, errOut)
	}
	// down on a busy environment says so at once.
	busy := a.cmd("ssh", id, "--", "sleep", "30")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	start := time.Now()
	if _, errOut, code := a.run("down", id); code != 3 || !strings.Contains(errOut, "busy") || time.Since(start) > 5*time.Second {
		t.Errorf("down while busy: exit %d after %s: %s", code, time.Since(start).Round(time.Second), errOut)
	}
	_ = busy.Process.Signal(syscall.SIGINT)
	_ = busy.Wait()

	// Drift: a binary replaced after install.
	if out, errOut, code := a.run("verify", id); code != 0 {
		t.Errorf("verify of an intact guest: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := a.run("ssh", id, "--", "cp", "/usr/local/bin/runc", "/usr/local/bin/crictl"); code != 0 {
		t.Fatalf("replace crictl: %s", errOut)
	}
	locked := lockedDigest(t, "profiles/crio-1.34-runc.lock", "crictl")
	_, errOut, code = a.run("verify", id)
	if code != 3 || !strings.Contains(errOut, "/usr/local/bin/crictl has sha256 ") || !strings.Contains(errOut, "the lock has "+locked) {
		t.Errorf("drift after replacing crictl: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := a.run("down", id); code != 0 {
		t.Errorf("down: %s", errOut)
	}
	if st := domState(dom); !strings.Contains(st, "failed to get domain") {
		t.Errorf("domain after down: %q", st)
	}
	a.noEnvsLeft(t)
}

func lockedDigest(t *testing.T, lockPath, binary string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../..", lockPath))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ": "); ok && k == binary {
			return v
		}
	}
	t.Fatalf("%s records no %s", lockPath, binary)
	return ""
}

// TestE2ESigkillDuringTestLeavesNoRunningDomain: envctl killed outright in
// the test phase loses its VM at once (libvirt's AUTODESTROY), before any
// gc; gc then removes the files, and nothing is left.
func TestE2ESigkillDuringTestLeavesNoRunningDomain(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	r := newRunner(t)
	s := r.start("running image-volume-lifecycle", "up", "crio-1.34-runc", "--cold")
	if s.domain == "" {
		t.Fatalf("no domain name in:\n%s", s.stderr)
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t, time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && strings.Contains(virsh("list", "--name"), s.domain) {
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(virsh("list", "--all", "--name"), s.domain) {
		t.Fatalf("%s outlived its killed envctl: %s", s.domain, virsh("list", "--all"))
	}
	if out, _ := exec.Command("pgrep", "-f", "guest="+s.domain).Output(); len(out) != 0 {
		t.Errorf("a QEMU process of %s is left: %s", s.domain, out)
	}
	gcOut, errOut, code := r.run("gc")
	if code != 0 || !strings.Contains(gcOut, "removed volume") || !strings.Contains(gcOut, "removed directory") {
		t.Errorf("gc: exit %d\n%s%s", code, gcOut, errOut)
	}
	r.noEnvsLeft(t)
}

// TestE2EGuestUnreachableMidTest: a guest that stops answering during the
// test (its domain paused) makes the run "could not test", exit 3, and it
// is torn down.
func TestE2EGuestUnreachableMidTest(t *testing.T) {
	mustLock(t, "crio-1.34-runc")
	r := newRunner(t)
	s := r.start("running image-volume-lifecycle", "up", "crio-1.34-runc", "--cold")
	virsh("suspend", s.domain)
	code := s.wait(t, 5*time.Minute)
	if code != 3 || !strings.Contains(s.stderr.String(), "stopped answering") || !strings.Contains(s.stderr.String(), "image-volume test") {
		t.Errorf("exit %d, want 3:\n%s", code, s.stderr)
	}
	if strings.Contains(virsh("list", "--all", "--name"), s.domain) {
		t.Errorf("%s was not torn down", s.domain)
	}
	r.noEnvsLeft(t)
}

// TestE2EHandEditedLockIsRefused: a lock edited to pin cri-tools 1.30.0
// (keys and all) is refused with exit 2, naming the field, before anything
// boots.
func TestE2EHandEditedLockIsRefused(t *testing.T) {
	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	profile := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(profile, src, 0o644)
	mustLock(t, profile)
	lockPath := filepath.Join(dir, "p.lock")
	b, _ := os.ReadFile(lockPath)
	edited := strings.ReplaceAll(string(b), "cri-tools@1.34.0/gomod", "cri-tools@1.30.0/gomod")
	edited = strings.Replace(edited, "component: cri-tools\n    version: 1.34.0", "component: cri-tools\n    version: 1.30.0", 1)
	if edited == string(b) {
		t.Fatal("the edit changed nothing")
	}
	_ = os.WriteFile(lockPath, []byte(edited), 0o644)
	start := time.Now()
	_, errOut, code := envctl(t, "up", profile, "--locked")
	if code != 2 || !strings.Contains(errOut, "components.cri-tools") || !strings.Contains(errOut, "cri-tools@1.30.0/gomod") || !strings.Contains(errOut, "envctl lock") || time.Since(start) > 30*time.Second {
		t.Errorf("hand-edited lock: exit %d\n%s", code, errOut)
	}
}

// TestE2ECorruptCacheIsMadeAgain: one flipped byte in a cached blob (runc
// from a mirror on loopback) and one in a cached build output (crictl) are
// found before anything is uploaded; the blob is fetched again, the build
// made again, and the run passes.
func TestE2ECorruptCacheIsMadeAgain(t *testing.T) {
	// A mirror laid out as upstream, serving a runc that envctl builds here
	// from the module proxy: 1.3.7, whose release digest the catalog does
	// not record (for a version it does, the lock pins upstream's digest,
	// and a mirror serving anything else is refused).
	cacheDir := t.TempDir()
	copyBuilds(t, cacheDir)
	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	built := filepath.Join(dir, "built.yaml")
	_ = os.WriteFile(built, []byte(strings.Replace(string(src), `runtime:   {name: runc, version: "1.3.6"}`, `runtime:   {name: runc, version: "1.3.7"}`, 1)), 0o644)
	r := newRunner(t, "ENVCTL_CACHE_DIR="+cacheDir)
	if out, errOut, code := r.run("lock", built); code != 0 {
		t.Fatalf("lock (building runc 1.3.7): %s%s", out, errOut)
	}
	runcs, _ := filepath.Glob(filepath.Join(cacheDir, "builds", "runc-1.3.7-*", "runc"))
	if len(runcs) != 1 {
		t.Fatalf("runc 1.3.7 builds: %v", runcs)
	}
	runc, err := os.ReadFile(runcs[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(runc)
	base := "/github.com/opencontainers/runc/releases/download/v1.3.7/"
	var hits atomic.Int32
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case base + "runc.amd64":
			hits.Add(1)
			_, _ = w.Write(runc)
		case base + "runc.sha256sum":
			fmt.Fprintf(w, "%s  runc.amd64\n", hex.EncodeToString(sum[:]))
		default:
			http.NotFound(w, req)
		}
	}))
	defer mirror.Close()
	profile := filepath.Join(dir, "mirror.yaml")
	yaml := strings.Replace(string(src), `runtime:   {name: runc, version: "1.3.6"}`, `runtime:   {name: runc, version: "1.3.7", source: mirror}`, 1)
	if yaml == string(src) {
		t.Fatalf("profile layout changed:\n%s", src)
	}
	_ = os.WriteFile(profile, []byte(yaml), 0o644)
	r = newRunner(t, "ENVCTL_MIRROR="+mirror.URL, "ENVCTL_CACHE_DIR="+cacheDir)
	if out, errOut, code := r.run("lock", profile); code != 0 {
		t.Fatalf("lock: %s%s", out, errOut)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d downloads of runc while locking", n)
	}
	blob := filepath.Join(cacheDir, "blobs", "sha256", hex.EncodeToString(sum[:]))
	// The crictl build the lock uses (the cache may hold older recipes').
	lockText, _ := os.ReadFile(strings.TrimSuffix(profile, ".yaml") + ".lock")
	m := regexp.MustCompile(`crictl: ([0-9a-f]{64})`).FindSubmatch(lockText)
	if m == nil {
		t.Fatalf("the lock records no crictl digest:\n%s", lockText)
	}
	var crictls []string
	candidates, _ := filepath.Glob(filepath.Join(cacheDir, "builds", "crictl-1.34.0-*", "crictl"))
	for _, c := range candidates {
		if b, err := os.ReadFile(c); err == nil && fmt.Sprintf("%x", sha256.Sum256(b)) == string(m[1]) {
			crictls = append(crictls, c)
		}
	}
	if len(crictls) != 1 {
		t.Fatalf("crictl builds with the locked digest: %v (of %v)", crictls, candidates)
	}
	for _, f := range []string{blob, crictls[0]} {
		flipByte(t, f)
	}
	out, errOut, code := r.run("up", profile, "-o", "json")
	rep := parseReport(t, out)
	if code != 0 || rep.Verdict != "pass" {
		t.Fatalf("up after corruption: exit %d verdict %s %s\n%s", code, rep.Verdict, rep.Error, errOut)
	}
	for _, f := range []string{blob, crictls[0]} {
		if !strings.Contains(errOut, f+" is corrupt") {
			t.Errorf("no warning names %s:\n%s", f, errOut)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("runc downloaded %d times, want 2 (once more after the flip)", n)
	}
	// verify then finds everything intact.
	if out, errOut, code := r.run("cache", "verify"); code != 0 || strings.Contains(out, "CORRUPT") {
		t.Errorf("cache verify: exit %d\n%s%s", code, out, errOut)
	}
	r.noEnvsLeft(t)
}

func sharedCache() string {
	if d := os.Getenv("ENVCTL_CACHE_DIR"); d != "" {
		return d
	}
	d, _ := os.UserCacheDir()
	return filepath.Join(d, "envctl")
}

// copyBuilds gives a private cache the shared cache's builds, workload and
// images (copies, so that flipping a byte harms nothing else).
func copyBuilds(t *testing.T, dst string) {
	t.Helper()
	src := sharedCache()
	for _, sub := range []string{"builds", "workload", "images", "stamps"} {
		if _, err := os.Stat(filepath.Join(src, sub)); err != nil {
			continue
		}
		if out, err := exec.Command("cp", "-a", filepath.Join(src, sub), filepath.Join(dst, sub)).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", sub, err, out)
		}
	}
	// Image blobs are large: hard links share them read-only.
	_ = os.MkdirAll(filepath.Join(dst, "blobs", "sha256"), 0o755)
	blobs, _ := filepath.Glob(filepath.Join(src, "blobs", "sha256", "*"))
	for _, b := range blobs {
		if err := os.Link(b, filepath.Join(dst, "blobs", "sha256", filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	at := st.Size() / 2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}
