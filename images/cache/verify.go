package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
)

// Stamp is what cheaply proves a file unchanged since it was hashed: its
// size, modification and change times, inode and device. Any write, even
// one that restores the modification time, moves the change time.
type Stamp struct {
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
	Inode uint64 `json:"inode"`
	Dev   uint64 `json:"dev"`
}

// StampOf reads a file's stamp.
func StampOf(fi fs.FileInfo) Stamp {
	s := Stamp{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Ctime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec).UnixNano()
		s.Inode, s.Dev = st.Ino, uint64(st.Dev) //nolint:unconvert // Dev is uint32 on some platforms
	}
	return s
}

// CorruptError is a cached file whose content is no longer what was
// verified when it entered the cache.
type CorruptError struct {
	Path     string
	Expected digest.Digest
	Actual   digest.Digest
	// Why is set instead of Actual when there is nothing to hash.
	Why string
}

func (e *CorruptError) Error() string {
	if e.Why != "" {
		return fmt.Sprintf("cached file %s is corrupt: %s", e.Path, e.Why)
	}
	return fmt.Sprintf("cached file %s is corrupt: expected %s, found %s", e.Path, e.Expected, e.Actual)
}

// FaultClass implements fault.Classed.
func (e *CorruptError) FaultClass() fault.Class { return fault.Infra }

func (c *Cache) stampPath(d digest.Digest) string {
	return filepath.Join(c.Dir, "stamps", d.Algorithm().String(), d.Encoded())
}

// writeStamp records that the blob at p was verified as it is now.
func (c *Cache) writeStamp(d digest.Digest, p string) {
	fi, err := os.Stat(p)
	if err != nil {
		return
	}
	b, _ := json.Marshal(StampOf(fi))
	sp := c.stampPath(d)
	if err := os.MkdirAll(filepath.Dir(sp), 0o755); err == nil {
		err = atomicfile.Write(sp, b, 0o644)
		if err != nil {
			c.log().Debug("cache stamp", "blob", p, "err", err)
		}
	}
}

// Verify returns the path of a present, intact blob. The blob is rehashed
// unless its stamp proves it unchanged since it was last verified. A
// missing blob is fs.ErrNotExist; a corrupt one is removed and reported
// as a *CorruptError naming the file, so that the caller fetches it again.
func (c *Cache) Verify(d digest.Digest) (string, error) { return c.verify(d, false) }

// VerifyFull is Verify that rehashes the blob, stamp or not.
func (c *Cache) VerifyFull(d digest.Digest) (string, error) { return c.verify(d, true) }

func (c *Cache) verify(d digest.Digest, full bool) (string, error) {
	p := c.Path(d)
	fi, err := os.Stat(p)
	if err != nil {
		return "", fs.ErrNotExist
	}
	if b, err := os.ReadFile(c.stampPath(d)); err == nil && !full {
		var s Stamp
		if json.Unmarshal(b, &s) == nil && s == StampOf(fi) {
			return p, nil
		}
	}
	start := time.Now()
	got, err := FileDigest(p, d.Algorithm())
	if err != nil {
		return "", fault.Infraf("cache: %w", err)
	}
	if got != d {
		// Removed so that it is fetched again, unless a run holds it:
		// a fetch then renames a good copy over its name.
		if unclaim, cerr := c.claim(p); cerr == nil {
			_ = os.Remove(p)
			_ = os.Remove(c.stampPath(d))
			unclaim()
		}
		return "", &CorruptError{Path: p, Expected: d, Actual: got}
	}
	c.log().Debug("cache: rehashed a blob whose stamp changed", "blob", p, "took", time.Since(start))
	c.writeStamp(d, p)
	return p, nil
}

// Has reports whether an intact blob is present. A corrupt blob is
// removed, with a warning naming it, and reported absent, so that it is
// fetched again rather than used.
func (c *Cache) Has(d digest.Digest) (string, bool) {
	p, err := c.Verify(d)
	var corrupt *CorruptError
	if errors.As(err, &corrupt) {
		c.log().Warn(corrupt.Error() + "; removed it: it is fetched again")
	}
	return p, err == nil
}

// CleanTemp removes temporary files (partial downloads, unfinished
// imports and builds) older than age, and returns what it removed.
func (c *Cache) CleanTemp(age time.Duration) ([]string, error) {
	dir := filepath.Join(c.Dir, "tmp")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.Infraf("cache %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < age {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// EntryKind is a kind of cache entry.
type EntryKind string

// The entry kinds: verified downloads and imports, archives unpacked
// once, and Go builds.
const (
	EntryBlob     EntryKind = "blob"
	EntryUnpacked EntryKind = "unpacked"
	EntryBuild    EntryKind = "build"
	// EntryWarm is a saved running guest (provision/warm), sealed like a
	// build: checked before it is restored (a failure means another way
	// to start) and by cache verify.
	EntryWarm EntryKind = "warm"
	// EntryBoot is a saved guest just after boot, shared by the cells of
	// one image and VM shape (provision/warm), checked like EntryWarm.
	EntryBoot EntryKind = "boot"
)

// Entry is one thing the cache holds.
type Entry struct {
	Kind EntryKind `json:"kind"`
	// Name is a blob's digest, an unpacked archive's sha256, or a build's key.
	Name string `json:"name"`
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// TreeDirs maps the sealed directory kinds to their directory in the cache.
var TreeDirs = map[EntryKind]string{EntryUnpacked: "unpacked", EntryBuild: "builds", EntryWarm: "warm", EntryBoot: "boot"}

// Entries lists every blob, unpacked archive and build in the cache.
func (c *Cache) Entries() ([]Entry, error) {
	blobs, err := c.List()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, b := range blobs {
		out = append(out, Entry{Kind: EntryBlob, Name: b.Digest.String(), Path: b.Path, Size: b.Size})
	}
	for _, kind := range []EntryKind{EntryUnpacked, EntryBuild, EntryWarm, EntryBoot} {
		dir := filepath.Join(c.Dir, TreeDirs[kind])
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), ".new-") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			out = append(out, Entry{Kind: kind, Name: e.Name(), Path: p, Size: treeSize(p)})
		}
	}
	return out, nil
}

func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// VerifyEntry rehashes one entry in full. A corrupt entry is removed (so
// that it is fetched or built again) and reported as a *CorruptError.
func (c *Cache) VerifyEntry(e Entry) error {
	if e.Kind == EntryBlob {
		d, err := ParseDigest(e.Name)
		if err != nil {
			return err
		}
		_, err = c.VerifyFull(d)
		return err
	}
	if beingWritten(e) {
		return nil // a saved guest still being written has no manifest yet
	}
	if _, err := VerifyTree(e.Path); err != nil {
		if IsCorrupt(err) {
			unclaim, cerr := c.claim(e.Path)
			if cerr != nil {
				return fmt.Errorf("%w (%v)", err, cerr)
			}
			defer unclaim()
			_ = os.RemoveAll(e.Path)
		}
		return err
	}
	return nil
}

// RemoveEntry deletes an entry under its lock.
func (c *Cache) RemoveEntry(ctx context.Context, e Entry) error {
	if e.Kind == EntryBlob {
		d, err := ParseDigest(e.Name)
		if err != nil {
			return err
		}
		return c.Remove(ctx, d)
	}
	if beingWritten(e) {
		return &InUseError{Path: e.Path}
	}
	unclaim, err := c.claim(e.Path)
	if err != nil {
		return err
	}
	defer unclaim()
	if err := os.RemoveAll(e.Path); err != nil {
		return fault.Infraf("remove %s: %w", e.Path, err)
	}
	return nil
}
