package profiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// Built-in profiles are found after every directory, unpacked read-only
// into a directory of their own, and adopted into the user's directory
// before their lock is written: the binary's copy is never edited.
func TestBuiltinFindListAdopt(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "local")
	_ = os.MkdirAll(local, 0o755)
	src, _ := os.ReadFile("crio-1.34-runc.yaml")
	lockData, _ := os.ReadFile("crio-1.34-runc.lock")
	fsys := fstest.MapFS{
		"a.yaml": {Data: []byte(strings.Replace(string(src), "name: crio-1.34-runc", "name: a", 1))},
		"a.lock": {Data: lockData},
		"b.yaml": {Data: []byte(strings.Replace(string(src), "name: crio-1.34-runc", "name: b", 1))},
	}
	_ = os.WriteFile(filepath.Join(local, "b.yaml"), fsys["b.yaml"].Data, 0o644)
	l := Loader{Dirs: []string{local}, DirOrigins: []Origin{"./profiles"}, Builtin: fsys,
		BuiltinDir: filepath.Join(dir, "cache", "profiles"), AdoptDir: filepath.Join(dir, "config")}

	list := l.List()
	if len(list) != 2 || list[0].Name != "b" || list[0].Origin != "./profiles" || list[1].Name != "a" || list[1].Origin != OriginBuiltin || !list[1].Locked {
		t.Fatalf("list: %+v", list)
	}
	if p, err := l.Find("b"); err != nil || p != filepath.Join(local, "b.yaml") {
		t.Errorf("a local file does not win: %s %v", p, err)
	}
	p, err := l.Load("a")
	if err != nil {
		t.Fatal(err)
	}
	if !l.IsBuiltinCopy(p) {
		t.Fatalf("%s is not a built-in copy", p.Path)
	}
	if fi, err := os.Stat(p.Path); err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("the unpacked copy is writable: %v %v", fi.Mode(), err)
	}
	if _, err := os.Stat(p.LockPath()); err != nil {
		t.Errorf("the built-in lock was not unpacked: %v", err)
	}
	// Unpacking again is a no-op; another binary's set goes elsewhere.
	if again, _ := l.Find("a"); again != p.Path {
		t.Errorf("unpacked twice: %s, %s", again, p.Path)
	}
	if b, err := l.Find("builtin:b"); err != nil || !strings.HasPrefix(b, l.BuiltinDir) {
		t.Errorf("builtin:b: %s %v", b, err)
	}

	adopted, err := l.Adopt(p)
	if err != nil || adopted != filepath.Join(dir, "config", "a.yaml") || p.Path != adopted {
		t.Fatalf("adopt: %q %v (path %s)", adopted, err, p.Path)
	}
	if b, _ := os.ReadFile(p.LockPath()); string(b) != string(lockData) {
		t.Error("the lock was not copied with the profile")
	}
	if again, err := l.Adopt(p); again != "" || err != nil {
		t.Errorf("adopting the user's own profile: %q %v", again, err)
	}
	// Once adopted, the user's copy is found first (the config directory
	// is on the search path before the binary).
	l.Dirs = append(l.Dirs, l.AdoptDir)
	if found, _ := l.Find("a"); found != adopted {
		t.Errorf("found %s, want the adopted %s", found, adopted)
	}
	// A second adoption of the same name never overwrites the user's file.
	q, _ := l.Load("builtin:a")
	if _, err := l.Adopt(q); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("adopt over the user's file: %v", err)
	}
	l.AdoptDir = ""
	if _, err := l.Adopt(q); err == nil || !strings.Contains(err.Error(), "envctl init") {
		t.Errorf("adopt without a directory: %v", err)
	}
}
