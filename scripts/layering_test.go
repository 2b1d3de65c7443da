package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLayeringIsEnforced: `make lint` runs golangci-lint with depguard
// rules that keep the layers one way (.golangci.yml). In a copy of the
// repository, a file that makes a lower layer import a higher one must
// fail the lint, naming the rule; the copy as it is must pass.
func TestLayeringIsEnforced(t *testing.T) {
	lint := filepath.Join(goEnv(t, "GOPATH"), "bin", "golangci-lint")
	if _, err := os.Stat(lint); err != nil {
		t.Skip("golangci-lint is not installed; `make lint` installs it")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := exec.Command("git", "-C", root, "ls-files", "*.go", "go.mod", "go.sum", ".golangci.yml", "scripts/*.sh", "scripts/guest/*").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	copyDir := t.TempDir()
	for _, f := range strings.Fields(string(files)) {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // deleted in the work tree
		}
		dst := filepath.Join(copyDir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(pkgs ...string) (string, error) {
		cmd := exec.Command(lint, append([]string{"run", "--enable-only", "depguard"}, pkgs...)...)
		cmd.Dir = copyDir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("./profiles/...", "./images/..."); err != nil {
		t.Fatalf("the layers as they are fail the lint: %v\n%s", err, out)
	}
	tests := []struct {
		name, dir, pkg, imp, want string
	}{
		{"profiles imports provision", "profiles/lock", "lock", "github.com/envctl/envctl/provision/guest", "profiles is the lowest layer"},
		{"profiles imports images", "profiles", "profiles", "github.com/envctl/envctl/images/cache", "profiles is the lowest layer"},
		{"images imports provision", "images/cache", "cache", "github.com/envctl/envctl/provision/guest", "images is below provision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := filepath.Join(copyDir, tt.dir, "zz_layering.go")
			src := "package " + tt.pkg + "\n\nimport _ \"" + tt.imp + "\"\n"
			if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(bad)
			out, err := run("./" + tt.dir + "/")
			if err == nil || !strings.Contains(out, tt.want) || !strings.Contains(out, "depguard") {
				t.Errorf("the lint let %s import %s: %v\n%s", tt.dir, tt.imp, err, out)
			}
		})
	}
}

func goEnv(t *testing.T, key string) string {
	out, err := exec.Command("go", "env", key).Output()
	if err != nil {
		t.Skip("no go command")
	}
	return strings.TrimSpace(string(out))
}
