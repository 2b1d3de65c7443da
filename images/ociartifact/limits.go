package ociartifact

import (
	"errors"
	"fmt"
	"io"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

// The bounds on what an image store or a layout tarball may make envctl
// read, hold in memory or write. An artifact's files are bounded by the
// sizes its description declares, and those by MaxContent.
const (
	// MaxIndexBytes bounds a layout's index.json and oci-layout.
	MaxIndexBytes = 4 << 20
	// MaxManifestBytes bounds a manifest, from a registry or a layout.
	MaxManifestBytes = 4 << 20
	// MaxDescriptionBytes bounds the config blob: the image description.
	MaxDescriptionBytes = 1 << 20
	// MaxLayoutEntries bounds the entries of a layout tarball.
	MaxLayoutEntries = 4096
)

// MaxContent is the largest file each role may hold: what an artifact
// that declares no sizes (one from envctl before sizes were recorded) is
// held to, and the most a description may declare.
var MaxContent = map[Role]int64{Disk: 32 << 30, Kernel: 256 << 20, Initrd: 2 << 30}

// maxCompressed is the most zstd may take to hold n bytes (its frame
// bound, with room for block headers).
func maxCompressed(n int64) int64 { return n + n/128 + 64<<10 }

// contentLimit is how many bytes role's file may have: its declared size
// (exact) when the description declares one, else MaxContent.
func (m Meta) contentLimit(role Role) (limit int64, exact bool) {
	if n, ok := m.Sizes[role]; ok {
		return n, true
	}
	return MaxContent[role], false
}

// Validate checks a description read from outside with a lock's field
// rules (profiles/lock) and the artifact's own: a raw disk, no sizes
// above MaxContent, no file without a content digest.
func (m Meta) Validate() error {
	if m.Files[Disk] == "" {
		return errors.New("it has no disk")
	}
	img := lock.Image{Name: m.Name, Kind: lock.ImageLocal, Digest: m.Files[Disk], Format: m.Format,
		Kernel: m.Files[Kernel], Initrd: m.Files[Initrd], Recipe: m.Recipe, Snapshot: m.Snapshot, Packages: m.Packages}
	if err := img.Check(); err != nil {
		return err
	}
	if m.Format != "raw" {
		return fmt.Errorf("format %q: an envctl image has a raw disk", m.Format)
	}
	for role, d := range m.Files {
		if _, ok := roleOf(role.MediaType()); !ok {
			return fmt.Errorf("files: %q is not a role (disk, kernel or initrd)", role)
		}
		if d == "" {
			return fmt.Errorf("files.%s: no content digest", role)
		}
	}
	for role, n := range m.Sizes {
		if _, ok := m.Files[role]; !ok {
			return fmt.Errorf("sizes.%s: there is no such file", role)
		}
		if n < 0 || n > MaxContent[role] {
			return fmt.Errorf("sizes.%s: %d bytes is more than envctl takes (%d)", role, n, MaxContent[role])
		}
	}
	return nil
}

// TooLargeError is outside data past its bound: a file, a blob or a
// layout entry larger than declared or than envctl takes. It stops the
// read at the first byte past the bound.
type TooLargeError struct {
	Where, What string
	Limit       int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: %s is larger than %d bytes; refused, nothing was installed", e.Where, e.What, e.Limit)
}

// FaultClass implements fault.Classed: bad outside data.
func (e *TooLargeError) FaultClass() fault.Class { return fault.Infra }

// errTooLarge is what boundedReader returns past its bound.
var errTooLarge = errors.New("past its bound")

// boundedReader reads at most n bytes from r, and fails on one more.
type boundedReader struct {
	r io.Reader
	n int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		var one [1]byte
		k, err := b.r.Read(one[:])
		if k > 0 {
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.r.Read(p)
	b.n -= int64(k)
	return k, err
}
