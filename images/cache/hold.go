package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/base/fault"
)

// Holds. A run that uses an entry (a build its cell installs, a blob its
// VM boots from, a saved guest it restores from or writes) holds it for as
// long as it needs it: a shared lock on the entry's hold file. cache gc,
// cache verify and image prune claim an entry (an exclusive lock) before
// they remove it, and leave an entry that is held alone, listing it as in
// use.

// entryRoot is the entry a path in the cache belongs to, relative to the
// cache ("builds/KEY", "blobs/sha256/HEX", "warm/KEY", "boot/DIR"), or ""
// for a path outside the cache's entries.
func (c *Cache) entryRoot(path string) string {
	rel, err := filepath.Rel(c.Dir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return ""
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	n := 2
	if parts[0] == "blobs" {
		n = 3
	} else if !isTreeDir(parts[0]) {
		return ""
	}
	if len(parts) < n {
		return ""
	}
	return strings.Join(parts[:n], "/")
}

func isTreeDir(name string) bool {
	for _, d := range TreeDirs {
		if d == name {
			return true
		}
	}
	return false
}

func (c *Cache) holdFile(root string) string {
	h := sha256.Sum256([]byte(root))
	return filepath.Join(c.Dir, "locks", "hold-"+hex.EncodeToString(h[:8])+".lock")
}

// Hold marks the entries the given paths lie in as in use by this process
// until release (paths outside the cache's entries are ignored).
func (c *Cache) Hold(paths ...string) (release func(), err error) {
	var locks []*flock.Flock
	release = func() {
		for _, l := range locks {
			_ = l.Unlock()
		}
	}
	seen := map[string]bool{}
	for _, p := range paths {
		root := c.entryRoot(p)
		if root == "" || seen[root] {
			continue
		}
		seen[root] = true
		l := flock.New(c.holdFile(root))
		if err := l.RLock(); err != nil {
			release()
			return func() {}, fault.Infraf("hold %s: %w", root, err)
		}
		locks = append(locks, l)
	}
	return release, nil
}

// InUseError is an entry a running envctl holds: it is left alone.
type InUseError struct{ Path string }

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s is in use by a running envctl; left alone", e.Path)
}

// FaultClass implements fault.Classed.
func (e *InUseError) FaultClass() fault.Class { return fault.Infra }

// claim takes an entry for removal: an exclusive lock on its hold file,
// which no run may hold. It fails with *InUseError when a run holds it.
func (c *Cache) claim(path string) (unlock func(), err error) {
	root := c.entryRoot(path)
	if root == "" {
		return func() {}, nil
	}
	l := flock.New(c.holdFile(root))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fault.Infraf("claim %s: %w", root, err)
	}
	if !ok {
		return nil, &InUseError{Path: path}
	}
	return func() { _ = l.Unlock() }, nil
}

// beingWritten reports whether a saved guest's directory is still being
// written: it has no manifest yet and was made within the hour (its saver
// holds it too, but not before it made it).
func beingWritten(e Entry) bool {
	if e.Kind != EntryWarm && e.Kind != EntryBoot {
		return false
	}
	if _, err := os.Stat(filepath.Join(e.Path, ManifestName)); err == nil {
		return false
	}
	fi, err := os.Stat(e.Path)
	return err == nil && time.Since(fi.ModTime()) < time.Hour
}
