package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrackedBinariesFailsTheLint: `make lint` runs lint/tracked-binaries.sh;
// in a repository that tracks an ELF file it must fail and name the file,
// and in one that tracks only sources it must pass.
func TestTrackedBinariesFailsTheLint(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	script, err := filepath.Abs("lint/tracked-binaries.sh")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable() // this test binary is an ELF file
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		files   map[string][]byte
		wantErr string
	}{
		{"sources only", map[string][]byte{"main.go": []byte("package main\n"), "README.md": []byte("# x\n")}, ""},
		{"a go build output", map[string][]byte{"main.go": []byte("package main\n"), "cmd/envctl/envctl": elf}, "cmd/envctl/envctl"},
		{"an ELF with another name", map[string][]byte{"docs/tool.dat": elf}, "docs/tool.dat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := t.TempDir()
			git := func(args ...string) {
				cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.email=t@example.invalid", "-c", "user.name=t"}, args...)...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			git("init", "-q")
			for name, body := range tc.files {
				p := filepath.Join(repo, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			git("add", ".")
			out, err := exec.Command("bash", script, repo).CombinedOutput()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("failed on a clean repository: %v\n%s", err, out)
			case tc.wantErr != "" && err == nil:
				t.Errorf("passed a repository that tracks %s", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(string(out), "tracked binary (ELF): "+tc.wantErr):
				t.Errorf("does not name %s:\n%s", tc.wantErr, out)
			}
		})
	}
}
