package privatedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFallback(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir, err := Fallback("state")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
	if again, err := Fallback("state"); err != nil || again != dir {
		t.Errorf("a second call: %s %v", again, err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T, dir string) string
		wantErr string
	}{
		{"own and private", func(t *testing.T, dir string) string { return mk(t, dir, "a", 0o700) }, ""},
		{"own, but open to others: closed", func(t *testing.T, dir string) string { return mk(t, dir, "b", 0o755) }, ""},
		{"a symbolic link", func(t *testing.T, dir string) string {
			target := mk(t, dir, "real", 0o700)
			link := filepath.Join(dir, "link")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "not a directory"},
		{"another user's", func(t *testing.T, dir string) string {
			d := mk(t, dir, "other", 0o700)
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a directory away")
			}
			if err := os.Chown(d, 4242, 4242); err != nil {
				t.Fatal(err)
			}
			return d
		}, "belongs to user 4242"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.make(t, t.TempDir())
			err := Check(d)
			if tt.wantErr == "" {
				fi, _ := os.Lstat(d)
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("%v, mode %v", err, fi.Mode())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func mk(t *testing.T, dir, name string, mode os.FileMode) string {
	d := filepath.Join(dir, name)
	if err := os.Mkdir(d, mode); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(d, mode)
	return d
}
