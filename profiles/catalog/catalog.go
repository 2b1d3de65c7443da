package catalog

import (
	"bytes"
	"cmp"
	_ "embed"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-version"
	"go.yaml.in/yaml/v3"
)

//go:embed components.yaml
var embedded []byte

// Release describes where upstream publishes a component's artifacts and
// how they are laid out.
type Release struct {
	URL            string `yaml:"url"`
	ChecksumURL    string `yaml:"checksum_url"`
	ChecksumFormat string `yaml:"checksum_format"` // "hex" or "sha256sum"
	ChecksumName   string `yaml:"checksum_name,omitempty"`
	// Layout maps each binary to its path inside the unpacked archive. An
	// empty layout means the artifact is the binary itself.
	Layout map[string]string `yaml:"layout,omitempty"`
	// Bundles lists the other components this artifact carries (the CRI-O
	// bundle carries conmon and the CNI plugins).
	Bundles map[string]Bundled `yaml:"bundles,omitempty"`
}

// Archive reports whether the artifact is a .tar.gz to unpack.
func (r *Release) Archive() bool { return len(r.Layout) > 0 }

// Bundled is a component inside another's release archive.
type Bundled struct {
	Files map[string]string `yaml:"files,omitempty"` // binary → path in the archive
	Dir   string            `yaml:"dir,omitempty"`   // a directory of plugins
}

// GoModule says how to build a component from the Go module proxy.
type GoModule struct {
	Module string `yaml:"module"`
	Recipe string `yaml:"recipe"`
}

// Component is one catalog entry: the facts about a component.
type Component struct {
	Name        string `yaml:"-"`
	Description string `yaml:"description"`
	// Runtime marks an OCI runtime (the profile's runtime role).
	Runtime bool `yaml:"runtime,omitempty"`
	// Binaries are installed into the guest; the first answers VersionArgs.
	Binaries []string `yaml:"binaries"`
	// Directory marks a component installed as a whole directory (the
	// CNI plugins); Binaries names the one that reports the version.
	Directory   bool      `yaml:"directory,omitempty"`
	VersionArgs []string  `yaml:"version_args"`
	Package     string    `yaml:"package"`
	Sources     []string  `yaml:"sources"`
	Versions    []string  `yaml:"versions"`
	Release     *Release  `yaml:"release,omitempty"`
	GoMod       *GoModule `yaml:"gomod,omitempty"`

	sorted []*version.Version
}

// Main is the binary that reports the component's version.
func (c *Component) Main() string { return c.Binaries[0] }

// AllowsSource reports whether the component can come from a source kind.
func (c *Component) AllowsSource(kind string) bool { return slices.Contains(c.Sources, kind) }

// Catalog is the whole release catalog.
type Catalog struct {
	Components map[string]*Component `yaml:"components"`
	// Tools are what upstream test suites need in the guest besides the
	// stack, pinned like artifacts (bats for CRI-O's own test files).
	Tools map[string]*Tool `yaml:"tools"`
}

// Tool is a pinned file a test suite needs in the guest: a Debian package
// by URL and the sha256 its archive's Packages index publishes.
type Tool struct {
	Name    string `yaml:"-"`
	Version string `yaml:"version"`
	URL     string `yaml:"url"`
	SHA256  string `yaml:"sha256"`
	Note    string `yaml:"note,omitempty"`
}

// Tool returns a tool by name.
func (c *Catalog) Tool(name string) (*Tool, error) {
	t, ok := c.Tools[name]
	if !ok {
		return nil, fmt.Errorf("the catalog pins no tool %q", name)
	}
	return t, nil
}

// Default returns the embedded catalog, parsed once.
var Default = sync.OnceValue(func() *Catalog {
	c, err := Parse(embedded)
	if err != nil {
		// The embedded file is checked by tests; reaching this is a build defect.
		panic(fmt.Sprintf("embedded release catalog: %v", err))
	}
	return c
})

// Parse reads a catalog from YAML, refusing unknown fields.
func Parse(data []byte) (*Catalog, error) {
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("release catalog: %w", err)
	}
	for name, t := range c.Tools {
		t.Name = name
		if t.URL == "" || len(t.SHA256) != 64 {
			return nil, fmt.Errorf("release catalog: tool %s needs a url and a sha256", name)
		}
	}
	for name, comp := range c.Components {
		comp.Name = name
		if len(comp.Binaries) == 0 {
			return nil, fmt.Errorf("release catalog: component %s lists no binaries", name)
		}
		for _, s := range comp.Versions {
			v, err := version.NewVersion(s)
			if err != nil {
				return nil, fmt.Errorf("release catalog: component %s: version %q: %w", name, s, err)
			}
			comp.sorted = append(comp.sorted, v)
		}
		slices.SortFunc(comp.sorted, func(a, b *version.Version) int { return a.Compare(b) })
	}
	return &c, nil
}

// Names lists the catalog's component names, sorted.
func (c *Catalog) Names() []string { return slices.Sorted(maps.Keys(c.Components)) }

// Get returns a component by name.
func (c *Catalog) Get(name string) (*Component, error) {
	comp, ok := c.Components[name]
	if !ok {
		return nil, fmt.Errorf("unknown component %q (known: %s)", name, strings.Join(c.Names(), ", "))
	}
	return comp, nil
}

// Sorted returns the known versions in ascending semantic order, as written
// in the catalog (crun's "1.14" stays "1.14").
func (c *Component) Sorted() []string {
	out := make([]string, len(c.sorted))
	for i, v := range c.sorted {
		out[i] = v.Original()
	}
	return out
}

// Resolve turns an exact version or a go-version constraint ("~> 1.34.0",
// ">= 1.31, < 1.35") into the newest matching catalog version. An exact
// version the catalog does not list is still accepted when allowUnknown is
// set (gomod and file sources can build or carry any version).
func (c *Component) Resolve(spec string, allowUnknown bool) (string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return "", fmt.Errorf("%s: empty version", c.Name)
	}
	if exact, err := version.NewVersion(strings.TrimPrefix(spec, "=")); err == nil {
		// Prefer the catalog's own spelling when it is the same text.
		for _, v := range c.sorted {
			if v.Equal(exact) && v.Original() == exact.Original() {
				return v.Original(), nil
			}
		}
		for _, v := range c.sorted {
			if v.Equal(exact) && v.Prerelease() == exact.Prerelease() {
				return v.Original(), nil
			}
		}
		if allowUnknown {
			return exact.Original(), nil
		}
		return "", fmt.Errorf("%s: version %s is not in the release catalog; nearest known: %s (run `envctl catalog %s`)",
			c.Name, spec, strings.Join(c.Nearest(exact, 3), ", "), c.Name)
	}
	cons, err := version.NewConstraint(spec)
	if err != nil {
		return "", fmt.Errorf("%s: %q is neither a version nor a constraint (examples: \"1.34.0\", \"~> 1.34.0\", \">= 1.31\")", c.Name, spec)
	}
	for i := len(c.sorted) - 1; i >= 0; i-- {
		if cons.Check(c.sorted[i]) {
			return c.sorted[i].Original(), nil
		}
	}
	return "", fmt.Errorf("%s: constraint %q matches no catalog version; nearest known: %s (run `envctl catalog %s`)",
		c.Name, spec, strings.Join(c.nearestToConstraint(spec), ", "), c.Name)
}

// Nearest lists up to n catalog versions closest to v: the ones just below
// and just above it.
func (c *Component) Nearest(v *version.Version, n int) []string {
	idx, _ := slices.BinarySearchFunc(c.sorted, v, func(a, b *version.Version) int { return a.Compare(b) })
	lo, hi := idx-1, idx
	var out []*version.Version
	for len(out) < n && (lo >= 0 || hi < len(c.sorted)) {
		if lo >= 0 {
			out = append(out, c.sorted[lo])
			lo--
		}
		if len(out) < n && hi < len(c.sorted) {
			out = append(out, c.sorted[hi])
			hi++
		}
	}
	slices.SortFunc(out, func(a, b *version.Version) int { return a.Compare(b) })
	s := make([]string, len(out))
	for i, x := range out {
		s[i] = x.Original()
	}
	return s
}

// nearestToConstraint picks the first version-looking token of a
// constraint as the anchor for Nearest.
func (c *Component) nearestToConstraint(spec string) []string {
	for _, f := range strings.FieldsFunc(spec, func(r rune) bool { return strings.ContainsRune(" ,<>=~!", r) }) {
		if v, err := version.NewVersion(f); err == nil {
			return c.Nearest(v, 3)
		}
	}
	return c.Nearest(c.sorted[len(c.sorted)-1], 3)
}

// Expand fills a URL pattern for one version and architecture.
func Expand(pattern, ver, arch string) string {
	arch = cmp.Or(arch, runtime.GOARCH)
	return strings.NewReplacer("{version}", strings.TrimPrefix(ver, "v"), "{arch}", arch).Replace(pattern)
}

// Compare orders two version strings semantically, prerelease included;
// unparseable ones sort by text.
func Compare(a, b string) int {
	va, errA := version.NewVersion(a)
	vb, errB := version.NewVersion(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return va.Compare(vb)
}

// SameVersion reports whether two version strings name the same version,
// prerelease included: "1.8" and "1.8.0" match, "1.34.0-rc.1" and "1.34.0"
// do not.
func SameVersion(a, b string) bool {
	va, errA := version.NewVersion(a)
	vb, errB := version.NewVersion(b)
	if errA != nil || errB != nil {
		return strings.TrimPrefix(a, "v") == strings.TrimPrefix(b, "v")
	}
	return va.Equal(vb) && va.Prerelease() == vb.Prerelease()
}

// Embedded returns the embedded catalog's YAML text.
func Embedded() []byte { return slices.Clone(embedded) }

// Summary describes one component for `envctl catalog`.
type Summary struct {
	Component string   `json:"component"`
	Versions  []string `json:"versions"`
	Sources   []string `json:"sources"`
	Release   string   `json:"release_url,omitempty"`
	GoModule  string   `json:"gomod,omitempty"`
}

// Summaries describes the named components (all when names is empty).
func (c *Catalog) Summaries(names ...string) ([]Summary, error) {
	if len(names) == 0 {
		names = c.Names()
	}
	var out []Summary
	for _, n := range names {
		comp, err := c.Get(n)
		if err != nil {
			return nil, err
		}
		s := Summary{Component: n, Versions: comp.Sorted(), Sources: comp.Sources}
		if comp.Release != nil {
			s.Release = comp.Release.URL
		}
		if comp.GoMod != nil {
			s.GoModule = comp.GoMod.Module
		}
		out = append(out, s)
	}
	return out, nil
}

// WriteSummaries prints summaries for humans.
func WriteSummaries(w io.Writer, list []Summary) {
	for _, e := range list {
		fmt.Fprintf(w, "%s: %s\n  sources: %s\n", e.Component, strings.Join(e.Versions, " "), strings.Join(e.Sources, ", "))
		if e.Release != "" {
			fmt.Fprintf(w, "  release: %s\n", e.Release)
		}
		if e.GoModule != "" {
			fmt.Fprintf(w, "  gomod:   %s\n", e.GoModule)
		}
	}
}
