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

	"github.com/envctl/envctl/profiles/base/fault"
)

// ParseRepository reads an image store: a registry repository such as
// ghcr.io/org/envctl-images or 127.0.0.1:5000/envctl/images, without a
// tag. Loopback and private hosts are reached over plain HTTP, others
// over HTTPS, as go-containerregistry decides.
func ParseRepository(s string) (name.Repository, error) {
	repo, err := name.NewRepository(strings.TrimSpace(s))
	if err != nil || strings.ContainsAny(s, "@") {
		return name.Repository{}, fault.Inputf("image store %q is not a registry repository: write HOST[:PORT]/PATH, e.g. ghcr.io/org/envctl-images", s)
	}
	return repo, nil
}

// ParseReference reads REPO:TAG or REPO@sha256:… .
func ParseReference(s string) (name.Reference, error) {
	ref, err := name.ParseReference(strings.TrimSpace(s))
	if err != nil {
		return nil, fault.Inputf("%q is not an image reference: write HOST[:PORT]/PATH:TAG or HOST[:PORT]/PATH@sha256:DIGEST", s)
	}
	return ref, nil
}

func options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithUserAgent("envctl")}
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
		if err := remote.Write(ref, img, options(ctx)...); err != nil {
			return "", remoteError(ref.String(), err)
		}
	}
	return repo.Digest(d.String()).String(), nil
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
	tmp := path + ".tmp"
	if err := tarDir(ctx, dir, tmp); err != nil {
		_ = os.Remove(tmp)
		return fault.Infraf("export %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fault.Infraf("export %s: %w", path, err)
	}
	return nil
}

func tarDir(ctx context.Context, dir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadLayout unpacks an OCI image layout tarball into a new directory
// under work (only plain files and directories inside it are taken) and
// returns its envctl artifacts with their tags, and the directory, which
// the caller removes when done.
func ReadLayout(ctx context.Context, path, work string) ([]Tagged, string, error) {
	dir, err := os.MkdirTemp(work, "import-")
	if err != nil {
		return nil, "", fault.Infraf("import: %w", err)
	}
	if err := untar(ctx, path, dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", fault.Inputf("import %s: not an OCI image layout (%v); make one with `envctl image export`", path, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", fault.Inputf("import %s: unreadable index.json (%v)", path, err)
	}
	var out []Tagged
	for _, d := range im.Manifests {
		if d.MediaType != types.OCIManifestSchema1 {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, "", &CorruptError{Where: path, Msg: fmt.Sprintf("manifest %s: %v", d.Digest, err)}
		}
		out = append(out, Tagged{Tag: d.Annotations[AnnotationRefName], Image: img})
	}
	if len(out) == 0 {
		_ = os.RemoveAll(dir)
		return nil, "", fault.Inputf("import %s: the layout holds no image; make one with `envctl image export`", path)
	}
	return out, dir, nil
}

func untar(ctx context.Context, path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return fault.Inputf("import %s: %v", path, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
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
		name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
		if !filepath.IsLocal(name) {
			return fault.Inputf("import %s: entry %q points outside the layout; refused", path, hdr.Name)
		}
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
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fault.Infraf("import %s: %w", path, err)
			}
		default:
			return fault.Inputf("import %s: entry %q is not a plain file or directory; refused", path, hdr.Name)
		}
	}
}
