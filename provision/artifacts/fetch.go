package artifacts

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// Files are one component's bits on the host.
type Files struct {
	// Binaries maps each binary's name ("crio", "pinns", "crictl", "runc",
	// "crun", "conmon") to its path on the host.
	Binaries map[string]string `json:"binaries,omitempty"`
	// Dir is a directory of plugins (the CNI plugins), installed whole.
	Dir string `json:"dir,omitempty"`
	// InGuest marks a component that comes from the guest image's packages:
	// there is nothing to upload.
	InGuest bool `json:"in_guest,omitempty"`
	// Digests records the sha256 (hex) of every file to upload, by host
	// path, as verified when it entered the cache: uploads are checked
	// against these, never against the host file as it is now.
	Digests map[string]string `json:"digests,omitempty"`
}

// Binary is one file a component puts into the guest, with its digest.
type Binary struct {
	Name   string // the file name in the guest's bin directory
	Path   string // on the host
	SHA256 string
}

// Paths are every host path the files are at: binaries and the plugin
// directory.
func (fl Files) Paths() []string {
	out := slices.Collect(maps.Values(fl.Binaries))
	if fl.Dir != "" {
		out = append(out, fl.Dir)
	}
	return out
}

// List returns the component's files to install by guest file name: its
// binaries, or every file of its plugin directory.
func (fl Files) List() []Binary {
	var out []Binary
	for name, p := range fl.Binaries {
		out = append(out, Binary{Name: name, Path: p, SHA256: fl.Digests[p]})
	}
	if fl.Dir != "" {
		entries, _ := os.ReadDir(fl.Dir)
		for _, e := range entries {
			if e.Type().IsRegular() && e.Name() != cache.ManifestName {
				p := filepath.Join(fl.Dir, e.Name())
				out = append(out, Binary{Name: e.Name(), Path: p, SHA256: fl.Digests[p]})
			}
		}
	}
	slices.SortFunc(out, func(a, b Binary) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Hashed returns the files with Digests computed from them as they are
// now: for files that were just made (fakes in tests, files from disk).
func (fl Files) Hashed() (Files, error) {
	fl.Digests = map[string]string{}
	for _, b := range fl.List() {
		d, err := cache.FileDigest(b.Path, digest.SHA256)
		if err != nil {
			return fl, err
		}
		fl.Digests[b.Path] = d.Encoded()
	}
	return fl, nil
}

// withDigests fills Digests from a sealed directory's manifest.
func (fl Files) withDigests(dir string, m cache.Manifest) Files {
	fl.Digests = map[string]string{}
	for rel, tf := range m {
		if tf.Link == "" {
			fl.Digests[filepath.Join(dir, filepath.FromSlash(rel))] = tf.Digest.Encoded()
		}
	}
	return fl
}

// Fetcher gets locked artifacts onto the host.
type Fetcher struct {
	Cache   *cache.Cache
	Catalog *catalog.Catalog
	Log     *slog.Logger
	// Step reports progress lines for humans; may be nil.
	Step func(format string, args ...any)
	// Output receives build tool output (nil discards it); Task, when
	// set, takes each build's output instead (the CLI shows a live line,
	// and the output on failure).
	Output io.Writer
	Task   task.Func
}

func (f *Fetcher) step(format string, args ...any) {
	if f.Step != nil {
		f.Step(format, args...)
	}
}

func (f *Fetcher) log() *slog.Logger {
	if f.Log == nil {
		return slog.Default()
	}
	return f.Log
}

func (f *Fetcher) component(name string) (*catalog.Component, error) {
	cat := f.Catalog
	if cat == nil {
		cat = catalog.Default()
	}
	c, err := cat.Get(name)
	if err != nil {
		return nil, fault.Inputf("lock: %v; run `envctl lock`", err)
	}
	return c, nil
}

// Fetch returns the files of one component of a locked cell, downloading
// or building as needed.
func (f *Fetcher) Fetch(ctx context.Context, cell lock.LockedCell, c lock.Part) (Files, error) {
	comp, err := f.component(c.Component)
	if err != nil {
		return Files{}, err
	}
	switch c.Source.Kind() {
	case profiles.KindRelease, profiles.KindMirror:
		return f.release(ctx, comp, c.Artifact)
	case profiles.KindGoMod:
		return f.gomod(ctx, c.Artifact)
	case profiles.KindFile:
		return f.file(comp, c.Artifact)
	case profiles.KindPackage:
		return Files{InGuest: true}, nil
	case profiles.KindBundle:
		return f.bundled(ctx, cell, comp)
	}
	return Files{}, fault.Inputf("lock: %s has unknown source %q; run `envctl lock`", c.Component, c.Source)
}

// bundled takes a component out of the cell's CRI-O release bundle.
func (f *Fetcher) bundled(ctx context.Context, cell lock.LockedCell, comp *catalog.Component) (Files, error) {
	crio, ok := cell.Component(profiles.RoleCRIO)
	if !ok || (crio.Source.Kind() != profiles.KindRelease && crio.Source.Kind() != profiles.KindMirror) {
		return Files{}, fault.Inputf("lock: %s comes from the CRI-O bundle, but the cell's CRI-O is not a release; run `envctl lock`", comp.Name)
	}
	crioComp, err := f.component(crio.Component)
	if err != nil {
		return Files{}, err
	}
	b, ok := crioComp.Release.Bundles[comp.Name]
	if !ok {
		return Files{}, fault.Inputf("the CRI-O bundle does not carry %s; use source package", comp.Name)
	}
	dir, m, err := f.unpacked(ctx, crio)
	if err != nil {
		return Files{}, err
	}
	out := Files{Binaries: map[string]string{}}.withDigests(dir, m)
	for name, rel := range b.Files {
		out.Binaries[name] = filepath.Join(dir, filepath.FromSlash(rel))
	}
	if b.Dir != "" {
		out.Dir = filepath.Join(dir, filepath.FromSlash(b.Dir))
	}
	return out, checkPresent(crio.URL, out)
}

func (f *Fetcher) file(comp *catalog.Component, a lock.Artifact) (Files, error) {
	p := a.Source.Path()
	d, err := cache.FileDigest(p, digest.SHA256)
	if err != nil {
		return Files{}, fault.Inputf("%s: %s: %v; the lock pins this file: restore it or run `envctl lock`", a.Component, p, err)
	}
	if d.Encoded() != a.SHA256 {
		return Files{}, fault.Inputf("%s: %s changed since it was locked (sha256 %s, lock has %s); run `envctl lock` to pin the new file", a.Component, p, d.Encoded(), a.SHA256)
	}
	return Files{Binaries: map[string]string{comp.Main(): p}, Digests: map[string]string{p: d.Encoded()}}, nil
}

func (f *Fetcher) blob(ctx context.Context, a lock.Artifact) (string, error) {
	d, err := cache.ParseDigest("sha256:" + a.SHA256)
	if err != nil {
		return "", fault.Inputf("lock: %s %s: %v; run `envctl lock`", a.Component, a.Version, err)
	}
	if p, ok := f.Cache.Has(d); ok {
		return p, nil
	}
	f.step("fetching %s %s from %s", a.Component, a.Version, a.URL)
	return f.Cache.Fetch(ctx, a.URL, d)
}

func (f *Fetcher) release(ctx context.Context, comp *catalog.Component, a lock.Artifact) (Files, error) {
	if comp.Release == nil {
		return Files{}, fault.Inputf("%s has no release layout envctl knows", a.Component)
	}
	if !comp.Release.Archive() {
		blob, err := f.blob(ctx, a)
		if err != nil {
			return Files{}, err
		}
		return Files{Binaries: map[string]string{comp.Main(): blob}, Digests: map[string]string{blob: a.SHA256}}, nil
	}
	dir, m, err := f.unpacked(ctx, a)
	if err != nil {
		return Files{}, err
	}
	out := Files{Binaries: map[string]string{}}.withDigests(dir, m)
	for name, rel := range comp.Release.Layout {
		out.Binaries[name] = filepath.Join(dir, filepath.FromSlash(rel))
	}
	return out, checkPresent(a.URL, out)
}

func checkPresent(url string, fl Files) error {
	for name, p := range fl.Binaries {
		if _, err := os.Stat(p); err != nil {
			return fault.Infraf("%s: the archive has no %s (expected at %s)", url, name, p)
		}
	}
	if fl.Dir != "" {
		if _, err := os.Stat(fl.Dir); err != nil {
			return fault.Infraf("%s: the archive has no directory %s", url, fl.Dir)
		}
	}
	return nil
}

// unpacked extracts a .tar.gz artifact once into the cache and seals it:
// every later use checks the tree against its manifest first.
func (f *Fetcher) unpacked(ctx context.Context, a lock.Artifact) (string, cache.Manifest, error) {
	dst := filepath.Join(f.Cache.Dir, "unpacked", a.SHA256)
	if m, ok := f.sealed(dst); ok {
		return dst, m, nil
	}
	blob, err := f.blob(ctx, a)
	if err != nil {
		return "", nil, err
	}
	unlock, err := f.Cache.Lock(ctx, "unpack-"+a.SHA256)
	if err != nil {
		return "", nil, err
	}
	defer unlock()
	if m, ok := f.sealed(dst); ok {
		return dst, m, nil
	}
	tmp := dst + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := Untar(blob, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", nil, fault.Infraf("unpack %s: %w", blob, err)
	}
	m, err := cache.SealTree(tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", nil, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", nil, fault.Infraf("unpack %s: %w", blob, err)
	}
	return dst, m, nil
}

// sealed checks a sealed directory (unpacked or built). A missing one is
// not ok; a corrupt one is removed with a warning naming the file, so
// that it is unpacked or built again, never used.
func (f *Fetcher) sealed(dir string) (cache.Manifest, bool) {
	if !exists(dir) {
		return nil, false
	}
	m, err := cache.CheckTree(dir)
	if err == nil {
		return m, true
	}
	f.step("warning: %v; removed %s: it is made again", err, dir)
	f.log().Warn("corrupt cache entry", "dir", dir, "err", err)
	if rerr := os.RemoveAll(dir); rerr != nil {
		f.log().Warn("remove corrupt cache entry", "dir", dir, "err", rerr)
	}
	return nil, false
}

// Untar extracts a .tar.gz into dst through os.Root, so no entry, link or
// link target can reach outside dst.
func Untar(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	gz, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if !fs.ValidPath(name) {
			return fmt.Errorf("unsafe path %q in archive", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		case tar.TypeReg:
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			out, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if path.IsAbs(h.Linkname) || !fs.ValidPath(path.Join(path.Dir(name), h.Linkname)) {
				return fmt.Errorf("unsafe link %q → %q in archive", h.Name, h.Linkname)
			}
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Cached returns a component's files when they are already on the host,
// without downloading or building anything.
func (f *Fetcher) Cached(cell lock.LockedCell, c lock.Part) (Files, bool) {
	switch c.Source.Kind() {
	case profiles.KindGoMod:
		return f.built(filepath.Join(f.Cache.Dir, "builds", BuildKey(c.Artifact)))
	case profiles.KindFile, profiles.KindPackage:
		fl, err := f.Fetch(context.Background(), cell, c)
		return fl, err == nil
	case profiles.KindRelease, profiles.KindMirror, profiles.KindBundle:
		a := c.Artifact
		if c.Source.Kind() == profiles.KindBundle {
			a, _ = cell.Component(profiles.RoleCRIO)
		}
		d, err := cache.ParseDigest("sha256:" + a.SHA256)
		if err != nil {
			return Files{}, false
		}
		if _, ok := f.Cache.Has(d); !ok {
			return Files{}, false
		}
		fl, err := f.Fetch(context.Background(), cell, c)
		return fl, err == nil
	}
	return Files{}, false
}
