package profiles

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Component roles a profile may pin. "runtime" names runc or crun.
const (
	RoleCRIO     = "cri-o"
	RoleCRITools = "cri-tools"
	RoleRuntime  = "runtime"
	RoleConmon   = "conmon"
	RoleCNI      = "cni-plugins"
)

// Roles lists the component roles in install order.
var Roles = []string{RoleCRIO, RoleCRITools, RoleRuntime, RoleConmon, RoleCNI}

// Runtimes lists the OCI runtimes a profile's runtime component may name.
var Runtimes = []string{"runc", "crun"}

// Sources a component may come from.
const (
	SourceRelease = "release" // upstream release artifact, checksum-verified
	SourceGoMod   = "gomod"   // built from the Go module proxy at the exact version
	SourceMirror  = "mirror"  // ENVCTL_MIRROR, laid out like upstream
	SourcePackage = "package" // the guest image's distribution package
	SourceBundle  = "bundle"  // shipped inside the CRI-O release bundle
	SourceFile    = "file://" // prefix: a local file
)

// Tests envctl can run.
var Tests = []string{"image-volume-lifecycle", "none"}

// ComponentSpec pins one component.
type ComponentSpec struct {
	Name    string `json:"name,omitempty" yaml:"name,omitempty" mapstructure:"name"`
	Version string `json:"version" yaml:"version" mapstructure:"version"`
	Source  string `json:"source,omitempty" yaml:"source,omitempty" mapstructure:"source"`
}

// VM is the virtual machine's shape.
type VM struct {
	CPUs   int  `json:"cpus" yaml:"cpus"`
	Memory Size `json:"memory" yaml:"memory"`
	Disk   Size `json:"disk" yaml:"disk"`
}

// Matrix expands a profile into cells: every combination of the axes' values
// except the excluded ones.
type Matrix struct {
	Axes    map[string][]AxisValue `json:"axes" yaml:"axes"`
	Exclude []map[string]string    `json:"exclude,omitempty" yaml:"exclude,omitempty"`
}

// AxisValue is one value of a matrix axis: a label such as "1.30.0" or
// "crun@1.8.1", and the component pin it stands for.
type AxisValue struct {
	Label string        `json:"label" yaml:"label"`
	Spec  ComponentSpec `json:"spec" yaml:"spec"`
}

// Profile is a loaded, validated profile (versions not yet resolved).
type Profile struct {
	Name        string                   `json:"name" yaml:"name"`
	Description string                   `json:"description,omitempty" yaml:"description,omitempty"`
	Image       string                   `json:"image" yaml:"image"`
	Source      string                   `json:"source,omitempty" yaml:"source,omitempty"`
	VM          VM                       `json:"vm" yaml:"vm"`
	Components  map[string]ComponentSpec `json:"components" yaml:"components"`
	Test        string                   `json:"test" yaml:"test"`
	Matrix      *Matrix                  `json:"matrix,omitempty" yaml:"matrix,omitempty"`

	// Path is the file the profile came from.
	Path string `json:"-" yaml:"-"`
}

// Defaults applied when a profile leaves a field out.
const (
	DefaultImage  = "debian-12"
	DefaultCPUs   = 2
	DefaultMemory = Size(2 << 30)
	DefaultDisk   = Size(10 << 30)
	DefaultTest   = "image-volume-lifecycle"
)

// Hash is a digest of everything in the profile that decides what runs. A
// lock file records it, and every later step compares it.
func (p *Profile) Hash() string {
	b, _ := json.Marshal(struct {
		Image      string
		Source     string
		Components map[string]ComponentSpec
		Test       string
		Matrix     *Matrix
	}{p.Image, p.Source, p.Components, p.Test, p.Matrix})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LockPath is where `envctl lock` writes this profile's lock file.
func (p *Profile) LockPath() string {
	return strings.TrimSuffix(strings.TrimSuffix(p.Path, ".yaml"), ".yml") + ".lock"
}

// Cell is one concrete combination of component pins: the profile itself, or
// one cell of its matrix.
type Cell struct {
	Name       string                   `json:"name" yaml:"name"`
	Values     map[string]string        `json:"axes,omitempty" yaml:"axes,omitempty"`
	Components map[string]ComponentSpec `json:"components" yaml:"components"`
}

// Cells expands the matrix. A profile without a matrix is one cell named
// after the profile.
func (p *Profile) Cells() []Cell {
	if p.Matrix == nil || len(p.Matrix.Axes) == 0 {
		return []Cell{{Name: p.Name, Components: cloneComponents(p.Components)}}
	}
	axes := make([]string, 0, len(p.Matrix.Axes))
	for a := range p.Matrix.Axes {
		axes = append(axes, a)
	}
	sort.Slice(axes, func(i, j int) bool { return roleIndex(axes[i]) < roleIndex(axes[j]) })
	var cells []Cell
	specs := map[string]ComponentSpec{}
	var walk func(i int, vals map[string]string)
	walk = func(i int, vals map[string]string) {
		if i == len(axes) {
			if p.excluded(vals) {
				return
			}
			c := Cell{Values: map[string]string{}, Components: cloneComponents(p.Components)}
			var parts []string
			for _, a := range axes {
				c.Values[a] = vals[a]
				c.Components[a] = applyAxis(c.Components[a], specs[a])
				parts = append(parts, a+"="+vals[a])
			}
			c.Name = p.Name + "/" + strings.Join(parts, ",")
			cells = append(cells, c)
			return
		}
		for _, v := range p.Matrix.Axes[axes[i]] {
			vals[axes[i]] = v.Label
			specs[axes[i]] = v.Spec
			walk(i+1, vals)
		}
		delete(vals, axes[i])
	}
	walk(0, map[string]string{})
	return cells
}

func (p *Profile) excluded(vals map[string]string) bool {
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

func cloneComponents(m map[string]ComponentSpec) map[string]ComponentSpec {
	out := make(map[string]ComponentSpec, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func roleIndex(role string) int {
	for i, r := range Roles {
		if r == role {
			return i
		}
	}
	return len(Roles)
}

// CatalogName maps a role and its spec to the release catalog's component name.
func CatalogName(role string, spec ComponentSpec) string {
	if role == RoleRuntime {
		return spec.Name
	}
	return role
}

// EffectiveSource is the source a component comes from after defaults.
func (p *Profile) EffectiveSource(role string, spec ComponentSpec) string {
	if spec.Source != "" {
		return spec.Source
	}
	if role == RoleConmon || role == RoleCNI {
		crio := p.Components[RoleCRIO]
		if s := crio.Source; (s == "" && (p.Source == "" || p.Source == SourceRelease)) || s == SourceRelease {
			return SourceBundle
		}
		return SourcePackage
	}
	if p.Source != "" {
		return p.Source
	}
	return SourceRelease
}

func (c Cell) String() string { return fmt.Sprintf("cell %s", c.Name) }
