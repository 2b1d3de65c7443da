package images

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/scripts"
)

//go:embed images.yaml
var embedded []byte

// Remote is a downloadable, checksum-pinned cloud image.
type Remote struct {
	Name        string `yaml:"-" json:"name"`
	Description string `yaml:"description" json:"description"`
	Arch        string `yaml:"arch" json:"arch"`
	URL         string `yaml:"url" json:"url"`
	Digest      string `yaml:"digest" json:"digest"`
	Format      string `yaml:"format" json:"format"`
	Build       string `yaml:"build,omitempty" json:"build,omitempty"`
}

// Recipe builds an image locally.
type Recipe struct {
	Script string   `yaml:"script"`
	Args   []string `yaml:"args"`
}

// Catalog is the embedded image catalog.
type Catalog struct {
	Images map[string]*Remote `yaml:"images"`
	Builds map[string]*Recipe `yaml:"builds"`
}

// DefaultCatalog parses the embedded catalog.
func DefaultCatalog() *Catalog {
	var c Catalog
	dec := yaml.NewDecoder(strings.NewReader(string(embedded)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		panic(fmt.Sprintf("embedded image catalog: %v", err))
	}
	for n, im := range c.Images {
		im.Name = n
	}
	return &c
}

// Names lists every image name, remote or buildable.
func (c *Catalog) Names() []string {
	seen := map[string]bool{}
	var out []string
	for n := range c.Images {
		seen[n] = true
		out = append(out, n)
	}
	for n := range c.Builds {
		if !seen[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Local is an image built on this machine and stored in the cache.
type Local struct {
	Name     string            `json:"name"`
	Disk     string            `json:"disk"`   // digest of the raw root filesystem
	Kernel   string            `json:"kernel"` // digest of vmlinuz (direct boot)
	Initrd   string            `json:"initrd"` // digest of the initramfs
	Format   string            `json:"format"`
	Built    time.Time         `json:"built"`
	Packages map[string]string `json:"packages,omitempty"`
	// FastSeed says the image carries the envctl-seed unit, so it can boot
	// with cloud-init=disabled and still take keys from the seed.
	FastSeed bool `json:"fast_seed"`
	// Recipe is the hash of the scripts the image was built with.
	Recipe string `json:"recipe,omitempty"`
}

// Stale reports whether the image was built from other scripts than this envctl carries.
func (l Local) Stale() bool { return l.Recipe != scripts.RecipeHash() }

// Ref is a resolved image: exactly what a lock file pins.
type Ref struct {
	Name   string `json:"name" yaml:"name"`
	Kind   string `json:"kind" yaml:"kind"` // "download" or "local"
	URL    string `json:"url,omitempty" yaml:"url,omitempty"`
	Digest string `json:"digest" yaml:"digest"`
	Format string `json:"format" yaml:"format"`
	Kernel string `json:"kernel,omitempty" yaml:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty" yaml:"initrd,omitempty"`
}

// Files are the on-disk files a VM boots from.
type Files struct {
	Disk, Format, Kernel, Initrd string
	FastSeed                     bool
	Packages                     map[string]string
}

func registryPath(c *cache.Cache) string { return filepath.Join(c.Dir, "images", "local.json") }

// LocalImages reads the registry of local builds.
func LocalImages(c *cache.Cache) (map[string]Local, error) {
	out := map[string]Local{}
	b, err := os.ReadFile(registryPath(c))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, fault.Infraf("image registry %s: %w", registryPath(c), err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fault.Infraf("image registry %s is corrupt (%v); delete it and run `envctl image build` again", registryPath(c), err)
	}
	return out, nil
}

func saveLocal(ctx context.Context, c *cache.Cache, mutate func(map[string]Local)) error {
	unlock, err := c.Lock(ctx, "image-registry")
	if err != nil {
		return err
	}
	defer unlock()
	all, err := LocalImages(c)
	if err != nil {
		return err
	}
	mutate(all)
	b, _ := json.MarshalIndent(all, "", "  ")
	if err := os.MkdirAll(filepath.Dir(registryPath(c)), 0o755); err != nil {
		return fault.Infraf("image registry: %w", err)
	}
	tmp := registryPath(c) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fault.Infraf("image registry %s: %w", tmp, err)
	}
	return os.Rename(tmp, registryPath(c))
}

// Resolve picks the image a name stands for: a local build of that name
// when one exists (the newest), else the catalog's pinned download.
func Resolve(c *cache.Cache, cat *Catalog, name string) (Ref, error) {
	locals, err := LocalImages(c)
	if err != nil {
		return Ref{}, err
	}
	if l, ok := locals[name]; ok {
		return Ref{Name: name, Kind: "local", Digest: l.Disk, Format: l.Format, Kernel: l.Kernel, Initrd: l.Initrd}, nil
	}
	if r, ok := cat.Images[name]; ok {
		return Ref{Name: name, Kind: "download", URL: r.URL, Digest: r.Digest, Format: r.Format}, nil
	}
	if _, ok := cat.Builds[name]; ok {
		return Ref{}, fault.Inputf("image %q has no download and no local build yet; run `envctl image build %s`", name, name)
	}
	return Ref{}, fault.Inputf("unknown image %q; known: %s (see `envctl image ls`)", name, strings.Join(cat.Names(), ", "))
}

// Ensure makes the image's files present in the cache, downloading a
// download-kind image when needed, and returns their paths.
func Ensure(ctx context.Context, c *cache.Cache, ref Ref) (Files, error) {
	d, err := cache.ParseDigest(ref.Digest)
	if err != nil {
		return Files{}, fault.Inputf("image %s: %w", ref.Name, err)
	}
	switch ref.Kind {
	case "download":
		p, err := c.Fetch(ctx, ref.URL, d)
		if err != nil {
			return Files{}, err
		}
		return Files{Disk: p, Format: ref.Format}, nil
	case "local":
		locals, err := LocalImages(c)
		if err != nil {
			return Files{}, err
		}
		var l *Local
		for _, x := range locals {
			if x.Disk == ref.Digest {
				x := x
				l = &x
			}
		}
		f := Files{Format: ref.Format}
		for _, part := range []struct {
			digest string
			dst    *string
		}{{ref.Digest, &f.Disk}, {ref.Kernel, &f.Kernel}, {ref.Initrd, &f.Initrd}} {
			if part.digest == "" {
				continue
			}
			pd, err := cache.ParseDigest(part.digest)
			if err != nil {
				return Files{}, fault.Inputf("image %s: %w", ref.Name, err)
			}
			p, ok := c.Has(pd)
			if !ok {
				return Files{}, fault.Inputf("image %s: the locked local build %s is no longer in the cache %s; run `envctl image build %s` and then `envctl lock` again", ref.Name, part.digest, c.Dir, ref.Name)
			}
			*part.dst = p
		}
		if l != nil {
			f.FastSeed, f.Packages = l.FastSeed, l.Packages
		}
		return f, nil
	}
	return Files{}, fault.Inputf("image %s: unknown kind %q in the lock; run `envctl lock` again", ref.Name, ref.Kind)
}

// PackagesOf returns the package manifest of a locked local image, if known.
func PackagesOf(c *cache.Cache, ref Ref) map[string]string {
	locals, err := LocalImages(c)
	if err != nil {
		return nil
	}
	for _, l := range locals {
		if l.Disk == ref.Digest {
			return l.Packages
		}
	}
	return nil
}
