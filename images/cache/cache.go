package cache

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/provision/fault"
)

// Cache is a content-addressed store of verified files.
type Cache struct {
	Dir string
	// Progress receives progress bars; nil keeps downloads quiet.
	Progress io.Writer
	Log      *slog.Logger
}

// DefaultDir is $ENVCTL_CACHE_DIR, else $XDG_CACHE_HOME/envctl, else ~/.cache/envctl.
func DefaultDir() string {
	if d := os.Getenv("ENVCTL_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "envctl")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "envctl")
	}
	return filepath.Join(os.TempDir(), "envctl-cache")
}

// New opens (and creates) a cache directory.
func New(dir string) (*Cache, error) {
	for _, sub := range []string{"blobs", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fault.Infraf("cache %s: %w; set ENVCTL_CACHE_DIR to a writable directory", dir, err)
		}
	}
	return &Cache{Dir: dir, Log: slog.Default()}, nil
}

// Digest is "sha256:HEX" or "sha512:HEX".
type Digest struct {
	Algo string
	Hex  string
}

var digestRE = regexp.MustCompile(`^(sha256|sha512):([0-9a-f]+)$`)

// ParseDigest checks a digest string.
func ParseDigest(s string) (Digest, error) {
	m := digestRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Digest{}, fmt.Errorf("%q is not a digest; write sha256:<64 hex digits> or sha512:<128 hex digits>", s)
	}
	d := Digest{Algo: m[1], Hex: m[2]}
	if want := map[string]int{"sha256": 64, "sha512": 128}[d.Algo]; len(d.Hex) != want {
		return Digest{}, fmt.Errorf("%q: a %s digest has %d hex digits, not %d", s, d.Algo, want, len(d.Hex))
	}
	return d, nil
}

func (d Digest) String() string { return d.Algo + ":" + d.Hex }

// NewHash returns a hash for the digest's algorithm.
func (d Digest) NewHash() hash.Hash {
	if d.Algo == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// Path is where a blob with this digest lives in the cache.
func (c *Cache) Path(d Digest) string {
	return filepath.Join(c.Dir, "blobs", d.Algo, d.Hex)
}

// Has reports whether the blob is present.
func (c *Cache) Has(d Digest) (string, bool) {
	p := c.Path(d)
	_, err := os.Stat(p)
	return p, err == nil
}

// Lock takes an exclusive file lock named name, waiting until ctx ends.
func (c *Cache) Lock(ctx context.Context, name string) (func(), error) {
	path := filepath.Join(c.Dir, "locks", strings.NewReplacer("/", "_", ":", "-").Replace(name)+".lock")
	fl := flock.New(path)
	ok, err := fl.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !ok {
		if err == nil {
			err = ctx.Err()
		}
		return nil, fault.Infraf("cache lock %s: %w", path, err)
	}
	return func() { _ = fl.Unlock() }, nil
}

// FileDigest hashes a file with the digest's algorithm.
func FileDigest(path, algo string) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	d := Digest{Algo: algo}
	h := d.NewHash()
	if _, err := io.Copy(h, f); err != nil {
		return Digest{}, fmt.Errorf("hashing %s: %w", path, err)
	}
	d.Hex = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// MismatchError reports a file whose digest is not the pinned one.
type MismatchError struct {
	What     string // URL or path
	Expected Digest
	Actual   Digest
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: checksum mismatch: expected %s, received %s; the file was discarded and did not enter the cache. If upstream re-published it on purpose, run `envctl lock` again; otherwise suspect the mirror or the network",
		e.What, e.Expected, e.Actual)
}

// commit verifies tmp against want and renames it into the cache.
func (c *Cache) commit(tmp string, want Digest, what string) (string, error) {
	got, err := FileDigest(tmp, want.Algo)
	if err != nil {
		os.Remove(tmp)
		return "", fault.Infraf("%s: %w", what, err)
	}
	if got.Hex != want.Hex {
		os.Remove(tmp)
		return "", &fault.Error{Kind: fault.Infra, Err: &MismatchError{What: what, Expected: want, Actual: got}}
	}
	dst := c.Path(want)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fault.Infraf("cache %s: %w", c.Dir, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fault.Infraf("cache %s: %w", dst, err)
	}
	return dst, nil
}

// Import copies (or moves, when move is set) a local file into the cache,
// returning its sha256 digest. Used for locally built images and artifacts.
func (c *Cache) Import(ctx context.Context, src string, move bool) (Digest, string, error) {
	d, err := FileDigest(src, "sha256")
	if err != nil {
		return Digest{}, "", fault.Infraf("import %s: %w", src, err)
	}
	unlock, err := c.Lock(ctx, d.String())
	if err != nil {
		return Digest{}, "", err
	}
	defer unlock()
	if p, ok := c.Has(d); ok {
		if move {
			os.Remove(src)
		}
		return d, p, nil
	}
	tmp := filepath.Join(c.Dir, "tmp", "import-"+d.Hex)
	if move {
		if err := os.Rename(src, tmp); err != nil {
			return Digest{}, "", fault.Infraf("import %s: %w", src, err)
		}
	} else if err := copyFile(src, tmp); err != nil {
		os.Remove(tmp)
		return Digest{}, "", diskError(c.Dir, fmt.Errorf("import %s: %w", src, err))
	}
	p, err := c.commit(tmp, d, src)
	return d, p, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// diskError turns "no space left on device" into advice.
func diskError(dir string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fault.Infraf("%w: the cache at %s is full; free space there or point ENVCTL_CACHE_DIR at a larger disk, then retry (nothing partial was kept in the cache)", err, dir)
	}
	return fault.AsInfra(err)
}

// Blob is one cached file.
type Blob struct {
	Digest  string    `json:"digest"`
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modified"`
}

// List returns every blob, newest first.
func (c *Cache) List() ([]Blob, error) {
	var out []Blob
	for _, algo := range []string{"sha256", "sha512"} {
		entries, err := os.ReadDir(filepath.Join(c.Dir, "blobs", algo))
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			out = append(out, Blob{Digest: algo + ":" + e.Name(), Path: filepath.Join(c.Dir, "blobs", algo, e.Name()), Size: info.Size(), ModTime: info.ModTime()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime.After(out[j].ModTime) })
	return out, nil
}

// Remove deletes a blob.
func (c *Cache) Remove(ctx context.Context, d Digest) error {
	unlock, err := c.Lock(ctx, d.String())
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(c.Path(d)); err != nil && !os.IsNotExist(err) {
		return fault.Infraf("remove %s: %w", c.Path(d), err)
	}
	return nil
}
