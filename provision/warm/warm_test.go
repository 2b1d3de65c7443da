package warm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/envctl/envctl/provision/vm"
)

func save(t *testing.T, s Store, key string) State {
	t.Helper()
	dir, commit, _, err := s.Begin(key)
	if err != nil {
		t.Fatal(err)
	}
	w := vm.WarmState{Save: filepath.Join(dir, "mem.save"), Disk: filepath.Join(dir, "disk.qcow2"), Domain: "envctl-x",
		UserKey: filepath.Join(dir, "user_key"), HostKey: filepath.Join(dir, "host_key")}
	for _, p := range []string{w.Save, w.Disk, w.UserKey, w.HostKey} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := commit(State{WarmState: w}); err != nil {
		t.Fatal(err)
	}
	st, ok := s.Lookup(key)
	if !ok {
		t.Fatalf("%s not found after commit", key)
	}
	return st
}

func TestStore(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if _, ok := s.Lookup("k0"); ok {
		t.Fatal("an empty store found a state")
	}
	st := save(t, s, "k0")
	if st.Disk != filepath.Join(s.Dir, "k0", "disk.qcow2") || st.Size == 0 || st.Domain != "envctl-x" {
		t.Errorf("state %+v", st)
	}
	// A half-written state (its envctl died) is never found, and an
	// incomplete one neither.
	if _, _, abort, err := s.Begin("k1"); err != nil {
		t.Fatal(err)
	} else {
		_ = abort
	}
	if _, ok := s.Lookup("k1"); ok {
		t.Error("an uncommitted state was found")
	}
	if err := os.Remove(st.UserKey); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("k0"); ok {
		t.Error("a state without its key was found")
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		save(t, s, k)
	}
	gone, err := s.Prune(3)
	if err != nil {
		t.Fatal(err)
	}
	left, _ := s.List()
	if len(left) != 3 {
		t.Errorf("%d states left after pruning to 3 (removed %v)", len(left), gone)
	}
	if k := Key("a=1"); k == Key("a=2") || len(k) != 32 {
		t.Error("keys")
	}
}
