package warm

import (
	"sync"

	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

// GuestSetupVersion changes whenever what envctl does to a guest before
// the test changes (crio.Install's files and steps): older states are
// then never used.
const GuestSetupVersion = "1"

// BuildIdentity is the identity of this envctl build: the sha256 of its
// own executable. Every key includes it, so that a state saved by one
// build (whose guest setup may differ in ways no version number was
// bumped for) is never restored by another.
var BuildIdentity = sync.OnceValue(func() string {
	self, err := os.Executable()
	if err == nil {
		if d, err := cache.FileDigest(self, digest.SHA256); err == nil {
			return d.Encoded()[:16]
		}
	}
	return "unknown"
})

// buildIdentity is BuildIdentity (another in tests).
var buildIdentity = BuildIdentity

// Key hashes what determines a warm state; parts are "name=value" lines.
func Key(parts ...string) string {
	h := sha256.Sum256([]byte("warm " + GuestSetupVersion + " build " + buildIdentity() + "\n" + strings.Join(parts, "\n")))
	return hex.EncodeToString(h[:])[:32]
}

// State is one saved guest in the store.
type State struct {
	vm.WarmState
	Key     string    `json:"key"`
	Profile string    `json:"profile"`
	Cell    string    `json:"cell"`
	Created time.Time `json:"created"`
	// Verified is what the drift check found in the guest before it was
	// saved (provision/crio's report of it), sealed with the state: a
	// restore proves the files it vouched for and takes their versions
	// from it.
	Verified json.RawMessage `json:"verified,omitempty"`
	Dir      string          `json:"-"`
	Size     int64           `json:"-"`
}

// Store keeps warm states in a directory of the user's cache: Dir is
// cache/warm or cache/boot. With Cache set, a state in use is held
// (cache gc leaves it alone).
type Store struct {
	Dir   string
	Cache *cache.Cache
}

// root is the cache the stores live in: every disk a state needs is in
// one of its stores.
func (s Store) root() string { return filepath.Dir(filepath.Clean(s.Dir)) }

// inside reports whether path lies in a store of the cache (no "..").
func (s Store) inside(path string) bool {
	rel, err := filepath.Rel(s.root(), filepath.Clean(path))
	return err == nil && filepath.IsAbs(path) && !strings.HasPrefix(rel, "..") && strings.Count(filepath.ToSlash(rel), "/") == 2
}

const metaFile = "warm.json"

// Lookup finds a complete state by key.
func (s Store) Lookup(key string) (State, bool) {
	st, err := s.read(filepath.Join(s.Dir, key))
	return st, err == nil && st.Key == key
}

func (s Store) read(dir string) (State, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("%s: %w", dir, err)
	}
	st.Dir = dir
	for _, p := range []string{st.Save, st.Disk, st.UserKey, st.HostKey} {
		fi, err := os.Stat(p)
		if err != nil || filepath.Dir(p) != dir {
			return st, fmt.Errorf("%s: incomplete (%v)", dir, err)
		}
		st.Size += fi.Size()
	}
	// A state on a post-boot state that is gone is of no use; one that
	// names a disk outside the stores is not envctl's.
	for _, p := range st.Needs {
		if !s.inside(p) {
			return st, fmt.Errorf("%s: it needs %s, which is not in a store of %s", dir, p, s.root())
		}
		if _, err := os.Stat(p); err != nil {
			return st, fmt.Errorf("%s: the post-boot state it is based on is gone (%v)", dir, err)
		}
	}
	return st, nil
}

// Check proves, before a restore, that the state and every state it needs
// are as they were saved: each is sealed when saved (a manifest of the
// sha256 of its memory image, disk, keys and record), and checked here as
// every cache entry is on use (cache verify rehashes them all). A state
// that fails is not to be restored.
func (s Store) Check(st State) error {
	if _, err := cache.CheckTree(st.Dir); err != nil {
		return fmt.Errorf("saved state %s: %w", filepath.Base(st.Dir), err)
	}
	for _, p := range st.Needs {
		if !s.inside(p) {
			return fault.Infraf("saved state %s needs %s, outside the stores", filepath.Base(st.Dir), p)
		}
		// Only the disk of a post-boot state is read (as a backing file):
		// its memory image is another cell's business.
		if err := cache.CheckTreeFiles(filepath.Dir(p), filepath.Base(p)); err != nil {
			return fmt.Errorf("saved state %s: the post-boot state it needs: %w", filepath.Base(st.Dir), err)
		}
	}
	return nil
}

// Use holds a state and the states it needs for as long as a guest runs
// on them: cache gc and verify leave them alone.
func (s Store) Use(dir string, needs ...string) (release func(), err error) {
	if s.Cache == nil {
		return func() {}, nil
	}
	paths := []string{dir}
	for _, p := range needs {
		paths = append(paths, filepath.Dir(p))
	}
	return s.Cache.Hold(paths...)
}

// claim takes a state for removal (cache.Cache.Claim): it fails with
// *cache.InUseError while a run holds it.
func (s Store) claim(dir string) (unclaim func(), err error) {
	if s.Cache == nil {
		return func() {}, nil
	}
	return s.Cache.Claim(dir)
}

// removeClaimed removes a state's directory under its claim.
func (s Store) removeClaimed(dir string) error {
	unclaim, err := s.claim(dir)
	if err != nil {
		return err
	}
	defer unclaim()
	if err := os.RemoveAll(dir); err != nil {
		return fault.Infraf("saved states: %w", err)
	}
	return nil
}

// seal records the sha256 of every file of a state being committed.
func seal(dir string) error {
	if _, err := cache.SealTree(dir); err != nil {
		return fault.Infraf("saved states: %w", err)
	}
	return nil
}

// Begin makes a directory to save a state into; commit records it under
// key (atomically: a half-written state is never found), abort drops it.
func (s Store) Begin(key string) (dir string, commit func(State) error, abort func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", nil, nil, fault.Infraf("warm states: %w", err)
	}
	tmp, err := os.MkdirTemp(s.Dir, ".new-"+key+"-")
	if err != nil {
		return "", nil, nil, fault.Infraf("warm states: %w", err)
	}
	final := filepath.Join(s.Dir, key)
	commit = func(st State) error {
		st.Key, st.Created = key, time.Now().UTC().Truncate(time.Second)
		// Paths as they will be after the rename.
		for _, p := range []*string{&st.Save, &st.Disk, &st.UserKey, &st.HostKey} {
			*p = filepath.Join(final, filepath.Base(*p))
		}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, metaFile), b, 0o600); err != nil {
			return fault.Infraf("warm states: %w", err)
		}
		if err := seal(tmp); err != nil {
			return err
		}
		// A state of the same key that a run still restores from is
		// left to it: this one is dropped instead.
		unclaim, err := s.claim(final)
		if err != nil {
			return err
		}
		defer unclaim()
		_ = os.RemoveAll(final)
		if err := os.Rename(tmp, final); err != nil {
			return fault.Infraf("warm states: %w", err)
		}
		return nil
	}
	abort = func() { _ = os.RemoveAll(tmp) }
	return tmp, commit, abort, nil
}

// MaxStates is how many warm states a store keeps; saving another drops
// the oldest (each is the guest's memory and disk, about 0.7 GB).
const MaxStates = 4

// Prune drops the oldest states beyond max, and half-written ones.
func (s Store) Prune(max int) ([]string, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b State) int { return b.Created.Compare(a.Created) })
	var gone []string
	var errs []error
	// States a dead run began and never committed.
	if ents, err := os.ReadDir(s.Dir); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".new-") && time.Since(fi.ModTime()) > time.Hour {
				if err := s.removeClaimed(filepath.Join(s.Dir, e.Name())); err == nil {
					gone = append(gone, filepath.Join(s.Dir, e.Name()))
				}
			}
		}
	}
	for i, st := range all {
		if st.Key != "" && i < max {
			continue
		}
		if _, err := os.Stat(filepath.Join(st.Dir, metaFile)); st.Key == "" && errors.Is(err, fs.ErrNotExist) {
			if fi, err := os.Stat(st.Dir); err == nil && time.Since(fi.ModTime()) < time.Hour {
				continue // perhaps being saved into right now (BeginIn)
			}
		}
		if err := s.removeClaimed(st.Dir); err != nil {
			var inUse *cache.InUseError
			if !errors.As(err, &inUse) { // a held state stays, and is not an error
				errs = append(errs, err)
			}
			continue
		}
		gone = append(gone, st.Dir)
	}
	if len(errs) > 0 {
		return gone, fault.Infraf("warm states: %w", errors.Join(errs...))
	}
	return gone, nil
}

// Remove drops a state (a failed restore: it is never tried again).
func (s Store) Remove(key string) error {
	return s.removeClaimed(filepath.Join(s.Dir, key))
}

// List returns every state, complete or not (Key is "" for a damaged one).
func (s Store) List() ([]State, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.Infraf("warm states: %w", err)
	}
	var out []State
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".new-") {
			continue
		}
		dir := filepath.Join(s.Dir, e.Name())
		st, err := s.read(dir)
		if err != nil {
			st = State{Dir: dir}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Dir, b.Dir) })
	return out, nil
}

// Post-boot states. Matrix cells and bisect probes on one image and VM
// shape differ only in what gets installed, so the guest as it was when
// SSH first answered is saved once and each of them starts from it. A
// save restores only under its own domain name and UUID, so a key has
// BootSlots states, each under its own domain name, and a run holds the
// name (a lock file) for as long as its domain lives.

// BootSlots is how many post-boot states a key has: as many cells of one
// image can start from one at the same time.
const BootSlots = 2

// MaxBootStates is how many post-boot states a store keeps.
const MaxBootStates = 4

// SlotDomain is the domain name of slot i of a post-boot key.
func SlotDomain(key string, i int) string { return fmt.Sprintf("envctl-boot-%.8s-%d", key, i) }

// BeginIn makes a directory for a state that is saved in place: the
// running guest's disk is backed by the disk kept there, so it never
// moves; commit records it (a directory without a record is incomplete).
func (s Store) BeginIn(key string) (dir string, commit func(State) error, abort func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", nil, nil, fault.Infraf("saved states: %w", err)
	}
	dir, err = os.MkdirTemp(s.Dir, key+"-")
	if err != nil {
		return "", nil, nil, fault.Infraf("saved states: %w", err)
	}
	commit = func(st State) error {
		st.Key, st.Created = key, time.Now().UTC().Truncate(time.Second)
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, metaFile), b, 0o600); err != nil {
			return fault.Infraf("saved states: %w", err)
		}
		return seal(dir)
	}
	abort = func() { _ = os.RemoveAll(dir) }
	return dir, commit, abort, nil
}

// Find returns the newest complete state of key saved under domain.
func (s Store) Find(key, domain string) (State, bool) {
	all, err := s.List()
	if err != nil {
		return State{}, false
	}
	var best State
	for _, st := range all {
		if st.Key == key && st.Domain == domain && st.Created.After(best.Created) {
			best = st
		}
	}
	return best, best.Key != ""
}

// RemoveDir drops one state by its directory.
func (s Store) RemoveDir(dir string) error {
	if filepath.Dir(dir) != filepath.Clean(s.Dir) {
		return fault.Infraf("saved states: %s is not in %s", dir, s.Dir)
	}
	return s.removeClaimed(dir)
}

// Hold takes the domain name for this process (until release): ok is
// false when another run holds it.
func (s Store) Hold(domain string) (release func(), ok bool, err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, false, fault.Infraf("saved states: %w", err)
	}
	l := flock.New(filepath.Join(s.Dir, ".hold-"+domain))
	ok, err = l.TryLock()
	if err != nil {
		return nil, false, fault.Infraf("saved states: hold %s: %w", domain, err)
	}
	if !ok {
		return nil, false, nil
	}
	return func() { _ = l.Unlock() }, true, nil
}
