package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// roots are the distinct entries the paths lie in, in order (paths
// outside the cache's entries are left out).
func (c *Cache) roots(paths []string) []string {
	var out []string
	for _, p := range paths {
		if root := c.entryRoot(p); root != "" && !slices.Contains(out, root) {
			out = append(out, root)
		}
	}
	return out
}

func (c *Cache) holdFile(root string) string {
	h := sha256.Sum256([]byte(root))
	return filepath.Join(c.Dir, "locks", "hold-"+hex.EncodeToString(h[:8])+".lock")
}

// Hold marks the entries the given paths lie in as in use by this process
// until release (paths outside the cache's entries are ignored). Take the
// hold before checking an entry, and use it only after: a remover claims
// first, so an entry found whole under a hold stays whole. A path that is
// not there once held is a *GoneError: the entry was removed before the
// hold, and must be fetched or built again.
func (c *Cache) Hold(paths ...string) (release func(), err error) {
	var locks []*flock.Flock
	release = func() {
		for _, l := range locks {
			_ = l.Unlock()
		}
	}
	for _, root := range c.roots(paths) {
		l := flock.New(c.holdFile(root))
		if err := l.RLock(); err != nil {
			release()
			return func() {}, fault.Infraf("hold %s: %w", root, err)
		}
		locks = append(locks, l)
	}
	for _, p := range paths {
		if c.entryRoot(p) == "" {
			continue
		}
		if _, err := os.Lstat(p); err != nil {
			release()
			return func() {}, &GoneError{Path: p}
		}
	}
	return release, nil
}

// GoneError is a cache entry that was not there when it was held: removed
// (by cache gc, image prune or verify) since it was found.
type GoneError struct{ Path string }

func (e *GoneError) Error() string {
	return fmt.Sprintf("%s was removed from the cache (by cache gc, image prune or verify) while it was being used; run again to fetch or build it", e.Path)
}

// FaultClass implements fault.Classed.
func (e *GoneError) FaultClass() fault.Class { return fault.Infra }

// InUseError is an entry a running envctl holds, or a kept VM pins: it is
// left alone.
type InUseError struct {
	Path string
	// PinnedBy is the kept environment that pins it ("" for a hold).
	PinnedBy string
}

func (e *InUseError) Error() string {
	if e.PinnedBy != "" {
		return fmt.Sprintf("%s is in use by the kept VM recorded in %s; left alone (`envctl down` that VM to free it)", e.Path, e.PinnedBy)
	}
	return fmt.Sprintf("%s is in use by a running envctl; left alone", e.Path)
}

// FaultClass implements fault.Classed.
func (e *InUseError) FaultClass() fault.Class { return fault.Infra }

// Claim takes an entry for removal: an exclusive lock on its hold file,
// which no run may hold. It fails with *InUseError when a run holds it.
// Every remover of an entry, in this package or outside it (the saved
// guest store), claims it first.
func (c *Cache) Claim(path string) (unlock func(), err error) { return c.claim(path) }

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
	if owner := c.pinnedBy(root); owner != "" {
		_ = l.Unlock()
		return nil, &InUseError{Path: path, PinnedBy: owner}
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

// HoldChecked holds the entries the paths lie in (Hold), then proves each
// whole under the hold: a blob against its digest, a sealed directory
// against its manifest (both by stamp, rehashing only what moved). An
// entry found whole here stays whole until release, since every remover
// claims first. This is the order to use: hold, then check, then use.
func (c *Cache) HoldChecked(paths ...string) (release func(), err error) {
	release, err = c.Hold(paths...)
	if err != nil {
		return release, err
	}
	for _, root := range c.roots(paths) {
		if err := c.checkEntry(root); err != nil {
			release()
			return func() {}, err
		}
	}
	return release, nil
}

// checkEntry checks one entry by its root ("blobs/sha256/HEX" or
// "builds/KEY", …).
func (c *Cache) checkEntry(root string) error {
	parts := strings.Split(root, "/")
	if parts[0] == "blobs" {
		d, err := ParseDigest(parts[1] + ":" + parts[2])
		if err != nil {
			return err
		}
		_, err = c.Verify(d)
		if errors.Is(err, fs.ErrNotExist) {
			return &GoneError{Path: filepath.Join(c.Dir, filepath.FromSlash(root))}
		}
		return err
	}
	_, err := CheckTree(filepath.Join(c.Dir, filepath.FromSlash(root)))
	return err
}
