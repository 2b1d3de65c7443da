package cache

import (
	"cmp"
	"context"
	_ "crypto/sha256" // digest algorithms
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/privatedir"
)

// Cache is a content-addressed store of verified files.
type Cache struct {
	Dir string
	// Progress receives progress bars; nil keeps downloads quiet.
	Progress io.Writer
	Log      *slog.Logger
}

// DefaultDir is $ENVCTL_CACHE_DIR, else $XDG_CACHE_HOME/envctl, else
// ~/.cache/envctl, else (no home) a private per-user directory under the
// temporary directory (privatedir).
func DefaultDir() (string, error) {
	if d := os.Getenv("ENVCTL_CACHE_DIR"); d != "" {
		return d, nil
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "envctl"), nil
	}
	d, err := privatedir.Fallback("cache")
	if err != nil {
		return "", fault.Infraf("cache directory: %w", err)
	}
	return d, nil
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

// ParseDigest checks a digest string: sha256:<64 hex> or sha512:<128 hex>.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("%q is not a digest (%v); write sha256:<64 hex digits> or sha512:<128 hex digits>", s, err)
	}
	return d, nil
}

// Path is where a blob with this digest lives in the cache.
func (c *Cache) Path(d digest.Digest) string {
	return filepath.Join(c.Dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// Lock takes an exclusive file lock named name, waiting until ctx ends.
func (c *Cache) Lock(ctx context.Context, name string) (func(), error) {
	path := filepath.Join(c.Dir, "locks", strings.NewReplacer("/", "_", ":", "-").Replace(name)+".lock")
	fl := flock.New(path)
	ok, err := fl.TryLockContext(ctx, 100*time.Millisecond)
	if ctx.Err() != nil {
		return nil, fault.Infraf("%w (while waiting for the cache lock %s)", context.Cause(ctx), path)
	}
	if err != nil || !ok {
		return nil, fault.Infraf("cache lock %s: %w", path, cmp.Or(err, ctx.Err()))
	}
	return func() { _ = fl.Unlock() }, nil
}

// FileDigest hashes a file with an algorithm (digest.SHA256, digest.SHA512).
func FileDigest(path string, algo digest.Algorithm) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := algo.FromReader(f)
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return d, nil
}

// MismatchError reports a file whose digest is not the pinned one.
type MismatchError struct {
	What     string // URL or path
	Expected digest.Digest
	Actual   digest.Digest
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: checksum mismatch: expected %s, received %s; the file was discarded and did not enter the cache. If upstream re-published it on purpose, run `envctl lock` again; otherwise suspect the mirror or the network",
		e.What, e.Expected, e.Actual)
}

// FaultClass implements fault.Classed.
func (e *MismatchError) FaultClass() fault.Class { return fault.Infra }

// commit verifies tmp against want, syncs it, and renames it into the cache.
func (c *Cache) commit(tmp string, want digest.Digest, what string) (string, error) {
	got, err := FileDigest(tmp, want.Algorithm())
	if err != nil {
		_ = os.Remove(tmp)
		return "", fault.Infraf("%s: %w", what, err)
	}
	if got != want {
		_ = os.Remove(tmp)
		return "", &MismatchError{What: what, Expected: want, Actual: got}
	}
	if err := syncFile(tmp); err != nil {
		_ = os.Remove(tmp)
		return "", diskError(c.Dir, fmt.Errorf("%s: %w", what, err))
	}
	dst := c.Path(want)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fault.Infraf("cache %s: %w", c.Dir, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return "", fault.Infraf("cache %s: %w", dst, err)
	}
	c.writeStamp(want, dst)
	return dst, nil
}

func (c *Cache) log() *slog.Logger { return cmp.Or(c.Log, slog.Default()) }

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Import copies (or moves, when move is set) a local file into the cache,
// returning its sha256 digest. Used for locally built images and artifacts.
func (c *Cache) Import(ctx context.Context, src string, move bool) (digest.Digest, string, error) {
	d, err := FileDigest(src, digest.SHA256)
	if err != nil {
		return "", "", fault.Infraf("import %s: %w", src, err)
	}
	unlock, err := c.Lock(ctx, d.String())
	if err != nil {
		return "", "", err
	}
	defer unlock()
	if p, ok := c.Has(d); ok {
		if move {
			_ = os.Remove(src)
		}
		return d, p, nil
	}
	tmp := filepath.Join(c.Dir, "tmp", "import-"+d.Encoded())
	if move {
		if err := os.Rename(src, tmp); err != nil {
			return "", "", fault.Infraf("import %s: %w", src, err)
		}
	} else if err := copyFile(src, tmp); err != nil {
		_ = os.Remove(tmp)
		return "", "", diskError(c.Dir, fmt.Errorf("import %s: %w", src, err))
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
	Digest  digest.Digest `json:"digest"`
	Path    string        `json:"path"`
	Size    int64         `json:"size"`
	ModTime time.Time     `json:"modified"`
}

// List returns every blob, newest first.
func (c *Cache) List() ([]Blob, error) {
	var out []Blob
	for _, algo := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		entries, err := os.ReadDir(filepath.Join(c.Dir, "blobs", algo.String()))
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			d := digest.NewDigestFromEncoded(algo, e.Name())
			if d.Validate() != nil {
				continue
			}
			out = append(out, Blob{Digest: d, Path: c.Path(d), Size: info.Size(), ModTime: info.ModTime()})
		}
	}
	slices.SortFunc(out, func(a, b Blob) int { return b.ModTime.Compare(a.ModTime) })
	return out, nil
}

// Remove deletes a blob.
func (c *Cache) Remove(ctx context.Context, d digest.Digest) error {
	unlock, err := c.Lock(ctx, d.String())
	if err != nil {
		return err
	}
	defer unlock()
	unclaim, err := c.claim(c.Path(d))
	if err != nil {
		return err
	}
	defer unclaim()
	if err := os.Remove(c.Path(d)); err != nil && !os.IsNotExist(err) {
		return fault.Infraf("remove %s: %w", c.Path(d), err)
	}
	_ = os.Remove(c.stampPath(d))
	return nil
}
