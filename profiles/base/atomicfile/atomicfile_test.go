package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	tests := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"a new file", "one", 0o600},
		{"replaces the old one whole", "two, longer", 0o644},
	}
	for _, tt := range tests {
		if err := Write(path, []byte(tt.data), tt.mode); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		b, _ := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if string(b) != tt.data || fi.Mode().Perm() != tt.mode {
			t.Errorf("%s: %q %v", tt.name, b, fi.Mode())
		}
	}
	// A directory that cannot be written: the old file stays, nothing is left.
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644); err == nil {
		t.Error("wrote into a missing directory")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}
