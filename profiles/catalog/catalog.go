package catalog

import (
	_ "embed"
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/hashicorp/go-version"
	"go.yaml.in/yaml/v3"
)

//go:embed components.yaml
var embedded []byte

// Release describes where upstream publishes a component's artifacts.
type Release struct {
	URL            string `yaml:"url"`
	ChecksumURL    string `yaml:"checksum_url"`
	ChecksumFormat string `yaml:"checksum_format"` // "hex" or "sha256sum"
	ChecksumName   string `yaml:"checksum_name,omitempty"`
	Bundle         bool   `yaml:"bundle,omitempty"`
}

// GoModule says how to build a component from the Go module proxy.
type GoModule struct {
	Module string `yaml:"module"`
	Recipe string `yaml:"recipe"`
}

// Component is one catalog entry.
type Component struct {
	Name           string    `yaml:"-"`
	Description    string    `yaml:"description"`
	Kind           string    `yaml:"kind,omitempty"`
	VersionCommand string    `yaml:"version_command,omitempty"`
	Versions       []string  `yaml:"versions"`
	Release        *Release  `yaml:"release,omitempty"`
	GoMod          *GoModule `yaml:"gomod,omitempty"`

	sorted []*version.Version
}

// Catalog is the whole release catalog.
type Catalog struct {
	Components map[string]*Component `yaml:"components"`
}

// Default returns the embedded catalog.
func Default() *Catalog {
	c, err := Parse(embedded)
	if err != nil {
		// The embedded file is checked by tests; reaching this is a build defect.
		panic(fmt.Sprintf("embedded release catalog: %v", err))
	}
	return c
}

// Parse reads a catalog from YAML.
func Parse(data []byte) (*Catalog, error) {
	var c Catalog
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("release catalog: %w", err)
	}
	for name, comp := range c.Components {
		comp.Name = name
		for _, s := range comp.Versions {
			v, err := version.NewVersion(s)
			if err != nil {
				return nil, fmt.Errorf("release catalog: component %s: version %q: %w", name, s, err)
			}
			comp.sorted = append(comp.sorted, v)
		}
		sort.Sort(version.Collection(comp.sorted))
	}
	return &c, nil
}

// Names lists the catalog's component names, sorted.
func (c *Catalog) Names() []string {
	var names []string
	for n := range c.Components {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

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
func (comp *Component) Sorted() []string {
	out := make([]string, len(comp.sorted))
	for i, v := range comp.sorted {
		out[i] = v.Original()
	}
	return out
}

// Resolve turns an exact version or a go-version constraint ("~> 1.34.0",
// ">= 1.31, < 1.35") into the newest matching catalog version. An exact
// version that the catalog does not list is still accepted when allowUnknown
// is set (gomod and file sources can build or carry any version).
func (comp *Component) Resolve(spec string, allowUnknown bool) (string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return "", fmt.Errorf("%s: empty version", comp.Name)
	}
	if exact, err := version.NewVersion(strings.TrimPrefix(spec, "=")); err == nil {
		for _, v := range comp.sorted {
			if v.Equal(exact) && v.Original() == exact.Original() {
				return v.Original(), nil
			}
		}
		for _, v := range comp.sorted {
			if v.Equal(exact) {
				return v.Original(), nil
			}
		}
		if allowUnknown {
			return exact.Original(), nil
		}
		return "", fmt.Errorf("%s: version %s is not in the release catalog; nearest known: %s (run `envctl catalog %s`)",
			comp.Name, spec, strings.Join(comp.Nearest(exact, 3), ", "), comp.Name)
	}
	cons, err := version.NewConstraint(spec)
	if err != nil {
		return "", fmt.Errorf("%s: %q is neither a version nor a constraint (examples: \"1.34.0\", \"~> 1.34.0\", \">= 1.31\")", comp.Name, spec)
	}
	for i := len(comp.sorted) - 1; i >= 0; i-- {
		if cons.Check(comp.sorted[i]) {
			return comp.sorted[i].Original(), nil
		}
	}
	return "", fmt.Errorf("%s: constraint %q matches no catalog version; nearest known: %s (run `envctl catalog %s`)",
		comp.Name, spec, strings.Join(comp.nearestToConstraint(spec), ", "), comp.Name)
}

// Nearest lists up to n catalog versions closest to v: the ones just below and just above it.
func (comp *Component) Nearest(v *version.Version, n int) []string {
	idx := sort.Search(len(comp.sorted), func(i int) bool { return !comp.sorted[i].LessThan(v) })
	lo, hi := idx-1, idx
	var out []*version.Version
	for len(out) < n && (lo >= 0 || hi < len(comp.sorted)) {
		if lo >= 0 {
			out = append(out, comp.sorted[lo])
			lo--
		}
		if len(out) < n && hi < len(comp.sorted) {
			out = append(out, comp.sorted[hi])
			hi++
		}
	}
	sort.Sort(version.Collection(out))
	s := make([]string, len(out))
	for i, x := range out {
		s[i] = x.Original()
	}
	return s
}

// nearestToConstraint picks the first version-looking token of a constraint
// as the anchor for Nearest.
func (comp *Component) nearestToConstraint(spec string) []string {
	for _, f := range strings.FieldsFunc(spec, func(r rune) bool { return strings.ContainsRune(" ,<>=~!", r) }) {
		if v, err := version.NewVersion(f); err == nil {
			return comp.Nearest(v, 3)
		}
	}
	return comp.Nearest(comp.sorted[len(comp.sorted)-1], 3)
}

// Expand fills a URL pattern for one version and architecture.
func Expand(pattern, ver, arch string) string {
	if arch == "" {
		arch = runtime.GOARCH
	}
	r := strings.NewReplacer("{version}", strings.TrimPrefix(ver, "v"), "{arch}", arch)
	return r.Replace(pattern)
}

// Compare orders two version strings semantically; unparseable ones sort by text.
func Compare(a, b string) int {
	va, errA := version.NewVersion(a)
	vb, errB := version.NewVersion(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return va.Compare(vb)
}

// Embedded returns the embedded catalog's YAML text.
func Embedded() []byte { return append([]byte(nil), embedded...) }
