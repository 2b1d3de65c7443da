package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSuiteTargetsStopANormalUser: as a normal user, `make test`, `make
// e2e` and the soak stop before building anything, with one line that
// says what to run instead.
func TestSuiteTargetsStopANormalUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run make as another user")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	// A copy of the Makefile in a directory anyone may read: the clone
	// itself may sit in a closed one.
	dir, err := os.MkdirTemp("", "envctl-make-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), mk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"test", "e2e", "soak-short"} {
		cmd := exec.Command("make", "-s", target)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err == nil || !strings.Contains(lines[0], "make lint unit fuzz") || len(lines) > 2 {
			t.Errorf("make %s as nobody: %v\n%s", target, err, out)
		}
	}
}

// TestImagePrefetchesEveryShippedProfile: `make image` fetches or builds
// the locked components of every shipped profile (`fetch --locked
// --skip-image`) beside its image builds, and fails when that fails.
func TestImagePrefetchesEveryShippedProfile(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	cmd := exec.Command("make", "-n", "image")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n image: %v\n%s", err, out)
	}
	recipe := string(out)
	if !strings.Contains(recipe, "fetch $p --locked --skip-image || exit 1") || !strings.Contains(recipe, "[ $sp -ne 0 ]") {
		t.Fatalf("make image does not prefetch with fetch --locked --skip-image, or does not fail with it:\n%s", recipe)
	}
	yamls, _ := filepath.Glob("../profiles/*.yaml")
	if len(yamls) == 0 {
		t.Fatal("no shipped profiles")
	}
	for _, y := range yamls {
		name := strings.TrimSuffix(filepath.Base(y), ".yaml")
		if !strings.Contains(recipe, " "+name+" ") && !strings.Contains(recipe, " "+name+";") {
			t.Errorf("make image does not prefetch %s:\n%s", name, recipe)
		}
	}
}
