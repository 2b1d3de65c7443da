package warm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/provision/vm"
)

func save(t *testing.T, s Store, key string) State {
	t.Helper()
	dir, commit, _, err := s.Begin(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(State{WarmState: writeState(t, dir, "envctl-x")}); err != nil {
		t.Fatal(err)
	}
	st, ok := s.Lookup(key)
	if !ok {
		t.Fatalf("%s not found after commit", key)
	}
	return st
}

// writeState writes a state's files into dir.
func writeState(t *testing.T, dir, domain string) vm.WarmState {
	t.Helper()
	w := vm.WarmState{Save: filepath.Join(dir, "mem.save"), Disk: filepath.Join(dir, "disk.qcow2"), Domain: domain,
		UserKey: filepath.Join(dir, "user_key"), HostKey: filepath.Join(dir, "host_key")}
	for _, p := range []string{w.Save, w.Disk, w.UserKey, w.HostKey} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return w
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

// Post-boot states are saved in place, found by key and domain name, held
// by one run at a time, kept from pruning while being written, and a warm
// state on one that is gone is incomplete.
func TestPostBootStates(t *testing.T) {
	boot := Store{Dir: t.TempDir()}
	key := Key("post-boot", "image=a")
	slot0, slot1 := SlotDomain(key, 0), SlotDomain(key, 1)
	if slot0 == slot1 || len(slot0) > 40 {
		t.Fatalf("slot names %q %q", slot0, slot1)
	}
	release, ok, err := boot.Hold(slot0)
	if err != nil || !ok {
		t.Fatalf("hold: %v %v", ok, err)
	}
	if _, again, _ := boot.Hold(slot0); again {
		t.Error("a held name was held twice")
	}
	dir, commit, _, err := boot.BeginIn(key)
	if err != nil {
		t.Fatal(err)
	}
	// Being written: not found, and not pruned.
	if _, found := boot.Find(key, slot0); found {
		t.Error("an uncommitted post-boot state was found")
	}
	if gone, _ := boot.Prune(0); len(gone) != 0 {
		t.Errorf("pruned a state being written: %v", gone)
	}
	if err := commit(State{WarmState: writeState(t, dir, slot0)}); err != nil {
		t.Fatal(err)
	}
	st, found := boot.Find(key, slot0)
	if !found || st.Dir != dir {
		t.Fatalf("find: %+v %v", st, found)
	}
	if _, found := boot.Find(key, slot1); found {
		t.Error("found under another slot's name")
	}
	release()
	if r, ok, _ := boot.Hold(slot0); !ok {
		t.Error("a released name could not be held")
	} else {
		r()
	}

	warmStore := Store{Dir: t.TempDir()}
	ws := save(t, warmStore, "w")
	dir2, commit2, _, _ := warmStore.Begin("w2")
	w2 := writeState(t, dir2, ws.Domain)
	w2.Needs = []string{st.Disk}
	if err := commit2(State{WarmState: w2}); err != nil {
		t.Fatal(err)
	}
	if _, ok := warmStore.Lookup("w2"); !ok {
		t.Fatal("a warm state on an existing post-boot state was not found")
	}
	if err := boot.RemoveDir(st.Dir); err != nil {
		t.Fatal(err)
	}
	if _, ok := warmStore.Lookup("w2"); ok {
		t.Error("a warm state on a removed post-boot state was found")
	}
	if err := boot.RemoveDir(warmStore.Dir); err == nil {
		t.Error("RemoveDir removed a directory outside its store")
	}
}

// A state is sealed when it is saved: before a restore, Check finds a
// flipped byte in its memory image or disk, or in a post-boot state it
// needs; a state that names a disk outside the stores is not read; Use
// holds it from cache gc.
func TestSealedStates(t *testing.T) {
	root := t.TempDir()
	c, err := cache.New(root)
	if err != nil {
		t.Fatal(err)
	}
	boot := Store{Dir: filepath.Join(root, "boot"), Cache: c}
	warmS := Store{Dir: filepath.Join(root, "warm"), Cache: c}
	dir, commit, _, err := boot.BeginIn("pb")
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(State{WarmState: writeState(t, dir, "envctl-boot-pb-0")}); err != nil {
		t.Fatal(err)
	}
	pb, ok := boot.Find("pb", "envctl-boot-pb-0")
	if !ok {
		t.Fatal("no post-boot state")
	}
	tmp, commitW, _, err := warmS.Begin("k")
	if err != nil {
		t.Fatal(err)
	}
	ws := writeState(t, tmp, "envctl-boot-pb-0")
	ws.Needs = []string{pb.Disk}
	if err := commitW(State{WarmState: ws}); err != nil {
		t.Fatal(err)
	}
	st, ok := warmS.Lookup("k")
	if !ok {
		t.Fatal("no warm state")
	}
	if err := warmS.Check(st); err != nil {
		t.Fatalf("an intact state: %v", err)
	}
	tests := []struct {
		name  string
		path  string
		store Store
		state State
	}{
		{"the warm disk", st.Disk, warmS, st},
		{"the warm memory image", st.Save, warmS, st},
		{"the post-boot disk it needs", pb.Disk, warmS, st},
		{"a post-boot state's own memory image", pb.Save, boot, pb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := os.ReadFile(tt.path)
			flipped := append([]byte(nil), b...)
			flipped[len(flipped)/2] ^= 1
			_ = os.WriteFile(tt.path, flipped, 0o600)
			defer os.WriteFile(tt.path, b, 0o600)
			if err := tt.store.Check(tt.state); err == nil || !cache.IsCorrupt(err) {
				t.Errorf("a flipped byte in %s: %v", tt.name, err)
			}
		})
	}
	// Needs outside the stores are refused when the state is read.
	meta := filepath.Join(st.Dir, "warm.json")
	b, _ := os.ReadFile(meta)
	_ = os.WriteFile(meta, bytes.Replace(b, []byte(pb.Disk), []byte("/etc/passwd"), 1), 0o600)
	if _, ok := warmS.Lookup("k"); ok {
		t.Error("a state that needs /etc/passwd was found")
	}
	// Held: cache gc leaves it alone.
	release, err := boot.Use(pb.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var iu *cache.InUseError
	if err := c.RemoveEntry(t.Context(), cache.Entry{Kind: cache.EntryBoot, Path: pb.Dir}); !errors.As(err, &iu) {
		t.Errorf("removing a held state: %v", err)
	}
	release()
	if err := c.RemoveEntry(t.Context(), cache.Entry{Kind: cache.EntryBoot, Path: pb.Dir}); err != nil {
		t.Errorf("removing a released state: %v", err)
	}
}

// Another build of envctl gives other keys: its states are never mixed.
func TestKeysHoldTheBuildIdentity(t *testing.T) {
	k := Key("cell=c")
	defer func(f func() string) { buildIdentity = f }(buildIdentity)
	buildIdentity = func() string { return "another-build" }
	if Key("cell=c") == k {
		t.Error("a key does not change with envctl's build")
	}
}

// Every remover of a saved state claims it first: a state a live run
// holds is neither pruned, removed, nor replaced by a commit (issue 25:
// Prune removed a held state).
func TestHeldStatesAreNotRemoved(t *testing.T) {
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := Store{Dir: filepath.Join(c.Dir, "warm"), Cache: c}
	held := save(t, s, "held")
	for _, k := range []string{"b", "c", "d"} {
		save(t, s, k)
	}
	release, err := s.Use(held.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		remove func() error
	}{
		{"prune", func() error { _, err := s.Prune(0); return err }},
		{"remove", func() error { return s.Remove("held") }},
		{"remove dir", func() error { return s.RemoveDir(held.Dir) }},
		{"commit over it", func() error {
			dir, commit, abort, err := s.Begin("held")
			if err != nil {
				return err
			}
			defer abort()
			return commit(State{WarmState: writeState(t, dir, "envctl-y")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = tc.remove()
			st, ok := s.Lookup("held")
			if !ok || st.Domain != "envctl-x" {
				t.Fatalf("the held state was removed or replaced (%v %+v)", ok, st)
			}
		})
	}
	if left, _ := s.List(); len(left) != 1 {
		t.Errorf("prune left %d states, want only the held one", len(left))
	}
	release()
	if err := s.Remove("held"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("held"); ok {
		t.Error("released state still there")
	}
}
