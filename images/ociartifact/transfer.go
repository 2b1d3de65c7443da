package ociartifact

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
)

// ParseRepository reads an image store: a registry repository such as
// ghcr.io/org/envctl-images or 127.0.0.1:5000/envctl/images, without a
// tag. The registry host must be written: envctl never falls back to
// Docker Hub. An https:// prefix is allowed; http:// asks for plain HTTP.
// Otherwise loopback and private hosts are reached over plain HTTP,
// others over HTTPS, as go-containerregistry decides.
func ParseRepository(s string) (name.Repository, error) {
	bad := fault.Inputf("image store %q is not a registry repository: write HOST[:PORT]/PATH, e.g. ghcr.io/org/envctl-images or 127.0.0.1:5000/envctl/images", s)
	rest, opts, ok := splitScheme(strings.TrimSpace(s))
	if !ok || strings.ContainsAny(rest, "@") || !hasHost(rest) {
		return name.Repository{}, bad
	}
	repo, err := name.NewRepository(rest, opts...)
	if err != nil {
		return name.Repository{}, bad
	}
	return repo, nil
}

// ParseReference reads REPO:TAG or REPO@sha256:… , with the registry
// host written, as ParseRepository does.
func ParseReference(s string) (name.Reference, error) {
	bad := fault.Inputf("%q is not an image reference: write HOST[:PORT]/PATH:TAG or HOST[:PORT]/PATH@sha256:DIGEST, e.g. ghcr.io/org/envctl-images:sha256-…", s)
	rest, opts, ok := splitScheme(strings.TrimSpace(s))
	if !ok || !hasHost(rest) {
		return nil, bad
	}
	ref, err := name.ParseReference(rest, opts...)
	if err != nil {
		return nil, bad
	}
	return ref, nil
}

// splitScheme takes an optional http:// or https:// off s; any other
// scheme is refused.
func splitScheme(s string) (string, []name.Option, bool) {
	switch {
	case strings.HasPrefix(s, "https://"):
		return strings.TrimPrefix(s, "https://"), []name.Option{name.StrictValidation}, true
	case strings.HasPrefix(s, "http://"):
		return strings.TrimPrefix(s, "http://"), []name.Option{name.StrictValidation, name.Insecure}, true
	case strings.Contains(s, "://"):
		return "", nil, false
	}
	return s, []name.Option{name.StrictValidation}, true
}

// hasHost reports whether a reference starts with a registry host: its
// first element has a dot or a port, or is localhost (the rule Docker
// uses to tell a host from a Docker Hub namespace).
func hasHost(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	if !ok || first == "" {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

func options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("envctl"), remote.WithTransport(registryTransport())}
}

// Push writes the artifact into repo under tag (and any extra tags) and
// returns the pushed reference by digest.
func Push(ctx context.Context, repo name.Repository, img v1.Image, tag string, extra ...string) (string, error) {
	d, err := img.Digest()
	if err != nil {
		return "", fault.Infraf("push: %w", err)
	}
	for _, t := range append([]string{tag}, extra...) {
		ref := repo.Tag(t)
		if err := writeMetered(ctx, ref, img); err != nil {
			return "", remoteError(ref.String(), err)
		}
	}
	return repo.Digest(d.String()).String(), nil
}

// writeMetered writes img to ref, its bytes reported to the context's
// meter (task.WithMeters).
func writeMetered(ctx context.Context, ref name.Reference, img v1.Image) error {
	meter := task.StartMeter(ctx, "push "+ref.String())
	updates := make(chan v1.Update, 16)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for u := range updates {
			meter.Set(u.Complete, u.Total)
		}
	}()
	// remote.Write closes updates when it is done.
	err := remote.Write(ref, img, append(options(ctx), remote.WithProgress(updates))...)
	<-drained
	meter.Done(err)
	return err
}

// NotFoundError is a registry that does not have the artifact asked for.
type NotFoundError struct{ Ref string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("the image store has no %s; push it there with `envctl image push`", e.Ref)
}

// FaultClass implements fault.Classed: the user named something that is
// not there.
func (e *NotFoundError) FaultClass() fault.Class { return fault.Input }

// Pull reads the artifact at ref. The blobs are read (and checked) by
// Unpack.
func Pull(ctx context.Context, ref name.Reference) (v1.Image, error) {
	img, err := remote.Image(ref, options(ctx)...)
	if err != nil {
		return nil, remoteError(ref.String(), err)
	}
	return img, nil
}

// remoteError classes a registry's answer: a missing manifest is a
// NotFoundError, a registry that refused or did not answer an
// infrastructure error naming it.
func remoteError(ref string, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		if terr.StatusCode == http.StatusNotFound {
			return &NotFoundError{Ref: ref}
		}
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return &NotFoundError{Ref: ref}
			}
		}
	}
	return fault.Infraf("image store %s: %w", ref, err)
}

// Tagged is an artifact and the tag it carries in a layout.
type Tagged struct {
	Tag   string
	Image v1.Image
}

// WriteLayout writes artifacts as one OCI image layout tarball at path
// (atomically: a failed export leaves no file), staging the layout in
// work. Each manifest carries its tag as org.opencontainers.image.ref.name.
func WriteLayout(ctx context.Context, path string, imgs []Tagged, work string) error {
	dir, err := os.MkdirTemp(work, "export-")
	if err != nil {
		return fault.Infraf("export: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fault.Infraf("export: %w", err)
	}
	for _, t := range imgs {
		if err := ctx.Err(); err != nil {
			return fault.Infraf("export: %w", context.Cause(ctx))
		}
		if err := lp.AppendImage(t.Image, layout.WithAnnotations(map[string]string{AnnotationRefName: t.Tag})); err != nil {
			return fault.Infraf("export %s: %w", t.Tag, err)
		}
	}
	meter := task.StartMeter(ctx, "export "+path)
	mw := &meteredWriter{meter: meter, total: tarSize(dir)}
	err = atomicfile.WriteFrom(path, 0o644, func(w io.Writer) error {
		mw.w = w
		return tarDir(ctx, dir, mw)
	})
	if err == nil {
		meter.Set(mw.n, mw.n)
	}
	meter.Done(err)
	if err != nil {
		return fault.Infraf("export %s: %w", path, err)
	}
	return nil
}

// tarSize is about the bytes of a tar of dir: a header block for each
// entry, each file padded to a block, and the two closing blocks.
func tarSize(dir string) int64 {
	const block = 512
	n := int64(2 * block)
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err // an estimate: what could not be read is not counted
		}
		if p == dir {
			return nil
		}
		n += block
		if fi, err := d.Info(); err == nil && d.Type().IsRegular() {
			n += (fi.Size() + block - 1) / block * block
		}
		return nil
	})
	return n
}

// meteredWriter tells a meter how many bytes went through.
type meteredWriter struct {
	w     io.Writer
	meter task.Meter
	total int64
	n     int64
}

func (m *meteredWriter) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	m.n += int64(n)
	m.meter.Set(m.n, m.total)
	return n, err
}

func tarDir(ctx context.Context, dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = filepath.ToSlash(rel), 0, 0, "", ""
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadLayout unpacks an OCI image layout tarball into a new directory
// under work (only plain files and directories inside it are taken) and
// returns its envctl artifacts with their tags, and the directory, which
// the caller removes when done. What it writes is bounded by the
// tarball's own size (sparse entries are refused), and what it reads
// into memory by MaxIndexBytes, MaxManifestBytes and MaxDescriptionBytes.
func ReadLayout(ctx context.Context, path, work string) ([]Tagged, string, error) {
	dir, err := os.MkdirTemp(work, "import-")
	if err != nil {
		return nil, "", fault.Infraf("import: %w", err)
	}
	out, err := readLayout(ctx, path, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", err
	}
	return out, dir, nil
}

func readLayout(ctx context.Context, path, dir string) ([]Tagged, error) {
	if err := untar(ctx, path, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fault.Inputf("import %s: not an OCI image layout (%v); make one with `envctl image export`", path, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fault.Inputf("import %s: unreadable index.json (%v)", path, err)
	}
	var out []Tagged
	for _, d := range im.Manifests {
		if d.MediaType != types.OCIManifestSchema1 {
			continue
		}
		if err := blobFits(dir, d, MaxManifestBytes); err != nil {
			return nil, &CorruptError{Where: path, Msg: fmt.Sprintf("manifest %s: %v", d.Digest, err)}
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, &CorruptError{Where: path, Msg: fmt.Sprintf("manifest %s: %v", d.Digest, err)}
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, &CorruptError{Where: path, Msg: fmt.Sprintf("manifest %s: %v", d.Digest, err)}
		}
		if m.Config.MediaType == ConfigMediaType {
			if err := blobFits(dir, m.Config, MaxDescriptionBytes); err != nil {
				return nil, &CorruptError{Where: path, Msg: fmt.Sprintf("image description %s: %v", m.Config.Digest, err)}
			}
		}
		out = append(out, Tagged{Tag: d.Annotations[AnnotationRefName], Image: img})
	}
	if len(out) == 0 {
		return nil, fault.Inputf("import %s: the layout holds no image; make one with `envctl image export`", path)
	}
	return out, nil
}

// blobFits checks, before go-containerregistry reads a layout blob whole,
// that it declares no more than limit bytes and that the file has the
// size declared.
func blobFits(dir string, d v1.Descriptor, limit int64) error {
	if d.Size < 0 || d.Size > limit {
		return fmt.Errorf("declares %d bytes, more than envctl reads (%d)", d.Size, limit)
	}
	if d.Digest.Algorithm == "" || strings.ContainsAny(d.Digest.Algorithm+d.Digest.Hex, "/\\.") {
		return fmt.Errorf("%q is not a digest", d.Digest)
	}
	fi, err := os.Stat(filepath.Join(dir, "blobs", d.Digest.Algorithm, d.Digest.Hex))
	if err != nil {
		return fmt.Errorf("the blob is missing")
	}
	if fi.Size() != d.Size {
		return fmt.Errorf("the blob has %d bytes, %d declared", fi.Size(), d.Size)
	}
	return nil
}

// untar unpacks the tarball at path into dir: at most MaxLayoutEntries
// plain files and directories, every one inside dir, no sparse entry, and
// no more bytes in all than the tarball holds.
func untar(ctx context.Context, path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return fault.Inputf("import %s: %v", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fault.Inputf("import %s: %v", path, err)
	}
	budget := fi.Size()
	tr := tar.NewReader(f)
	for entries := 0; ; entries++ {
		if err := ctx.Err(); err != nil {
			return fault.Infraf("import %s: %w", path, context.Cause(ctx))
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fault.Inputf("import %s: not a tar file (%v); make one with `envctl image export`", path, err)
		}
		if entries >= MaxLayoutEntries {
			return &TooLargeError{Where: "import " + path, What: "the layout's entry count", Limit: MaxLayoutEntries}
		}
		if err := checkEntry(hdr, budget); err != nil {
			return fault.Inputf("import %s: entry %q %v; refused", path, hdr.Name, err)
		}
		name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
		dst := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fault.Infraf("import: %w", err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return fault.Infraf("import: %w", err)
			}
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
			if err != nil {
				return fault.Inputf("import %s: entry %q: %v", path, hdr.Name, err)
			}
			n, err := io.Copy(out, &boundedReader{r: ctxReader{ctx, tr}, n: hdr.Size})
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			budget -= n
			if err != nil {
				if ctx.Err() != nil {
					return fault.Infraf("import %s: %w", path, context.Cause(ctx))
				}
				return fault.Inputf("import %s: entry %q does not read back (%v); make the file again with `envctl image export`", path, hdr.Name, err)
			}
		}
	}
}

// checkEntry refuses a layout entry before any of it is written: one
// outside the layout, one that is not a plain file or directory, a sparse
// one (its declared size is not in the tarball), one larger than what is
// left of the tarball, and an index larger than MaxIndexBytes.
func checkEntry(hdr *tar.Header, budget int64) error {
	name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
	switch {
	case !filepath.IsLocal(name):
		return errors.New("points outside the layout")
	case hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeReg:
		return errors.New("is not a plain file or directory")
	case isSparse(hdr):
		return errors.New("is a sparse file: envctl image export writes none")
	case hdr.Size < 0 || hdr.Size > budget:
		return fmt.Errorf("declares %d bytes, more than the tarball holds", hdr.Size)
	case (name == "index.json" || name == "oci-layout") && hdr.Size > MaxIndexBytes:
		return fmt.Errorf("has %d bytes, more than envctl reads (%d)", hdr.Size, MaxIndexBytes)
	}
	return nil
}

// isSparse reports a GNU or PAX sparse entry: Go's tar reader expands
// those to their declared size, which the tarball does not hold.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
