//go:build e2e

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envctl/envctl/images/archive"
)

// unprivileged is a user made for a test, as a workstation's developer:
// a home of its own, no group but its own, and no environment from the
// test but PATH (go included, for component builds) and the Go proxy's
// settings.
type unprivileged struct {
	name     string
	uid, gid uint32
	home     string
	bin      string
}

var userSeq atomic.Int32

// newUser adds a user with useradd, without subordinate ids, and gives it
// what `sudo make host` gives the invoking user (scripts/host-setup.sh
// with SUDO_USER: subordinate ids, the kvm group). It needs
// root: it is the one step of the suite that does.
func newUser(t *testing.T) *unprivileged {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("useradd needs root: this test makes a user and runs envctl as that user")
	}
	name := fmt.Sprintf("envctl-e2e-%d-%d", os.Getpid()%100000, userSeq.Add(1))
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("pkill", "-KILL", "-u", name).Run()
		time.Sleep(time.Second)
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v\n%s", name, err, out)
		}
	})
	hs := exec.Command("bash", "scripts/host-setup.sh")
	hs.Dir = "../.."
	hs.Env = append(os.Environ(), "SUDO_USER="+name)
	if out, err := hs.CombinedOutput(); err != nil || !strings.Contains(string(out), "gave "+name+" subordinate ids") {
		t.Fatalf("sudo make host for %s: %v\n%s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	nu := &unprivileged{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir, bin: filepath.Join(u.HomeDir, "bin", "envctl")}
	b, err := os.ReadFile(bin(t))
	if err != nil {
		t.Fatal(err)
	}
	nu.write(t, "bin/envctl", b, 0o755)
	return nu
}

// write puts a file in the user's home, owned by the user.
func (u *unprivileged) write(t *testing.T, rel string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(u.home, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	u.own(t, filepath.Join(u.home, strings.Split(rel, "/")[0]))
	return p
}

func (u *unprivileged) own(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", u.uid, u.gid), path).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v\n%s", path, err, out)
	}
}

// envctl runs envctl as the user, from its home, with a login's
// environment: no XDG_RUNTIME_DIR (no logind here), so the session daemon
// lives under ~/.cache/libvirt, as libvirt itself puts it then.
func (u *unprivileged) envctl(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(u.bin, args...)
	cmd.Dir = u.home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}}
	goBin, _ := exec.LookPath("go")
	cmd.Env = []string{"HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name,
		"PATH=" + filepath.Dir(goBin) + ":/usr/local/bin:/usr/bin:/bin"}
	for _, k := range []string{"GOPROXY", "GONOSUMDB", "GONOSUMCHECK", "GOFLAGS", "GOSUMDB", "GOTOOLCHAIN"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return runLogged(t, cmd, u.name, args)
}

// rootQEMU watches, until stop, for QEMU processes that run as root.
type rootQEMU struct {
	mu   sync.Mutex
	seen []string
	stop chan struct{}
	done chan struct{}
}

func watchRootQEMU() *rootQEMU {
	w := &rootQEMU{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			out, _ := exec.Command("ps", "-o", "user=,pid=,args=", "-C", "qemu-system-x86_64").Output()
			for _, l := range strings.Split(string(out), "\n") {
				if f := strings.Fields(l); len(f) > 2 && f[0] == "root" {
					w.mu.Lock()
					if len(w.seen) < 10 {
						w.seen = append(w.seen, l[:min(len(l), 160)])
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns what it saw.
func (w *rootQEMU) Stop() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

// TestE2EUnprivilegedUser: a new non-root user, after only what `sudo make
// host` does for them, builds debian-12 (the same digest as root's build
// of the same packages), then runs `up` (PASS) and a two-cell `matrix -j 2`
// (crictl 1.30.0 fails with its diagnosis, 1.34.0 passes), over the
// session daemon envctl starts itself. No QEMU runs as root meanwhile.
// The user's cache holds the components from the suite's cache, as a CI
// cache restore gives them; the image it builds itself.
func TestE2EUnprivilegedUser(t *testing.T) {
	parallelGroup(t)
	f := suiteLock(t)
	debs, base := suiteBuild(t)
	u := newUser(t)
	watch := watchRootQEMU()
	defer func() {
		if seen := watch.Stop(); len(seen) > 0 {
			t.Errorf("QEMU ran as root:\n%s", strings.Join(seen, "\n"))
		}
	}()

	// The suite build's packages, as a mirror the user can read.
	mirror := filepath.Join(u.home, "mirror")
	stamp := time.Now().UTC().Format(archive.StampLayout)
	makeArchive(t, debs, mirror, stamp, base.Packages, nil)
	u.own(t, mirror)
	// Components from the suite's cache (not its images), owned by the user.
	cache := filepath.Join(u.home, ".cache", "envctl")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(suiteCache())
	for _, e := range entries {
		if slices.Contains([]string{"warm", "boot", "tmp", "locks", "images"}, e.Name()) {
			continue
		}
		if out, err := exec.Command("cp", "-a", filepath.Join(suiteCache(), e.Name()), cache).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
	}
	for _, d := range []string{f.Image.Digest, f.Image.Kernel, f.Image.Initrd} {
		for _, sub := range []string{"blobs", "stamps"} {
			_ = os.Remove(filepath.Join(cache, sub, "sha256", strings.TrimPrefix(d, "sha256:")))
		}
	}
	u.own(t, filepath.Join(u.home, ".cache"))
	env := []string{"ENVCTL_DEBIAN_MIRROR=file://" + mirror}

	out, errOut, code := u.envctl(t, env, "image", "build", "debian-12", "-o", "json")
	var b built
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
		t.Fatalf("image build as %s: exit %d\n%s%s", u.name, code, out, tail(errOut, 30))
	}
	if b.Disk != base.Disk || b.Kernel != base.Kernel || b.Initrd != base.Initrd {
		t.Errorf("%s's build of debian-12 is %s (kernel %s, initrd %s); root's build of the same packages is %s (%s, %s)",
			u.name, b.Disk, b.Kernel, b.Initrd, base.Disk, base.Kernel, base.Initrd)
	}

	src, _ := os.ReadFile(filepath.Join(os.Getenv("ENVCTL_PROFILES_DIR"), "crio-1.34-runc.yaml"))
	pinned, _ := os.ReadFile(filepath.Join(os.Getenv("ENVCTL_PROFILES_DIR"), "crio-1.34-runc.lock"))
	profile := u.write(t, "profiles/crio-1.34-runc.yaml", src, 0o644)
	u.write(t, "profiles/crio-1.34-runc.lock", pinned, 0o644)
	if b.Disk != f.Image.Digest {
		t.Logf("the lock pins %s; the suite's build is %s (Debian moved since the lock): up re-pins the copy", f.Image.Digest, b.Disk)
	}
	out, errOut, code = u.envctl(t, env, "up", profile, "-o", "json")
	var r upReport
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Verdict != "pass" {
		t.Fatalf("up as %s: exit %d, verdict %q\n%s", u.name, code, r.Verdict, tail(errOut, 40))
	}
	if !strings.Contains(errOut, "envctl: using qemu:///session: "+u.name+" may not use qemu:///system") {
		t.Errorf("up did not say which connection it chose and why:\n%s", tail(errOut, 40))
	}
	if _, err := os.Stat(filepath.Join(u.home, ".cache", "libvirt", "libvirt-sock")); err != nil {
		t.Errorf("no session daemon under ~/.cache/libvirt: %v", err)
	}

	mp := u.write(t, "profiles/user-matrix.yaml", []byte("name: user-matrix\n"+matrixBase+"matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\"]\n"), 0o644)
	out, errOut, code = u.envctl(t, env, "matrix", mp, "-j", "2", "-o", "json")
	var m matrixOut
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("matrix as %s: exit %d: %v\n%s", u.name, code, err, tail(errOut, 40))
	}
	verdicts := map[string]string{}
	for _, r := range m.Reports {
		verdicts[r.Cell] = r.Verdict
	}
	if code != 1 || verdicts["cri-tools=1.30.0"] != "fail" || verdicts["cri-tools=1.34.0"] != "pass" {
		t.Errorf("matrix -j 2 as %s: exit %d, verdicts %v (want 1, 1.30.0 fail, 1.34.0 pass)\n%s", u.name, code, verdicts, tail(errOut, 40))
	}
	if leftover, _ := exec.Command("ps", "-o", "pid=,args=", "-u", u.name).Output(); bytes.Contains(leftover, []byte("qemu-system")) {
		t.Errorf("%s's QEMU left running:\n%s", u.name, leftover)
	}
}
