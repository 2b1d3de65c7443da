package profiles

import (
	"fmt"
	"slices"
	"strings"

	"github.com/envctl/envctl/profiles/catalog"
)

// Resolved is one component with its exact version.
type Resolved struct {
	Role    Role   `json:"role" yaml:"role"`
	Name    string `json:"name" yaml:"name"` // catalog name: cri-o, cri-tools, runc, crun, conmon, cni-plugins
	Spec    string `json:"spec" yaml:"spec"`
	Version string `json:"version" yaml:"version"`
	Source  Source `json:"source" yaml:"source"`
	// Commit is the source commit the profile pins (gomod only).
	Commit string `json:"commit,omitempty" yaml:"commit,omitempty"`
	// Label is what the lock says the version really is, when that is
	// more than the version (a module snapshot whose tag moved).
	Label string `json:"label,omitempty" yaml:"label,omitempty"`
}

// ResolvedCell is a cell with every component resolved.
type ResolvedCell struct {
	Name       string          `json:"name" yaml:"name"`
	Axes       map[Role]string `json:"axes,omitempty" yaml:"axes,omitempty"`
	Image      string          `json:"image" yaml:"image"`
	VM         VM              `json:"vm" yaml:"vm"`
	Test       TestName        `json:"test" yaml:"test"`
	Components []Resolved      `json:"components" yaml:"components"`
}

// Component returns the resolved component in a role, if pinned.
func (c ResolvedCell) Component(role Role) (Resolved, bool) {
	for _, r := range c.Components {
		if r.Role == role {
			return r, true
		}
	}
	return Resolved{}, false
}

// Versions maps each component's catalog name to its version.
func (c ResolvedCell) Versions() map[string]string {
	out := map[string]string{}
	for _, r := range c.Components {
		out[r.Name] = r.Version
	}
	return out
}

// ResolveComponent resolves one component's version against the catalog
// and checks that its source can work for it.
func ResolveComponent(cat *catalog.Catalog, p *Profile, role Role, spec ComponentSpec) (Resolved, error) {
	name := CatalogName(role, spec)
	comp, err := cat.Get(name)
	if err != nil {
		return Resolved{}, err
	}
	source := p.EffectiveSource(role, spec)
	kind := source.Kind()
	if !comp.AllowsSource(string(kind)) {
		return Resolved{}, fmt.Errorf("%s cannot come from source %s; it can come from %s", name, kind, strings.Join(comp.Sources, ", "))
	}
	if spec.Commit != "" && kind != KindGoMod {
		return Resolved{}, fmt.Errorf("%s: a commit pins a Go module snapshot; only source gomod takes one (this one is %s)", name, kind)
	}
	if kind == KindBundle {
		crio := p.Components[RoleCRIO]
		if k := p.EffectiveSource(RoleCRIO, crio).Kind(); k != KindRelease && k != KindMirror {
			return Resolved{}, fmt.Errorf("%s comes from the CRI-O release bundle, but CRI-O comes from %s; use source package", name, k)
		}
	}
	// Sources that build or carry their own bits accept exact versions the
	// catalog does not list yet; release downloads need a catalog entry.
	allowUnknown := kind != KindRelease && kind != KindMirror
	ver, err := comp.Resolve(spec.Version, allowUnknown)
	if err != nil {
		return Resolved{}, err
	}
	if (kind == KindRelease || kind == KindMirror) && comp.Release == nil {
		return Resolved{}, fmt.Errorf("%s has no standalone upstream release; use source %s", name, strings.Join(slices.DeleteFunc(slices.Clone(comp.Sources), func(s string) bool { return s == "release" || s == "mirror" }), " or "))
	}
	return Resolved{Role: role, Name: name, Spec: spec.Version, Version: ver, Source: source, Commit: spec.Commit}, nil
}

// Resolve expands the matrix and resolves every cell.
func Resolve(cat *catalog.Catalog, p *Profile) ([]ResolvedCell, error) {
	var out []ResolvedCell
	for _, cell := range p.Cells() {
		rc := ResolvedCell{Name: cell.Name, Axes: cell.Values, Image: p.Image, VM: p.VM, Test: p.Test}
		for _, role := range Roles {
			spec, ok := cell.Components[role]
			if !ok {
				continue
			}
			r, err := ResolveComponent(cat, p, role, spec)
			if err != nil {
				return nil, &Error{File: p.Path, Field: "components." + string(role), Msg: err.Error()}
			}
			rc.Components = append(rc.Components, r)
		}
		out = append(out, rc)
	}
	return out, nil
}
