package lock

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/fault"
)

// FormatVersion is the lock file format.
const FormatVersion = 1

// Artifact is one exactly pinned component build.
type Artifact struct {
	Component string `yaml:"component" json:"component"`
	Version   string `yaml:"version" json:"version"`
	Source    string `yaml:"source" json:"source"`
	URL       string `yaml:"url,omitempty" json:"url,omitempty"`
	SHA256    string `yaml:"sha256,omitempty" json:"sha256,omitempty"`
	Module    string `yaml:"module,omitempty" json:"module,omitempty"`
	ModuleSum string `yaml:"module_sum,omitempty" json:"module_sum,omitempty"`
	Recipe    string `yaml:"recipe,omitempty" json:"recipe,omitempty"`
	Package   string `yaml:"package,omitempty" json:"package,omitempty"`
	Bundle    string `yaml:"bundle,omitempty" json:"bundle,omitempty"` // key of the CRI-O bundle artifact
}

// Key identifies an artifact within a lock.
func (a Artifact) Key() string { return a.Component + "@" + a.Version + "/" + a.Source }

// Cell pins each role of one cell to an artifact key.
type Cell struct {
	Name       string            `yaml:"name" json:"name"`
	Components map[string]string `yaml:"components" json:"components"`
}

// File is a lock file.
type File struct {
	LockVersion int        `yaml:"lock_version" json:"lock_version"`
	Profile     string     `yaml:"profile" json:"profile"`
	ProfileHash string     `yaml:"profile_sha256" json:"profile_sha256"`
	Generated   time.Time  `yaml:"generated" json:"generated"`
	Arch        string     `yaml:"arch" json:"arch"`
	Image       images.Ref `yaml:"image" json:"image"`
	Artifacts   []Artifact `yaml:"artifacts" json:"artifacts"`
	Cells       []Cell     `yaml:"cells" json:"cells"`
}

// Artifact finds an artifact by key.
func (f *File) Artifact(key string) (Artifact, bool) {
	for _, a := range f.Artifacts {
		if a.Key() == key {
			return a, true
		}
	}
	return Artifact{}, false
}

// CellArtifacts returns a cell's artifacts by role.
func (f *File) CellArtifacts(cell string) (map[string]Artifact, error) {
	for _, c := range f.Cells {
		if c.Name != cell {
			continue
		}
		out := map[string]Artifact{}
		for role, key := range c.Components {
			a, ok := f.Artifact(key)
			if !ok {
				return nil, fault.Inputf("lock for %s: cell %s names artifact %s, which the lock does not hold; run `envctl lock %s`", f.Profile, cell, key, f.Profile)
			}
			out[role] = a
		}
		return out, nil
	}
	return nil, fault.Inputf("lock for %s has no cell %q; run `envctl lock %s`", f.Profile, cell, f.Profile)
}

// Resolver supplies what locking needs from the outside world.
type Resolver struct {
	Catalog *catalog.Catalog
	Images  *images.Catalog
	Cache   *cache.Cache
	HTTP    *http.Client
	Arch    string
	// Mirror replaces upstream hosts: URL https://HOST/PATH becomes MIRROR/HOST/PATH.
	Mirror string
	// ModuleSum returns the go.sum hash (h1:…) of module@version.
	ModuleSum func(ctx context.Context, module, version string) (string, error)
}

// Lock resolves every cell of a profile to exact artifacts.
func (r *Resolver) Lock(ctx context.Context, p *profiles.Profile) (*File, error) {
	cells, err := profiles.Resolve(r.Catalog, p)
	if err != nil {
		return nil, err
	}
	img, err := images.Resolve(r.Cache, r.Images, p.Image)
	if err != nil {
		return nil, fault.AsInput(fmt.Errorf("%s: image: %w", p.Path, err))
	}
	f := &File{LockVersion: FormatVersion, Profile: p.Name, ProfileHash: p.Hash(), Generated: time.Now().UTC().Truncate(time.Second), Arch: r.Arch, Image: img}
	done := map[string]bool{}
	pkgs := images.PackagesOf(r.Cache, img)
	for _, cell := range cells {
		lc := Cell{Name: cell.Name, Components: map[string]string{}}
		var crioKey string
		for _, comp := range cell.Components {
			a := Artifact{Component: comp.Name, Version: comp.Version, Source: comp.Source}
			if comp.Source == profiles.SourceBundle {
				crio, _ := cell.Component(profiles.RoleCRIO)
				crioKey = Artifact{Component: crio.Name, Version: crio.Version, Source: crio.Source}.Key()
				a.Bundle = crioKey
			}
			lc.Components[comp.Role] = a.Key()
			if done[a.Key()] {
				continue
			}
			if err := r.pin(ctx, p, &a, pkgs); err != nil {
				return nil, err
			}
			done[a.Key()] = true
			f.Artifacts = append(f.Artifacts, a)
		}
		f.Cells = append(f.Cells, lc)
	}
	sort.Slice(f.Artifacts, func(i, j int) bool { return f.Artifacts[i].Key() < f.Artifacts[j].Key() })
	return f, nil
}

func (r *Resolver) pin(ctx context.Context, p *profiles.Profile, a *Artifact, pkgs map[string]string) error {
	comp, err := r.Catalog.Get(a.Component)
	if err != nil {
		return fault.AsInput(err)
	}
	switch {
	case a.Source == profiles.SourceRelease || a.Source == profiles.SourceMirror:
		rel := comp.Release
		a.URL = catalog.Expand(rel.URL, a.Version, r.Arch)
		sumURL := catalog.Expand(rel.ChecksumURL, a.Version, r.Arch)
		if a.Source == profiles.SourceMirror {
			if r.Mirror == "" {
				return fault.Inputf("%s: %s uses source mirror, but ENVCTL_MIRROR is not set; set it to a URL or file:///dir laid out like upstream", p.Path, a.Component)
			}
			a.URL, sumURL = MirrorURL(r.Mirror, a.URL), MirrorURL(r.Mirror, sumURL)
		}
		body, err := cache.Get(ctx, r.HTTP, sumURL)
		if err != nil {
			return fmt.Errorf("lock %s %s: checksum: %w", a.Component, a.Version, err)
		}
		name := filepath.Base(a.URL)
		if rel.ChecksumName != "" {
			name = catalog.Expand(rel.ChecksumName, a.Version, r.Arch)
		}
		sum, err := ParseChecksum(body, rel.ChecksumFormat, name)
		if err != nil {
			return fault.Infraf("lock %s %s: checksum file %s: %w", a.Component, a.Version, sumURL, err)
		}
		a.SHA256 = sum
	case a.Source == profiles.SourceGoMod:
		a.Module, a.Recipe = comp.GoMod.Module, comp.GoMod.Recipe
		sum, err := r.ModuleSum(ctx, a.Module, "v"+a.Version)
		if err != nil {
			return fault.Infraf("lock %s %s: Go module %s@v%s: %w", a.Component, a.Version, a.Module, a.Version, err)
		}
		a.ModuleSum = sum
	case strings.HasPrefix(a.Source, profiles.SourceFile):
		path := strings.TrimPrefix(a.Source, "file://")
		d, err := cache.FileDigest(path, "sha256")
		if err != nil {
			return fault.Inputf("%s: %s source %s: %v; point it at an existing file", p.Path, a.Component, a.Source, err)
		}
		a.SHA256 = d.Hex
	case a.Source == profiles.SourcePackage:
		a.Package = debianPackage(a.Component)
		if pkgs != nil {
			have, ok := pkgs[a.Package]
			if !ok {
				return fault.Inputf("%s: %s: the image %s has no package %s; use another source", p.Path, a.Component, p.Image, a.Package)
			}
			if upstreamVersion(have) != a.Version {
				return fault.Inputf("%s: components.%s: the image %s ships %s %s, not %s; pin version %q or use another source",
					p.Path, a.Component, p.Image, a.Package, have, a.Version, upstreamVersion(have))
			}
		}
	case a.Source == profiles.SourceBundle:
		// Pinned through the CRI-O bundle's own digest.
	}
	return nil
}

// MirrorURL maps an upstream URL onto a mirror base.
func MirrorURL(mirror, upstream string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(upstream, "https://"), "http://")
	return strings.TrimSuffix(mirror, "/") + "/" + rest
}

func debianPackage(component string) string {
	switch component {
	case "cni-plugins":
		return "containernetworking-plugins"
	case "cri-tools":
		return "cri-tools"
	}
	return component
}

// upstreamVersion strips a Debian revision and epoch: "1:2.1.6+ds1-1" → "2.1.6".
func upstreamVersion(deb string) string {
	if _, v, ok := strings.Cut(deb, ":"); ok {
		deb = v
	}
	if i := strings.LastIndex(deb, "-"); i > 0 {
		deb = deb[:i]
	}
	if i := strings.IndexAny(deb, "+~"); i > 0 {
		deb = deb[:i]
	}
	return deb
}

var hexRE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// ParseChecksum reads a sha256 from a checksum file. Format "hex" is a file
// holding only the digest (crictl's .sha256); "sha256sum" is the
// `sha256sum` output format, one "DIGEST  NAME" per line (runc.sha256sum,
// crun CHECKSUMS, CRI-O's .sha256sum), where name picks the line.
func ParseChecksum(body []byte, format, name string) (string, error) {
	switch format {
	case "hex":
		f := strings.Fields(string(body))
		if len(f) == 0 || !hexRE.MatchString(f[0]) {
			return "", fmt.Errorf("expected a bare sha256 hex digest, got %q", truncate(string(body), 80))
		}
		return strings.ToLower(f[0]), nil
	case "sha256sum":
		sc := bufio.NewScanner(bytes.NewReader(body))
		var names []string
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || !hexRE.MatchString(f[0]) {
				continue
			}
			file := strings.TrimPrefix(filepath.Base(strings.TrimPrefix(f[1], "*")), "./")
			names = append(names, file)
			if file == name {
				return strings.ToLower(f[0]), nil
			}
		}
		if len(names) == 1 && name == "" {
			return "", fmt.Errorf("no entry named")
		}
		return "", fmt.Errorf("no line for %s (it lists: %s)", name, truncate(strings.Join(names, ", "), 200))
	}
	return "", fmt.Errorf("unknown checksum format %q", format)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// GoModuleSum asks the go command for module@version's go.sum hash. It
// downloads the module into the module cache through GOPROXY.
func GoModuleSum(ctx context.Context, module, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	var info struct {
		Sum   string
		Error string
	}
	_ = json.Unmarshal(out, &info)
	if info.Error != "" {
		return "", fmt.Errorf("the Go module proxy refused it: %s", info.Error)
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("go mod download: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("go mod download: %w (is the go command installed?)", err)
	}
	if info.Sum == "" {
		return "", fmt.Errorf("go mod download gave no sum")
	}
	return info.Sum, nil
}

// Write saves the lock next to the profile, atomically.
func Write(path string, f *File) error {
	var buf bytes.Buffer
	buf.WriteString("# Written by `envctl lock`. Do not edit: run `envctl lock PROFILE` again instead.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return fault.Infraf("lock %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fault.Infraf("lock %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fault.Infraf("lock %s: %w", path, err)
	}
	return nil
}

// Read loads a lock file.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fault.Inputf("lock %s is not a valid lock file (%v); run `envctl lock` to rewrite it", path, err)
	}
	return &f, nil
}

// DriftError says a profile and its lock disagree.
type DriftError struct{ Msg string }

func (e *DriftError) Error() string { return e.Msg }

// ForProfile loads the profile's lock and checks that it still matches the
// profile: same hash, same format, same architecture.
func ForProfile(p *profiles.Profile, arch string) (*File, error) {
	path := p.LockPath()
	f, err := Read(path)
	if os.IsNotExist(err) {
		return nil, &fault.Error{Kind: fault.Input, Err: &DriftError{fmt.Sprintf("%s: profile %s has no lock file %s; run `envctl lock %s` first", p.Path, p.Name, path, p.Path)}}
	}
	if err != nil {
		return nil, err
	}
	switch {
	case f.LockVersion != FormatVersion:
		return nil, &fault.Error{Kind: fault.Input, Err: &DriftError{fmt.Sprintf("%s: lock format %d, this envctl writes %d; run `envctl lock %s`", path, f.LockVersion, FormatVersion, p.Path)}}
	case f.ProfileHash != p.Hash():
		return nil, &fault.Error{Kind: fault.Input, Err: &DriftError{fmt.Sprintf("%s: the profile changed since %s was written (profile hash %s, lock has %s); run `envctl lock %s` to re-pin it", p.Path, path, short(p.Hash()), short(f.ProfileHash), p.Path)}}
	case f.Arch != arch:
		return nil, &fault.Error{Kind: fault.Input, Err: &DriftError{fmt.Sprintf("%s: locked for %s, this host is %s; run `envctl lock %s`", path, f.Arch, arch, p.Path)}}
	}
	return f, nil
}

func short(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
