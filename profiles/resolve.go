package profiles

import (
	"fmt"
	"sort"
	"strings"

	"github.com/envctl/envctl/profiles/catalog"
)

// Resolved is one component with its exact version.
type Resolved struct {
	Role    string `json:"role" yaml:"role"`
	Name    string `json:"name" yaml:"name"` // catalog name: cri-o, cri-tools, runc, crun, conmon, cni-plugins
	Spec    string `json:"spec" yaml:"spec"`
	Version string `json:"version" yaml:"version"`
	Source  string `json:"source" yaml:"source"`
}

// ResolvedCell is a cell with every component resolved.
type ResolvedCell struct {
	Name       string            `json:"name" yaml:"name"`
	Axes       map[string]string `json:"axes,omitempty" yaml:"axes,omitempty"`
	Image      string            `json:"image" yaml:"image"`
	VM         VM                `json:"vm" yaml:"vm"`
	Test       string            `json:"test" yaml:"test"`
	Components []Resolved        `json:"components" yaml:"components"`
}

// Component returns the resolved component in a role, if pinned.
func (c ResolvedCell) Component(role string) (Resolved, bool) {
	for _, r := range c.Components {
		if r.Role == role {
			return r, true
		}
	}
	return Resolved{}, false
}

// Versions prints "cri-o 1.34.0, cri-tools 1.30.0, runc 1.3.6".
func (c ResolvedCell) Versions() string {
	var parts []string
	for _, r := range c.Components {
		parts = append(parts, r.Name+" "+r.Version)
	}
	return strings.Join(parts, ", ")
}

// ResolveComponent resolves one component's version against the catalog.
func ResolveComponent(cat *catalog.Catalog, p *Profile, role string, spec ComponentSpec) (Resolved, error) {
	name := CatalogName(role, spec)
	comp, err := cat.Get(name)
	if err != nil {
		return Resolved{}, err
	}
	source := p.EffectiveSource(role, spec)
	// Sources that build or carry their own bits accept exact versions the
	// catalog does not list yet; release downloads need a catalog entry.
	allowUnknown := source != SourceRelease && source != SourceMirror
	ver, err := comp.Resolve(spec.Version, allowUnknown)
	if err != nil {
		return Resolved{}, err
	}
	if source == SourceGoMod && comp.GoMod == nil {
		return Resolved{}, fmt.Errorf("%s cannot be built from the Go module proxy (it is not a Go module); use source release, package or file:///path", name)
	}
	if (source == SourceRelease || source == SourceMirror) && comp.Release == nil {
		return Resolved{}, fmt.Errorf("%s has no standalone upstream release; use source bundle (with a release CRI-O) or package", name)
	}
	return Resolved{Role: role, Name: name, Spec: spec.Version, Version: ver, Source: source}, nil
}

// Resolve expands the matrix and resolves every cell.
func Resolve(cat *catalog.Catalog, p *Profile) ([]ResolvedCell, error) {
	var out []ResolvedCell
	for _, cell := range p.Cells() {
		rc := ResolvedCell{Name: cell.Name, Axes: cell.Values, Image: p.Image, VM: p.VM, Test: p.Test}
		roles := make([]string, 0, len(cell.Components))
		for r := range cell.Components {
			roles = append(roles, r)
		}
		sort.Slice(roles, func(i, j int) bool { return roleIndex(roles[i]) < roleIndex(roles[j]) })
		for _, role := range roles {
			r, err := ResolveComponent(cat, p, role, cell.Components[role])
			if err != nil {
				return nil, &Error{File: p.Path, Field: "components." + role, Msg: err.Error()}
			}
			rc.Components = append(rc.Components, r)
		}
		out = append(out, rc)
	}
	return out, nil
}
