package artifacts

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/fault"
)

// Files are a component's binaries on the host, by name ("crio", "pinns",
// "crictl", "runc", "crun", "conmon"), plus an optional CNI plugin directory.
type Files struct {
	Binaries map[string]string
	CNIDir   string
	// InGuest is set when the component comes from the guest image's packages.
	InGuest bool
}

// Fetcher gets locked artifacts.
type Fetcher struct {
	Cache *cache.Cache
	Log   *slog.Logger
	Step  func(format string, args ...any)
	// Output receives build tool output (nil discards it).
	Output io.Writer
}

func (f *Fetcher) step(format string, args ...any) {
	if f.Step != nil {
		f.Step(format, args...)
	}
}

// Fetch returns the files of one locked artifact, downloading or building as needed.
func (f *Fetcher) Fetch(ctx context.Context, lf *lock.File, a lock.Artifact) (Files, error) {
	switch {
	case a.Source == profiles.SourceRelease || a.Source == profiles.SourceMirror:
		return f.release(ctx, a)
	case a.Source == profiles.SourceGoMod:
		return f.gomod(ctx, a)
	case strings.HasPrefix(a.Source, profiles.SourceFile):
		return f.file(a)
	case a.Source == profiles.SourcePackage:
		return Files{InGuest: true}, nil
	case a.Source == profiles.SourceBundle:
		bundle, ok := lf.Artifact(a.Bundle)
		if !ok {
			return Files{}, fault.Inputf("lock: %s comes from bundle %s, which the lock lacks; run `envctl lock`", a.Component, a.Bundle)
		}
		bf, err := f.release(ctx, bundle)
		if err != nil {
			return Files{}, err
		}
		out := Files{Binaries: map[string]string{}}
		switch a.Component {
		case "conmon":
			out.Binaries["conmon"] = bf.Binaries["conmon"]
		case "cni-plugins":
			out.CNIDir = bf.CNIDir
		}
		return out, nil
	}
	return Files{}, fault.Inputf("lock: %s has unknown source %q; run `envctl lock`", a.Component, a.Source)
}

func (f *Fetcher) file(a lock.Artifact) (Files, error) {
	path := strings.TrimPrefix(a.Source, "file://")
	d, err := cache.FileDigest(path, "sha256")
	if err != nil {
		return Files{}, fault.Inputf("%s: %s: %v; the lock pins this file: restore it or run `envctl lock`", a.Component, path, err)
	}
	if d.Hex != a.SHA256 {
		return Files{}, fault.Inputf("%s: %s changed since it was locked (sha256 %s, lock has %s); run `envctl lock` to pin the new file", a.Component, path, d.Hex, a.SHA256)
	}
	return Files{Binaries: map[string]string{binaryName(a.Component): path}}, nil
}

func binaryName(component string) string {
	switch component {
	case "cri-o":
		return "crio"
	case "cri-tools":
		return "crictl"
	}
	return component
}

func (f *Fetcher) release(ctx context.Context, a lock.Artifact) (Files, error) {
	d, err := cache.ParseDigest("sha256:" + a.SHA256)
	if err != nil {
		return Files{}, fault.Inputf("lock: %s %s: %v; run `envctl lock`", a.Component, a.Version, err)
	}
	f.step("fetching %s %s from %s", a.Component, a.Version, a.URL)
	blob, err := f.Cache.Fetch(ctx, a.URL, d)
	if err != nil {
		return Files{}, err
	}
	switch a.Component {
	case "runc", "crun":
		return Files{Binaries: map[string]string{a.Component: blob}}, nil
	}
	dir, err := f.unpack(ctx, blob, d)
	if err != nil {
		return Files{}, err
	}
	switch a.Component {
	case "cri-tools":
		return Files{Binaries: map[string]string{"crictl": filepath.Join(dir, "crictl")}}, nil
	case "cri-o":
		// The bundle: cri-o/bin/{crio,pinns,conmon,crictl,runc,crun}, cri-o/cni-plugins/.
		root := filepath.Join(dir, "cri-o")
		out := Files{Binaries: map[string]string{}, CNIDir: filepath.Join(root, "cni-plugins")}
		for _, b := range []string{"crio", "pinns", "conmon", "crictl", "runc", "crun"} {
			if p := filepath.Join(root, "bin", b); exists(p) {
				out.Binaries[b] = p
			}
		}
		if out.Binaries["crio"] == "" {
			return Files{}, fault.Infraf("%s: the CRI-O bundle has no cri-o/bin/crio", a.URL)
		}
		return out, nil
	}
	return Files{}, fault.Inputf("%s has no release layout envctl knows", a.Component)
}

// unpack extracts a .tar.gz blob once into the cache.
func (f *Fetcher) unpack(ctx context.Context, blob string, d cache.Digest) (string, error) {
	dst := filepath.Join(f.Cache.Dir, "unpacked", d.Hex)
	if exists(dst) {
		return dst, nil
	}
	unlock, err := f.Cache.Lock(ctx, "unpack-"+d.Hex)
	if err != nil {
		return "", err
	}
	defer unlock()
	if exists(dst) {
		return dst, nil
	}
	tmp := dst + ".tmp"
	os.RemoveAll(tmp)
	if err := untar(blob, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fault.Infraf("unpack %s: %w", blob, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", fault.Infraf("unpack %s: %w", blob, err)
	}
	return dst, nil
}

func untar(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	gz, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			return fmt.Errorf("unsafe path %q in archive", h.Name)
		}
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			os.Symlink(h.Linkname, p)
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Cached returns an artifact's files when they are already on the host,
// without downloading or building anything.
func (f *Fetcher) Cached(lf *lock.File, a lock.Artifact) (Files, bool) {
	switch {
	case a.Source == profiles.SourceGoMod:
		return builtFiles(filepath.Join(f.Cache.Dir, "builds", BuildKey(a)))
	case strings.HasPrefix(a.Source, profiles.SourceFile):
		fl, err := f.file(a)
		return fl, err == nil
	case a.Source == profiles.SourceRelease || a.Source == profiles.SourceMirror:
		d, err := cache.ParseDigest("sha256:" + a.SHA256)
		if err != nil {
			return Files{}, false
		}
		if _, ok := f.Cache.Has(d); !ok {
			return Files{}, false
		}
		fl, err := f.release(context.Background(), a)
		return fl, err == nil
	}
	return Files{}, false
}
