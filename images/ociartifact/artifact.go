package ociartifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
)

// ConfigMediaType is the artifact's config blob: the image's Meta. It is
// also the artifact's type.
const ConfigMediaType types.MediaType = "application/vnd.envctl.image.config.v1+json"

// Role is one file of an image.
type Role string

// The files of an image.
const (
	Disk   Role = "disk"
	Kernel Role = "kernel"
	Initrd Role = "initrd"
)

// Roles are the roles in artifact order.
var Roles = []Role{Disk, Kernel, Initrd}

// MediaType is the role's layer media type.
func (r Role) MediaType() types.MediaType {
	return types.MediaType("application/vnd.envctl.image." + string(r) + ".v1+zstd")
}

// roleOf reads a layer's role from its media type.
func roleOf(mt types.MediaType) (Role, bool) {
	for _, r := range Roles {
		if r.MediaType() == mt {
			return r, true
		}
	}
	return "", false
}

// Annotations on the manifest and its layers.
const (
	// AnnotationContent is a layer's content digest (of the file, before
	// compression): what a lock pins.
	AnnotationContent = "dev.envctl.image.content-digest"
	// AnnotationName is the image's name (debian-12) on the manifest.
	AnnotationName = "dev.envctl.image.name"
	// AnnotationRefName names a manifest in an OCI layout (its tag).
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Meta describes an image: the artifact's config blob.
type Meta struct {
	Name     string            `json:"name"`
	Format   string            `json:"format"`
	Recipe   string            `json:"recipe,omitempty"`
	Snapshot string            `json:"snapshot,omitempty"`
	FastSeed bool              `json:"fast_seed"`
	Packages map[string]string `json:"packages,omitempty"`
	// Files are the content digests by role ("sha256:…").
	Files map[Role]string `json:"files"`
	// Sizes are the files' sizes by role: an unpack writes no more.
	// Artifacts from envctl before sizes were recorded have none, and
	// are held to MaxContent.
	Sizes map[Role]int64 `json:"sizes,omitempty"`
}

// Tag is the tag an image's artifact has: its disk digest with the colon
// a tag cannot hold, "sha256-<hex>".
func Tag(disk string) string { return strings.Replace(disk, ":", "-", 1) }

// File is one file to pack, with its content digest.
type File struct {
	Role   Role
	Path   string
	Digest string
}

// Pack makes the artifact of an image: each file compressed with zstd
// into work (which must hold about their compressed size), the manifest
// annotated with the image's name. The files' content digests go into the
// config and the layer annotations.
func Pack(ctx context.Context, meta Meta, files []File, work string) (v1.Image, error) {
	meta.Files, meta.Sizes = map[Role]string{}, map[Role]int64{}
	a := &artifact{layers: map[v1.Hash]*fileLayer{}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Annotations: map[string]string{AnnotationName: meta.Name}}
	for _, f := range files {
		meta.Files[f.Role] = f.Digest
		l, err := compressFile(ctx, f, work)
		if err != nil {
			return nil, err
		}
		a.layers[l.digest] = l
		meta.Sizes[f.Role] = l.content
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: f.Role.MediaType(), Size: l.size, Digest: l.digest,
			Annotations: map[string]string{AnnotationContent: f.Digest, "org.opencontainers.image.title": filepath.Base(f.Path)}})
	}
	cfg, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	a.config = cfg
	h, n, err := v1.SHA256(bytes.NewReader(cfg))
	if err != nil {
		return nil, err
	}
	m.Config = v1.Descriptor{MediaType: ConfigMediaType, Size: n, Digest: h}
	if a.manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	return partial.CompressedToImage(a)
}

// artifact is a packed image: partial.CompressedImageCore over files.
type artifact struct {
	config, manifest []byte
	layers           map[v1.Hash]*fileLayer
}

func (a *artifact) RawConfigFile() ([]byte, error)      { return a.config, nil }
func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	if cfg, _, _ := v1.SHA256(bytes.NewReader(a.config)); cfg == h {
		return partial.ConfigLayer(a)
	}
	return nil, fmt.Errorf("artifact has no blob %s", h)
}

// fileLayer is a compressed file on disk.
type fileLayer struct {
	path      string
	digest    v1.Hash
	size      int64
	content   int64 // the file's size before compression
	mediaType types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

func compressFile(ctx context.Context, f File, work string) (*fileLayer, error) {
	in, err := os.Open(f.Path)
	if err != nil {
		return nil, fault.Infraf("pack %s: %w", f.Role, err)
	}
	defer in.Close()
	out, err := os.CreateTemp(work, "pack-"+string(f.Role)+"-")
	if err != nil {
		return nil, fault.Infraf("pack %s: %w", f.Role, err)
	}
	h := sha256.New()
	counted := &countWriter{w: io.MultiWriter(out, h)}
	enc, err := zstd.NewWriter(counted, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		out.Close()
		return nil, err
	}
	content := sha256.New()
	n, err := io.Copy(enc, io.TeeReader(ctxReader{ctx, in}, content))
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(out.Name())
		return nil, fault.Infraf("pack %s %s: %w", f.Role, f.Path, err)
	}
	if got := "sha256:" + hex.EncodeToString(content.Sum(nil)); got != f.Digest {
		_ = os.Remove(out.Name())
		return nil, fault.Infraf("pack %s: %s has digest %s, the image records %s: the cached file is damaged; run `envctl cache verify`", f.Role, f.Path, got, f.Digest)
	}
	return &fileLayer{path: out.Name(), digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, size: counted.n, content: n, mediaType: f.Role.MediaType()}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ctxReader ends a long copy when its context ends.
// progressReader tells progress how many bytes each read gave.
type progressReader struct {
	r        io.Reader
	progress func(int64)
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.progress(int64(n))
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// CorruptError is an artifact whose bytes are not what it or the lock
// says: a blob changed in the registry or the file, or another image.
type CorruptError struct {
	Where, Msg string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: %s; nothing was installed", e.Where, e.Msg)
}

// FaultClass implements fault.Classed: a corrupt download is an
// infrastructure error.
func (e *CorruptError) FaultClass() fault.Class { return fault.Infra }

// Unpacked is an unpacked artifact: its description and a file per role.
type Unpacked struct {
	Meta  Meta
	Paths map[Role]string
}

// Unpack reads an artifact into dir: the config must be an envctl image
// description, every layer's compressed bytes must match the manifest's
// digest, and every file's content must match the digest the description
// records and, when want is given (a lock's pins by role), the pinned one.
// Disk files are written sparse. where names the source in errors.
func Unpack(ctx context.Context, img v1.Image, dir, where string, want map[Role]string) (Unpacked, error) {
	m, err := img.Manifest()
	if err != nil {
		return Unpacked{}, fault.Infraf("%s: manifest: %w", where, err)
	}
	if m.Config.MediaType != ConfigMediaType {
		return Unpacked{}, fault.Inputf("%s is not an envctl image (config media type %q, want %q)", where, m.Config.MediaType, ConfigMediaType)
	}
	if m.Config.Size > MaxDescriptionBytes {
		return Unpacked{}, &TooLargeError{Where: where, What: fmt.Sprintf("the image description (declared %d bytes)", m.Config.Size), Limit: MaxDescriptionBytes}
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		if verifyFailed(err) {
			return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("the image description %s does not match its digest (%v)", m.Config.Digest, err)}
		}
		return Unpacked{}, fault.Infraf("%s: config: %w", where, err)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(raw)); h != m.Config.Digest {
		return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("the image description has digest %s, the manifest says %s", h, m.Config.Digest)}
	}
	var meta Meta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("unreadable image description (%v)", err)}
	}
	if err := meta.Validate(); err != nil {
		return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("the image description is not valid: %v", err)}
	}
	for role, d := range want {
		if d != "" && meta.Files[role] != d {
			return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("it holds %s %s, the lock pins %s", role, orNone(meta.Files[role]), d)}
		}
	}
	out := Unpacked{Meta: meta, Paths: map[Role]string{}}
	var total int64
	for _, desc := range m.Layers {
		if _, ok := roleOf(desc.MediaType); ok && desc.Size > 0 {
			total += desc.Size
		}
	}
	meter := task.StartMeter(ctx, where)
	var read int64
	progress := func(n int64) { read += n; meter.Set(read, total) }
	for _, desc := range m.Layers {
		role, ok := roleOf(desc.MediaType)
		if !ok {
			continue // a newer envctl's file: not needed here
		}
		if _, dup := out.Paths[role]; dup {
			return Unpacked{}, &CorruptError{Where: where, Msg: "it has two " + string(role) + " layers"}
		}
		if desc.Annotations[AnnotationContent] != meta.Files[role] {
			return Unpacked{}, &CorruptError{Where: where, Msg: fmt.Sprintf("layer %s says content %s, the description %s", role, desc.Annotations[AnnotationContent], meta.Files[role])}
		}
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			return Unpacked{}, fault.Infraf("%s: %s: %w", where, role, err)
		}
		path := filepath.Join(dir, string(role))
		limit, exact := meta.contentLimit(role)
		if desc.Size < 0 || desc.Size > maxCompressed(limit) {
			return Unpacked{}, &TooLargeError{Where: where, What: fmt.Sprintf("%s blob %s (declared %d bytes)", role, desc.Digest, desc.Size), Limit: maxCompressed(limit)}
		}
		if err := unpackLayer(ctx, l, desc, meta.Files[role], limit, exact, path, where, role, progress); err != nil {
			meter.Done(err)
			return Unpacked{}, err
		}
		out.Paths[role] = path
	}
	for _, role := range slices.Sorted(maps.Keys(meta.Files)) {
		if _, ok := out.Paths[role]; !ok {
			err := &CorruptError{Where: where, Msg: "it has no " + string(role) + " layer"}
			meter.Done(err)
			return Unpacked{}, err
		}
	}
	meter.Done(nil)
	return out, nil
}

func unpackLayer(ctx context.Context, l v1.Layer, desc v1.Descriptor, content string, limit int64, exact bool, path, where string, role Role, progress func(int64)) error {
	rc, err := l.Compressed()
	if err != nil {
		if verifyFailed(err) {
			return &CorruptError{Where: where, Msg: fmt.Sprintf("%s blob %s: %v", role, desc.Digest, err)}
		}
		return fault.Infraf("%s: %s: %w", where, role, err)
	}
	defer rc.Close()
	compressed := sha256.New()
	// The source is read no further than the manifest declares, and the
	// file written no larger than the description declares: a bomb stops
	// at the first byte past either bound.
	src := &boundedReader{r: ctxReader{ctx, progressReader{rc, progress}}, n: desc.Size}
	dec, err := zstd.NewReader(io.TeeReader(src, compressed), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		return fault.Infraf("%s: %s: %w", where, role, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		dec.Close()
		return fault.Infraf("%s: %w", where, err)
	}
	h := sha256.New()
	written, err := copySparse(f, io.TeeReader(&boundedReader{r: dec, n: limit}, h))
	dec.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Drain what the decoder left, so the compressed digest covers
		// every byte the source sent.
		_, err = io.Copy(io.Discard, io.TeeReader(src, compressed))
	}
	if err != nil {
		_ = os.Remove(path)
		if errors.Is(err, errTooLarge) {
			return &TooLargeError{Where: where, What: fmt.Sprintf("%s blob %s", role, desc.Digest), Limit: limit}
		}
		if ctx.Err() != nil {
			return fault.Infraf("%s: %s: %w", where, role, context.Cause(ctx))
		}
		return &CorruptError{Where: where, Msg: fmt.Sprintf("%s blob %s does not read back (%v)", role, desc.Digest, err)}
	}
	if got := "sha256:" + hex.EncodeToString(compressed.Sum(nil)); got != desc.Digest.String() {
		_ = os.Remove(path)
		return &CorruptError{Where: where, Msg: fmt.Sprintf("%s blob %s has digest %s: it changed after it was stored", role, desc.Digest, got)}
	}
	if exact && written != limit {
		_ = os.Remove(path)
		return &CorruptError{Where: where, Msg: fmt.Sprintf("%s content has %d bytes, the image records %d", role, written, limit)}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != content {
		_ = os.Remove(path)
		return &CorruptError{Where: where, Msg: fmt.Sprintf("%s content has digest %s, the image records %s", role, got, content)}
	}
	return nil
}

// verifyFailed reports go-containerregistry's own digest or size check
// failing on a blob it read (its error type is internal to it).
func verifyFailed(err error) bool { return strings.Contains(err.Error(), "error verifying") }

// copySparse copies r into f, seeking over blocks of zeros so that a disk
// image stays sparse, and sets f's size to what was copied.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	const block = 64 << 10
	buf := make([]byte, block)
	zero := make([]byte, block)
	var n int64
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if bytes.Equal(buf[:k], zero[:k]) {
				if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
					return n, serr
				}
			} else if _, werr := f.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, f.Truncate(n)
		}
		if err != nil {
			return n, err
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
