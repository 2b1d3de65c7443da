package profiles

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// ComponentSpec pins one component: a version or constraint, the runtime's
// name, and where its bits come from.
type ComponentSpec struct {
	Name    string `json:"name,omitempty" yaml:"name,omitempty"`
	Version string `json:"version" yaml:"version"`
	Source  Source `json:"source,omitempty" yaml:"source,omitempty"`
	// Commit pins the source commit a gomod version must come from: the
	// explicit way to accept a module snapshot whose tag moved upstream.
	Commit string `json:"commit,omitempty" yaml:"commit,omitempty"`
}

// VM is the virtual machine's shape.
type VM struct {
	CPUs   int  `json:"cpus" yaml:"cpus"`
	Memory Size `json:"memory" yaml:"memory"`
	Disk   Size `json:"disk" yaml:"disk"`
}

// Matrix expands a profile into cells: every combination of the axes'
// values except the excluded ones.
type Matrix struct {
	Axes    map[Role][]AxisValue `json:"axes" yaml:"axes"`
	Exclude []map[Role]string    `json:"exclude,omitempty" yaml:"exclude,omitempty"`
	// Include adds cells after the expansion and its exclusions, as
	// GitHub Actions' matrix include does: each entry pins some roles.
	Include []map[Role]AxisValue `json:"include,omitempty" yaml:"include,omitempty"`
}

// AxisValue is one value of a matrix axis: a label such as "1.30.0" or
// "crun@1.8.1", and the pin it stands for.
type AxisValue struct {
	Label string        `json:"label" yaml:"label"`
	Spec  ComponentSpec `json:"spec" yaml:"spec"`
}

// Profile is a loaded, validated profile (versions not yet resolved).
type Profile struct {
	Name        string                 `json:"name" yaml:"name"`
	Description string                 `json:"description,omitempty" yaml:"description,omitempty"`
	Image       string                 `json:"image" yaml:"image"`
	Source      Source                 `json:"source,omitempty" yaml:"source,omitempty"`
	VM          VM                     `json:"vm" yaml:"vm"`
	Components  map[Role]ComponentSpec `json:"components" yaml:"components"`
	Test        TestName               `json:"test" yaml:"test"`
	Matrix      *Matrix                `json:"matrix,omitempty" yaml:"matrix,omitempty"`

	// Path is the file the profile came from.
	Path string `json:"-" yaml:"-"`
}

// Defaults applied when a profile leaves a field out.
const (
	DefaultImage  = "debian-12"
	DefaultCPUs   = 2
	DefaultMemory = Size(2 << 30)
	DefaultDisk   = Size(10 << 30)
	DefaultTest   = TestImageVolume
)

// Inputs lists every field of the profile that decides what a lock pins,
// flattened to "key: value" pairs such as "components.runtime.version".
// A lock records them, so a stale lock can name the field that changed.
func (p *Profile) Inputs() map[string]string {
	in := map[string]string{"image": p.Image, "source": string(p.Source), "test": string(p.Test)}
	for role, c := range p.Components {
		k := "components." + string(role)
		in[k+".version"] = c.Version
		if c.Name != "" {
			in[k+".name"] = c.Name
		}
		if c.Source != "" {
			in[k+".source"] = string(c.Source)
		}
		if c.Commit != "" {
			in[k+".commit"] = c.Commit
		}
	}
	if p.Matrix != nil {
		for role, vals := range p.Matrix.Axes {
			labels := make([]string, len(vals))
			for i, v := range vals {
				labels[i] = v.Label
				if v.Spec.Source != "" {
					labels[i] += " from " + string(v.Spec.Source)
				}
			}
			in["matrix."+string(role)] = strings.Join(labels, ", ")
		}
		var inc []string
		for _, e := range p.Matrix.Include {
			var parts []string
			for _, r := range slices.Sorted(maps.Keys(e)) {
				parts = append(parts, string(r)+"="+e[r].Label+" from "+string(e[r].Spec.Source))
			}
			inc = append(inc, "{"+strings.Join(parts, ",")+"}")
		}
		if len(inc) > 0 {
			in["matrix.include"] = strings.Join(inc, ", ")
		}
		var ex []string
		for _, e := range p.Matrix.Exclude {
			var parts []string
			for _, r := range slices.Sorted(maps.Keys(e)) {
				parts = append(parts, string(r)+"="+e[r])
			}
			ex = append(ex, "{"+strings.Join(parts, ",")+"}")
		}
		if len(ex) > 0 {
			in["matrix.exclude"] = strings.Join(ex, ", ")
		}
	}
	for k, v := range in {
		if v == "" {
			delete(in, k)
		}
	}
	return in
}

// Hash is a digest of Inputs: a lock records it, and every later step
// compares it.
func (p *Profile) Hash() string { return HashInputs(p.Inputs()) }

// HashInputs digests a set of inputs (keys sorted, so order never matters).
func HashInputs(in map[string]string) string {
	type kv struct{ K, V string }
	var list []kv
	for _, k := range slices.Sorted(maps.Keys(in)) {
		list = append(list, kv{k, in[k]})
	}
	b, _ := json.Marshal(list)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LockPath is where this profile's lock file lives.
func (p *Profile) LockPath() string { return LockPathOf(p.Path) }

// LockPathOf is the lock file next to a profile file.
func LockPathOf(profilePath string) string {
	return strings.TrimSuffix(strings.TrimSuffix(profilePath, ".yaml"), ".yml") + ".lock"
}

// Cell is one concrete combination of pins: the profile itself, or one
// cell of its matrix.
type Cell struct {
	Name       string                 `json:"name" yaml:"name"`
	Values     map[Role]string        `json:"axes,omitempty" yaml:"axes,omitempty"`
	Components map[Role]ComponentSpec `json:"components" yaml:"components"`
}

// axes returns the matrix axes in role order.
func (p *Profile) axes() []Role {
	if p.Matrix == nil {
		return nil
	}
	axes := slices.Collect(maps.Keys(p.Matrix.Axes))
	slices.SortFunc(axes, func(a, b Role) int { return roleIndex(a) - roleIndex(b) })
	return axes
}

// CellCount is the number of cells the matrix expands to, before
// exclusions, computed without expanding it.
func (p *Profile) CellCount() int {
	n := 1
	for _, a := range p.axes() {
		n *= len(p.Matrix.Axes[a])
		if n > 1<<20 {
			return n
		}
	}
	if p.Matrix != nil {
		n += len(p.Matrix.Include)
	}
	return n
}

// CellName names a cell by its axis values, for example
// "cri-tools=1.30.0,runtime=runc@1.3.6". The name is stable: it depends
// only on the values, in role order.
func CellName(values map[Role]string) string {
	roles := slices.Collect(maps.Keys(values))
	slices.SortFunc(roles, func(a, b Role) int { return roleIndex(a) - roleIndex(b) })
	parts := make([]string, len(roles))
	for i, r := range roles {
		parts[i] = string(r) + "=" + values[r]
	}
	return strings.Join(parts, ",")
}

// Cells expands the matrix. A profile without a matrix is one cell named
// after the profile.
func (p *Profile) Cells() []Cell {
	axes := p.axes()
	if len(axes) == 0 && (p.Matrix == nil || len(p.Matrix.Include) == 0) {
		return []Cell{{Name: p.Name, Components: maps.Clone(p.Components)}}
	}
	var cells []Cell
	vals := map[Role]AxisValue{}
	var walk func(i int)
	walk = func(i int) {
		if i == len(axes) {
			c := Cell{Values: map[Role]string{}, Components: maps.Clone(p.Components)}
			for _, a := range axes {
				c.Values[a] = vals[a].Label
				c.Components[a] = applyAxis(c.Components[a], vals[a].Spec)
			}
			if p.excluded(c.Values) {
				return
			}
			c.Name = CellName(c.Values)
			cells = append(cells, c)
			return
		}
		for _, v := range p.Matrix.Axes[axes[i]] {
			vals[axes[i]] = v
			walk(i + 1)
		}
	}
	if len(axes) > 0 {
		walk(0)
	}
	for _, inc := range p.Matrix.Include {
		c := Cell{Values: map[Role]string{}, Components: maps.Clone(p.Components)}
		for role, v := range inc {
			c.Values[role] = v.Label
			c.Components[role] = applyAxis(c.Components[role], v.Spec)
		}
		c.Name = CellName(c.Values)
		if !slices.ContainsFunc(cells, func(x Cell) bool { return x.Name == c.Name }) {
			cells = append(cells, c)
		}
	}
	return cells
}

// ParseCellName reads a matrix cell's axis values back from its name
// ("cri-tools=1.30.0,runtime=runc@1.3.6"); a profile's only cell, named
// after the profile, has none.
func ParseCellName(name string) map[Role]string {
	out := map[Role]string{}
	for _, part := range strings.Split(name, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil
		}
		role, err := ParseRole(k)
		if err != nil {
			return nil
		}
		out[role] = v
	}
	return out
}

func (p *Profile) excluded(vals map[Role]string) bool {
	for _, ex := range p.Matrix.Exclude {
		match := len(ex) > 0
		for k, v := range ex {
			if vals[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

// applyAxis lays an axis value over the profile's own pin. Changing the
// runtime's name drops the base source, which belonged to the other runtime.
func applyAxis(base, axis ComponentSpec) ComponentSpec {
	out := base
	if axis.Name != "" && axis.Name != base.Name {
		out.Name, out.Source = axis.Name, ""
	}
	out.Version = axis.Version
	if axis.Source != "" {
		out.Source = axis.Source
	}
	return out
}

// CatalogName maps a role and its pin to the release catalog's component
// name: the runtime role is runc or crun, every other role is its own name.
func CatalogName(role Role, spec ComponentSpec) string {
	if role == RoleRuntime {
		return spec.Name
	}
	return string(role)
}

// EffectiveSource is the source a component comes from after defaults:
// conmon and the CNI plugins come from the CRI-O bundle when CRI-O is a
// release, else from the guest's packages; everything else from the
// profile's default source, or release.
func (p *Profile) EffectiveSource(role Role, spec ComponentSpec) Source {
	if spec.Source != "" {
		return spec.Source
	}
	if role == RoleConmon || role == RoleCNI {
		crio := p.Components[RoleCRIO].Source
		if crio == "" {
			crio = p.Source
		}
		if crio == "" || crio == SourceRelease {
			return SourceBundle
		}
		return SourcePackage
	}
	if p.Source != "" {
		return p.Source
	}
	return SourceRelease
}

// CellNamed picks the one cell a single run may take: the named one, or
// the only one. A matrix needs a name.
func (p *Profile) CellNamed(name string) (string, error) {
	cells := p.Cells()
	if name == "" {
		if len(cells) > 1 {
			return "", &Error{File: p.Path, Field: "matrix", Msg: fmt.Sprintf("the matrix has %d cells; run `envctl matrix %s`, or pick one with --cell (e.g. --cell '%s')", len(cells), p.Name, cells[0].Name)}
		}
		return cells[0].Name, nil
	}
	for _, c := range cells {
		if c.Name == name {
			return name, nil
		}
	}
	return "", &Error{File: p.Path, Field: "matrix", Msg: fmt.Sprintf("no cell %q; `envctl show %s` lists them", name, p.Name)}
}

// CellsMatching lists the cells that match any of the patterns (every
// cell when there are none): a glob ("cri-tools=1.3*") or else a part of
// the name ("runc").
func (p *Profile) CellsMatching(patterns []string) ([]string, error) {
	match := func(name, pat string) bool {
		if strings.ContainsAny(pat, "*?[") {
			ok, _ := path.Match(pat, name)
			return ok
		}
		return strings.Contains(name, pat)
	}
	var names []string
	for _, c := range p.Cells() {
		if len(patterns) == 0 || slices.ContainsFunc(patterns, func(s string) bool { return match(c.Name, s) }) {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return nil, &Error{File: p.Path, Field: "matrix", Msg: fmt.Sprintf("no cell matches %s; `envctl show %s` lists them", strings.Join(patterns, ", "), p.Name)}
	}
	return names, nil
}
