package artdisk

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/guest"
)

// Serial is the disk's serial number: the guest finds it as
// /dev/disk/by-id/virtio-<Serial>.
const Serial = "envctl-artifacts"

// Device is where the guest finds the disk.
const Device = "/dev/disk/by-id/virtio-" + Serial

// version changes whenever the disk's layout changes.
const version = "artdisk 1"

// Key identifies a disk by what it holds: every file's guest path and
// sha256, whatever their host paths.
func Key(files []guest.Upload) string {
	lines := make([]string, len(files))
	for i, f := range files {
		lines[i] = strings.TrimPrefix(f.Remote, "/") + " " + f.SHA256
	}
	slices.Sort(lines)
	h := sha256.Sum256([]byte(version + "\n" + strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:])
}

// Disk is a built artifact disk in the cache.
type Disk struct {
	Key    string
	Path   string
	Digest digest.Digest
	Size   int64
	// Built is false when the cache already held it.
	Built bool
}

// Ensure returns the disk holding files, building it into the cache when
// it is missing (or was corrupt, and is then removed by the cache).
func Ensure(ctx context.Context, c *cache.Cache, files []guest.Upload) (Disk, error) {
	key := Key(files)
	index := filepath.Join(c.Dir, "artdisks", key)
	if d, ok := lookup(c, index); ok {
		return d, nil
	}
	unlock, err := c.Lock(ctx, "artdisk-"+key)
	if err != nil {
		return Disk{}, err
	}
	defer unlock()
	if d, ok := lookup(c, index); ok {
		return d, nil
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "tmp"), 0o755); err != nil {
		return Disk{}, fault.Infraf("artifact disk: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(c.Dir, "tmp"), "artdisk-*.tar")
	if err != nil {
		return Disk{}, fault.Infraf("artifact disk: %w", err)
	}
	defer os.Remove(tmp.Name())
	werr := write(ctx, tmp, files)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return Disk{}, werr
	}
	d, p, err := c.Import(ctx, tmp.Name(), true)
	if err != nil {
		return Disk{}, err
	}
	if err := os.MkdirAll(filepath.Dir(index), 0o755); err != nil {
		return Disk{}, fault.Infraf("artifact disk: %w", err)
	}
	if err := os.WriteFile(index, []byte(d.String()+"\n"), 0o644); err != nil {
		return Disk{}, fault.Infraf("artifact disk: %w", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Disk{}, fault.Infraf("artifact disk: %w", err)
	}
	return Disk{Key: key, Path: p, Digest: d, Size: fi.Size(), Built: true}, nil
}

func lookup(c *cache.Cache, index string) (Disk, bool) {
	b, err := os.ReadFile(index)
	if err != nil {
		return Disk{}, false
	}
	d, err := cache.ParseDigest(strings.TrimSpace(string(b)))
	if err != nil {
		return Disk{}, false
	}
	p, ok := c.Has(d)
	if !ok {
		return Disk{}, false
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Disk{}, false
	}
	return Disk{Key: filepath.Base(index), Path: p, Digest: d, Size: fi.Size()}, true
}

// write lays the files out as a tar, sorted by guest path, with fixed
// owners and times, checking every file against its digest as it is
// copied. The size is a multiple of 512 bytes, as a disk's must be.
func write(ctx context.Context, w io.Writer, files []guest.Upload) error {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b guest.Upload) int { return strings.Compare(a.Remote, b.Remote) })
	tw := tar.NewWriter(w)
	for _, f := range sorted {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.SHA256 == "" || !strings.HasPrefix(f.Remote, "/") {
			return fault.Infraf("artifact disk: %s → %s has no digest or no absolute guest path", f.Local, f.Remote)
		}
		if err := addFile(tw, f, strings.TrimPrefix(f.Remote, "/")); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, f guest.Upload, name string) error {
	in, err := os.Open(f.Local)
	if err != nil {
		return fault.Infraf("artifact disk: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fault.Infraf("artifact disk: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fault.Infraf("artifact disk: %s is not a regular file", f.Local)
	}
	h := &tar.Header{Name: name, Mode: 0o755, Size: fi.Size(), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Uname: "root", Gname: "root", Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fault.Infraf("artifact disk: %w", err)
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, sum), in)
	if err != nil {
		return fault.Infraf("artifact disk: %s: %w", f.Local, err)
	}
	if n != fi.Size() {
		return fault.Infraf("artifact disk: %s changed size while it was read", f.Local)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != f.SHA256 {
		return &guest.ChangedError{Path: f.Local, Recorded: f.SHA256, Actual: got}
	}
	return nil
}

// ExtractCommand unpacks the disk in the guest, over the files it holds.
// tar stops at the archive's end, so the device's size does not matter.
func ExtractCommand() string {
	return fmt.Sprintf("test -b %s && tar -x --no-same-owner -f %s -C /", Device, Device)
}
