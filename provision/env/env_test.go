package env

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/base/fault"
)

func TestVolumeNames(t *testing.T) {
	for _, k := range []VolumeKind{VolumeDisk, VolumeSeed, VolumeArtifacts} {
		name := VolumeName("crio-1.34-runc-abc123", k)
		id, kind, ok := ParseVolumeName(name)
		if !ok || id != "crio-1.34-runc-abc123" || kind != k {
			t.Errorf("%s: %s %s %v", name, id, kind, ok)
		}
	}
	for _, foreign := range []string{"debian.qcow2", "-disk.qcow2", "x.img"} {
		if _, _, ok := ParseVolumeName(foreign); ok {
			t.Errorf("%s parsed as an envctl volume", foreign)
		}
	}
}

func TestStore(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	e, unlock, err := s.New("Crio 1.34/runc!")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(e.Path("env.json")); err != nil {
		t.Errorf("a new environment has no record: %v", err)
	}
	if !strings.HasPrefix(e.ID, "crio-1-34-runc-") || e.State != StateCreating {
		t.Errorf("env %+v", e)
	}
	if _, err := e.AddVolume(VolumeDisk); err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddVolume(VolumeDisk); err != nil || len(e.Volumes) != 1 {
		t.Errorf("volumes %v %v", e.Volumes, err)
	}
	got, err := s.Load(e.ID[:len(e.ID)-3])
	if err != nil || got.ID != e.ID || got.Volumes[0] != VolumeName(e.ID, VolumeDisk) {
		t.Fatalf("load by prefix: %+v %v", got, err)
	}
	e2, unlock2, _ := s.New("crio")
	unlock2()
	if _, err := s.Load("crio-"); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguous: %v", err)
	}
	if _, err := s.Load("nope"); !fault.Is(err, fault.Input) {
		t.Errorf("missing: %v", err)
	}
	if err := os.WriteFile(e2.Path("env.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list %v %v", list, err)
	}
	corrupt := 0
	for _, x := range list {
		if x.Corrupt != "" {
			corrupt++
		}
	}
	if corrupt != 1 {
		t.Errorf("%d corrupt records, want 1", corrupt)
	}
	if err := e.Remove(); err != nil {
		t.Fatal(err)
	}
	if envs, _ := (Store{Dir: t.TempDir() + "/none"}).List(); envs != nil {
		t.Error("a missing state directory has environments")
	}
}

func TestLock(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	e, unlock, err := s.New("p")
	if err != nil {
		t.Fatal(err)
	}
	// A new environment is locked by its maker from the start.
	start := time.Now()
	_, err = e.Lock(context.Background(), 0)
	var busy *BusyError
	if !errors.As(err, &busy) || time.Since(start) > 500*time.Millisecond {
		t.Errorf("busy: %v after %s", err, time.Since(start))
	}
	_, err = e.Lock(context.Background(), 300*time.Millisecond)
	if !errors.As(err, &busy) {
		t.Errorf("waited lock: %v", err)
	}
	unlock()
	again, err := e.Lock(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Share(); !errors.As(err, &busy) {
		t.Errorf("a session beside a run: %v", err)
	}
	again()
	// Sessions share a kept environment; down and gc wait for them.
	s1, err1 := e.Share()
	s2, err2 := e.Share()
	if err1 != nil || err2 != nil {
		t.Fatalf("two sessions: %v %v", err1, err2)
	}
	if _, err := e.Lock(context.Background(), 0); !errors.As(err, &busy) {
		t.Errorf("down beside a session: %v", err)
	}
	s1()
	s2()
	last, err := e.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	last()
}

func TestDefaultDir(t *testing.T) {
	tmp := t.TempDir()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"ENVCTL_STATE_DIR", map[string]string{"ENVCTL_STATE_DIR": "/x/state"}, "/x/state"},
		{"XDG_STATE_HOME", map[string]string{"ENVCTL_STATE_DIR": "", "XDG_STATE_HOME": "/x/xdg"}, "/x/xdg/envctl"},
		// No home: a private directory of this user's, never a shared one.
		{"no home", map[string]string{"ENVCTL_STATE_DIR": "", "XDG_STATE_HOME": "", "HOME": "", "TMPDIR": tmp}, filepath.Join(tmp, fmt.Sprintf("envctl-%d", os.Geteuid()), "state")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := DefaultDir()
			if err != nil || got != tt.want {
				t.Errorf("%q %v, want %q", got, err, tt.want)
			}
		})
	}
	// Another user's directory (or a link) where the private one goes is refused.
	if os.Geteuid() == 0 {
		t.Setenv("ENVCTL_STATE_DIR", "")
		t.Setenv("XDG_STATE_HOME", "")
		t.Setenv("HOME", "")
		other := t.TempDir()
		t.Setenv("TMPDIR", other)
		root := filepath.Join(other, fmt.Sprintf("envctl-%d", os.Geteuid()))
		_ = os.Mkdir(root, 0o777)
		_ = os.Chown(root, 4242, 4242)
		if _, err := DefaultDir(); err == nil || !strings.Contains(err.Error(), "belongs to user 4242") {
			t.Errorf("another user's directory: %v", err)
		}
	}
}

// Many makers at once never share an ID, and nothing is left behind
// under a hidden name.
func TestNewConcurrent(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			e, unlock, err := s.New("p")
			if err != nil {
				t.Error(err)
				return
			}
			defer unlock()
			mu.Lock()
			defer mu.Unlock()
			if seen[e.ID] {
				t.Errorf("ID %s given twice", e.ID)
			}
			seen[e.ID] = true
		})
	}
	wg.Wait()
	entries, _ := os.ReadDir(s.EnvsDir())
	if len(entries) != 20 {
		t.Errorf("%d entries under envs/, want 20", len(entries))
	}
}

// A maker that died half way leaves a hidden directory; gc removes it
// once its lock is free, never while the maker holds it.
func TestRemoveUnfinished(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	_ = os.MkdirAll(s.EnvsDir(), 0o755)
	dead := filepath.Join(s.EnvsDir(), NewPrefix+"p-dead")
	busy := filepath.Join(s.EnvsDir(), NewPrefix+"p-busy")
	for _, d := range []string{dead, busy} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	held := flock.New(filepath.Join(busy, "lock"))
	if ok, err := held.TryLock(); !ok || err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	removed, err := s.RemoveUnfinished()
	if err != nil || len(removed) != 1 || removed[0] != dead {
		t.Errorf("removed %v %v", removed, err)
	}
	if _, err := os.Stat(busy); err != nil {
		t.Error("removed a directory still being made")
	}
}

// gc's RemoveUnfinished never removes a directory New has made but not
// yet locked: the store's making lock closes that window.
func TestRemoveUnfinishedWaitsForNew(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	removed := make(chan []string, 1)
	afterMkdir = func() {
		go func() {
			r, _ := s.RemoveUnfinished()
			removed <- r
		}()
		time.Sleep(200 * time.Millisecond) // gc runs in the window
	}
	defer func() { afterMkdir = nil }()
	e, unlock, err := s.New("p")
	if err != nil {
		t.Fatalf("New lost its directory to gc: %v", err)
	}
	defer unlock()
	if r := <-removed; len(r) != 0 {
		t.Errorf("gc removed %v", r)
	}
	if _, err := os.Stat(filepath.Join(s.EnvsDir(), e.ID, "env.json")); err != nil {
		t.Errorf("the new environment is gone: %v", err)
	}
	if fi, _ := os.Stat(s.EnvsDir()); fi.Mode().Perm() != 0o700 {
		t.Errorf("envs/ is %v, want 0700", fi.Mode().Perm())
	}
}
