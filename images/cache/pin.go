package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
)

// Pins. A kept VM boots from cache entries (its base image, kernel,
// initrd, artifact disk, the saved state it was restored from) long after
// the envctl that made it has exited, so a hold, which lives as long as a
// process, is not enough. A pin records those entries for an owner: a
// directory (the kept environment's record) whose existence keeps the
// pin. When the environment is removed (`envctl down`, or `envctl gc`
// once its domain is gone), its directory goes and the pin lapses. Every
// claim, and so every remover, honours pins.

// maxPinBytes bounds a pin record read back.
const maxPinBytes = 1 << 20

type pinRecord struct {
	Owner   string   `json:"owner"`
	Entries []string `json:"entries"`
}

func (c *Cache) pinDir() string { return filepath.Join(c.Dir, "pins") }

func (c *Cache) pinFile(owner string) string {
	h := sha256.Sum256([]byte(filepath.Clean(owner)))
	return filepath.Join(c.pinDir(), hex.EncodeToString(h[:8])+".json")
}

// Pin keeps the entries the paths lie in for as long as the directory
// owner exists (paths outside the cache's entries are ignored). Pinning
// the same owner again adds to its pin.
func (c *Cache) Pin(owner string, paths ...string) error {
	owner = filepath.Clean(owner)
	rec := pinRecord{Owner: owner}
	if old, err := readPin(c.pinFile(owner)); err == nil && old.Owner == owner {
		rec.Entries = old.Entries
	}
	for _, p := range paths {
		if root := c.entryRoot(p); root != "" && !slices.Contains(rec.Entries, root) {
			rec.Entries = append(rec.Entries, root)
		}
	}
	slices.Sort(rec.Entries)
	if err := os.MkdirAll(c.pinDir(), 0o755); err != nil {
		return fault.Infraf("pin: %w", err)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := atomicfile.Write(c.pinFile(owner), b, 0o644); err != nil {
		return fault.Infraf("pin %s: %w", owner, err)
	}
	return nil
}

// Unpin drops owner's pin.
func (c *Cache) Unpin(owner string) error {
	if err := os.Remove(c.pinFile(owner)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fault.Infraf("unpin %s: %w", owner, err)
	}
	return nil
}

// Pinned returns the live pins: owner → the entries it keeps. A pin whose
// owner is gone has lapsed and is removed here.
func (c *Cache) Pinned() map[string][]string {
	out := map[string][]string{}
	ents, err := os.ReadDir(c.pinDir())
	if err != nil {
		return out
	}
	for _, e := range ents {
		p := filepath.Join(c.pinDir(), e.Name())
		rec, err := readPin(p)
		if err != nil {
			c.log().Warn("cache: unreadable pin record; ignored", "path", p, "err", err)
			continue
		}
		if _, err := os.Stat(rec.Owner); errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(p)
			continue
		}
		out[rec.Owner] = rec.Entries
	}
	return out
}

// pinnedBy names the owner that pins an entry root ("" for none).
func (c *Cache) pinnedBy(root string) string {
	for owner, roots := range c.Pinned() {
		if slices.Contains(roots, root) {
			return owner
		}
	}
	return ""
}

func readPin(path string) (pinRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return pinRecord{}, err
	}
	defer f.Close()
	var rec pinRecord
	if err := json.NewDecoder(io.LimitReader(f, maxPinBytes)).Decode(&rec); err != nil {
		return pinRecord{}, err
	}
	if !filepath.IsAbs(rec.Owner) {
		return pinRecord{}, errors.New("the owner is not an absolute path")
	}
	return rec, nil
}
