package profiles

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
)

// Limits that keep a hostile or mistaken profile from exhausting memory.
const (
	MaxFileSize = 256 << 10
	MaxCells    = 256
)

// Error is a problem with a profile file. It names the file, the line when
// known, and the field. It is always bad input.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// FaultClass implements fault.Classed: a profile error is bad input.
func (e *Error) FaultClass() fault.Class { return fault.Input }

// Loader finds and loads profiles. Its inputs are explicit: the
// directories a profile name is looked up in, in order, and the overrides
// laid over every profile it loads. The CLI reads both from the
// environment and the configuration; the loader reads neither.
type Loader struct {
	Dirs []string
	// DirOrigins names each of Dirs (same index) for `envctl profiles`.
	DirOrigins []Origin
	Overrides  Overrides
	// Builtin is the profiles the binary carries (Builtin()), found after
	// every directory; BuiltinDir is where one is unpacked for use, and
	// AdoptDir where one goes when its lock must change (Adopt).
	Builtin    fs.FS
	BuiltinDir string
	AdoptDir   string
}

// Override is a value laid over a profile key, and where it came from
// (ENVCTL_VM_MEMORY, say), for error messages.
type Override struct {
	Value, From string
}

// Overrides are override values by profile key (OverrideKeys).
type Overrides map[string]Override

// Entry is one profile found on disk.
type Entry struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Origin Origin `json:"origin"`
	Locked bool   `json:"locked"`
	Err    string `json:"error,omitempty"`
}

func profileName(path string) string {
	return strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".yaml"), ".yml")
}

// List finds every profile in the search path, then the built-in ones. A
// name found twice is listed once, from the first place (that is the one
// Load picks).
func (l Loader) List() []Entry {
	seen := map[string]bool{}
	out := []Entry{}
	for i, dir := range l.Dirs {
		origin := Origin(dir)
		if i < len(l.DirOrigins) && l.DirOrigins[i] != "" {
			origin = l.DirOrigins[i]
		}
		matches, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		more, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
		matches = append(matches, more...)
		slices.Sort(matches)
		for _, m := range matches {
			name := profileName(m)
			if seen[name] {
				continue
			}
			seen[name] = true
			e := Entry{Name: name, Path: m, Origin: origin}
			if _, err := l.LoadFile(m); err != nil {
				e.Err = err.Error()
			}
			if _, err := os.Stat(LockPathOf(m)); err == nil {
				e.Locked = true
			}
			out = append(out, e)
		}
	}
	return append(out, l.builtinEntries(seen)...)
}

// BuiltinPrefix names a built-in profile even where a file of the same
// name hides it: builtin:crio-1.34-runc.
const BuiltinPrefix = "builtin:"

// Find turns a profile name or path into a file path.
func (l Loader) Find(nameOrPath string) (string, error) {
	if name, ok := strings.CutPrefix(nameOrPath, BuiltinPrefix); ok {
		if !slices.Contains(l.builtinNames(), name) {
			return "", fault.Inputf("profile %s: this envctl carries no such profile; built-in: %s", nameOrPath, strings.Join(l.builtinNames(), ", "))
		}
		return l.builtinPath(name)
	}
	if strings.ContainsRune(nameOrPath, os.PathSeparator) || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		if _, err := os.Stat(nameOrPath); err != nil {
			return "", fault.Inputf("profile %s: file not found; pass a profile name or an existing YAML path (`envctl profiles` lists them)", nameOrPath)
		}
		return nameOrPath, nil
	}
	dirs := l.Dirs
	for _, dir := range dirs {
		for _, ext := range []string{".yaml", ".yml"} {
			p := filepath.Join(dir, nameOrPath+ext)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	if slices.Contains(l.builtinNames(), nameOrPath) {
		return l.builtinPath(nameOrPath)
	}
	if l.Builtin != nil {
		dirs = append(slices.Clip(dirs), "built-in")
	}
	var names []string
	for _, e := range l.List() {
		names = append(names, e.Name)
	}
	hint := ""
	if s := Suggest(nameOrPath, names); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return "", fault.Inputf("profile %q not found in %s%s; `envctl profiles` lists the known ones", nameOrPath, strings.Join(dirs, ", "), hint)
}

// Load finds and loads a profile by name or path.
func (l Loader) Load(nameOrPath string) (*Profile, error) {
	path, err := l.Find(nameOrPath)
	if err != nil {
		return nil, err
	}
	return l.LoadFile(path)
}

// LoadFile reads and validates one profile file, with no overrides.
func LoadFile(path string) (*Profile, error) { return Loader{}.LoadFile(path) }

// LoadFile reads and validates one profile file, with the overrides.
func (l Loader) LoadFile(path string) (*Profile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fault.Inputf("profile %s: %v", path, err)
	}
	if st.Size() > MaxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("%d bytes is too large for a profile (the limit is %d KiB); is this the right file?", st.Size(), MaxFileSize>>10)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fault.Inputf("profile %s: %v", path, err)
	}
	return Parse(path, data, l.Overrides)
}

// OverrideKeys lists the profile keys an override may set, e.g. vm.memory
// or components.cri-tools.version. (The test a run takes is not one: it
// is the --test flag's.)
func OverrideKeys() []string {
	keys := []string{"image", "source", "vm.cpus", "vm.memory", "vm.disk"}
	for _, r := range Roles {
		for _, f := range []string{"name", "version", "source", "commit"} {
			keys = append(keys, "components."+string(r)+"."+f)
		}
	}
	return keys
}

// The YAML shape of a profile. Scalars are read as their literal text, so
// an unquoted `version: 1.10` stays "1.10" rather than becoming 1.1.
type (
	rawProfile struct {
		Name        string                  `yaml:"name"`
		Description string                  `yaml:"description"`
		Image       string                  `yaml:"image"`
		Source      string                  `yaml:"source"`
		VM          rawVM                   `yaml:"vm"`
		Components  map[string]rawComponent `yaml:"components"`
		Test        string                  `yaml:"test"`
		Matrix      *rawMatrix              `yaml:"matrix"`
	}
	rawVM struct {
		CPUs   string `yaml:"cpus"`
		Memory string `yaml:"memory"`
		Disk   string `yaml:"disk"`
	}
	rawComponent struct {
		Name    string  `yaml:"name"`
		Version literal `yaml:"version"`
		Source  string  `yaml:"source"`
		Commit  string  `yaml:"commit"`
	}
	rawMatrix struct {
		Axes    map[string][]rawAxisValue
		Exclude []map[string]literal
		Include []map[string]rawAxisValue
		Lines   map[string]int
	}
	rawAxisValue struct {
		Text string // "1.30.0" or "runc@1.3.6"
		Spec *rawComponent
		Line int
	}
)

// literal is a scalar's exact text in the file.
type literal string

func (l *literal) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &Error{Line: n.Line, Msg: "expected a single value, got a " + kindName(n)}
	}
	*l = literal(strings.TrimSpace(n.Value))
	return nil
}

func (m *rawMatrix) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &Error{Line: n.Line, Field: "matrix", Msg: "expected a mapping of axes, got a " + kindName(n)}
	}
	m.Axes, m.Lines = map[string][]rawAxisValue{}, map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		m.Lines[key] = n.Content[i].Line
		if key == "exclude" {
			if err := val.Decode(&m.Exclude); err != nil {
				return &Error{Line: val.Line, Field: "matrix.exclude", Msg: "a list of {axis: value} maps, like [{cri-tools: \"1.30.0\", runtime: \"crun@1.8.1\"}]"}
			}
			continue
		}
		if key == "include" {
			if err := val.Decode(&m.Include); err != nil {
				var pe *Error
				if errors.As(err, &pe) {
					pe.Field = "matrix.include"
					return pe
				}
				return &Error{Line: val.Line, Field: "matrix.include", Msg: "a list of {component: value} maps, like [{cri-tools: \"1.37.0\", runtime: \"runc@1.4.0\"}]"}
			}
			continue
		}
		var items []rawAxisValue
		if val.Kind == yaml.ScalarNode {
			items = []rawAxisValue{{Text: val.Value, Line: val.Line}}
		} else if err := val.Decode(&items); err != nil {
			return err
		}
		m.Axes[key] = items
	}
	return nil
}

func (a *rawAxisValue) UnmarshalYAML(n *yaml.Node) error {
	a.Line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		a.Text = strings.TrimSpace(n.Value)
		return nil
	case yaml.MappingNode:
		if err := checkKeys("", n, componentKeys, "matrix"); err != nil {
			return err
		}
		a.Spec = &rawComponent{}
		return n.Decode(a.Spec)
	}
	return &Error{Line: n.Line, Msg: "an axis value is a version, NAME@VERSION, or {name, version, source}"}
}

// schema lists the keys a profile may have, for "did you mean" errors. A
// nil value takes a scalar; "*" marks a map with free keys.
var schema = map[string]any{
	"name": nil, "description": nil, "image": nil, "source": nil, "test": nil,
	"vm": map[string]any{"cpus": nil, "memory": nil, "disk": nil},
	"components": map[string]any{
		string(RoleCRIO): componentKeys, string(RoleCRITools): componentKeys, string(RoleRuntime): componentKeys,
		string(RoleConmon): componentKeys, string(RoleCNI): componentKeys,
	},
	"matrix": map[string]any{
		string(RoleCRIO): list, string(RoleCRITools): list, string(RoleRuntime): list,
		string(RoleConmon): list, string(RoleCNI): list, "exclude": list, "include": list,
	},
}

// list marks a key whose value may be a sequence.
var list = &struct{}{}

var componentKeys = map[string]any{"name": nil, "version": nil, "source": nil, "commit": nil}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

// Parse validates a profile's bytes, with overrides laid over its keys.
func Parse(path string, data []byte, overrides Overrides) (*Profile, error) {
	if len(data) > MaxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("%d bytes is too large for a profile (the limit is %d KiB)", len(data), MaxFileSize>>10)}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{File: path, Line: yamlErrLine(err), Msg: "YAML syntax: " + yamlErrText(err)}
	}
	if len(root.Content) == 0 {
		return nil, &Error{File: path, Msg: "the file is empty; see README.md for the profile reference"}
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, &Error{File: path, Line: doc.Line, Msg: "a profile is a YAML mapping (key: value), not a " + kindName(doc)}
	}
	if err := checkKeys(path, doc, schema, ""); err != nil {
		return nil, err
	}
	lines := map[string]int{}
	collectLines(doc, "", lines)

	var raw rawProfile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			pe.File = path
			return nil, pe
		}
		return nil, &Error{File: path, Line: yamlErrLine(err), Msg: yamlErrText(err)}
	}
	if err := raw.apply(overrides); err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	field := func(key, msg string) error {
		e := &Error{File: path, Line: lines[key], Field: key, Msg: msg}
		if o, ok := overrides[key]; ok {
			e.Msg += " (set by " + cmp.Or(o.From, "an override") + ")"
		}
		return e
	}
	return raw.validate(path, field)
}

// apply lays overrides over the file's values.
func (r *rawProfile) apply(overrides Overrides) error {
	for key, o := range overrides {
		val := o.Value
		switch key {
		case "image":
			r.Image = val
		case "source":
			r.Source = val
		case "vm.cpus":
			r.VM.CPUs = val
		case "vm.memory":
			r.VM.Memory = val
		case "vm.disk":
			r.VM.Disk = val
		default:
			role, f, ok := strings.Cut(strings.TrimPrefix(key, "components."), ".")
			if !ok || !strings.HasPrefix(key, "components.") {
				return fmt.Errorf("%s: %s is not a key an override may set", cmp.Or(o.From, "an override"), key)
			}
			if r.Components == nil {
				r.Components = map[string]rawComponent{}
			}
			c := r.Components[role]
			switch f {
			case "name":
				c.Name = val
			case "version":
				c.Version = literal(val)
			case "source":
				c.Source = val
			case "commit":
				c.Commit = val
			}
			r.Components[role] = c
		}
	}
	return nil
}

// validate turns the file's values into a Profile, naming the first
// field that is wrong: the head (name, image, source, test), the VM shape,
// the components, the matrix, and every cell resolved against the catalog.
func (r *rawProfile) validate(path string, field func(key, msg string) error) (*Profile, error) {
	p := &Profile{Path: path, Components: map[Role]ComponentSpec{}, Description: r.Description}
	for _, step := range []func(*Profile, func(key, msg string) error) error{r.head, r.vm, r.components, r.matrix, resolvesAll} {
		if err := step(p, field); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// head reads the name, image, default source and test.
func (r *rawProfile) head(p *Profile, field func(key, msg string) error) error {
	p.Name = cmp.Or(r.Name, profileName(p.Path))
	if !nameRE.MatchString(p.Name) {
		return field("name", fmt.Sprintf("%q is not a valid name: use letters, digits, '.', '_' and '-'", p.Name))
	}
	p.Image = cmp.Or(r.Image, DefaultImage)
	if known := catalog.Images().Names(); !slices.Contains(known, p.Image) {
		msg := fmt.Sprintf("unknown image %q; known: %s", p.Image, strings.Join(known, ", "))
		if s := Suggest(p.Image, known); s != "" {
			msg = fmt.Sprintf("unknown image %q; did you mean %q?", p.Image, s)
		}
		return field("image", msg)
	}
	if r.Source != "" {
		s, err := ParseSource(r.Source)
		if err != nil {
			return field("source", err.Error())
		}
		p.Source = s
	}
	test, err := ParseTestName(cmp.Or(r.Test, string(DefaultTest)))
	if err != nil {
		return field("test", err.Error())
	}
	p.Test = test
	return nil
}

// vm reads the VM shape, with the defaults and the least a guest needs.
func (r *rawProfile) vm(p *Profile, field func(key, msg string) error) error {
	p.VM = VM{CPUs: DefaultCPUs, Memory: DefaultMemory, Disk: DefaultDisk}
	if r.VM.CPUs != "" {
		n, err := strconv.Atoi(strings.TrimSpace(r.VM.CPUs))
		if err != nil || n < 1 || n > 256 {
			return field("vm.cpus", fmt.Sprintf("%q is not a CPU count: use a whole number from 1 to 256", r.VM.CPUs))
		}
		p.VM.CPUs = n
	}
	for _, sz := range []struct {
		key, text string
		dst       *Size
	}{{"vm.memory", r.VM.Memory, &p.VM.Memory}, {"vm.disk", r.VM.Disk, &p.VM.Disk}} {
		if sz.text == "" {
			continue
		}
		s, err := ParseSize(sz.text)
		if err != nil {
			return field(sz.key, err.Error())
		}
		*sz.dst = s
	}
	if p.VM.Memory < 512<<20 {
		return field("vm.memory", fmt.Sprintf("%s is too little memory to boot; use at least 512MiB", p.VM.Memory))
	}
	if p.VM.Disk < 4<<30 {
		return field("vm.disk", fmt.Sprintf("%s is too small; use at least 4GiB", p.VM.Disk))
	}
	return nil
}

// components reads every role's spec; the required roles must be there.
func (r *rawProfile) components(p *Profile, field func(key, msg string) error) error {
	for _, role := range Roles {
		rc, ok := r.Components[string(role)]
		if !ok {
			continue
		}
		spec, err := rc.spec(role)
		if err != nil {
			return field("components."+string(role)+err.field, err.msg)
		}
		p.Components[role] = spec
	}
	for _, required := range RequiredRoles {
		if _, ok := p.Components[required]; !ok {
			return field("components", fmt.Sprintf("%s is required: pin it with `%s: {version: \"X.Y.Z\"}`", required, required))
		}
	}
	return nil
}

// matrix reads the matrix, within the cell limit.
func (r *rawProfile) matrix(p *Profile, field func(key, msg string) error) error {
	if r.Matrix == nil {
		return nil
	}
	m, err := r.Matrix.validate(field)
	if err != nil {
		return err
	}
	p.Matrix = m
	if n := p.CellCount(); n > MaxCells {
		return field("matrix", fmt.Sprintf("expands to %d cells, more than the limit of %d; split it into several profiles, or use exclude", n, MaxCells))
	}
	return nil
}

// resolvesAll resolves every cell against the catalog now, so that a bad
// version or a source that cannot work is a load error.
func resolvesAll(p *Profile, field func(key, msg string) error) error {
	cat := catalog.Default()
	for _, cell := range p.Cells() {
		for role, spec := range cell.Components {
			if _, err := ResolveComponent(cat, p, role, spec); err != nil {
				key := "components." + string(role) + ".version"
				if spec.Source != "" {
					key = "components." + string(role) + ".source"
				}
				if cell.Values[role] != "" {
					key = "matrix." + string(role)
				}
				return field(key, err.Error())
			}
		}
	}
	return nil
}

type specError struct{ field, msg string }

func (c rawComponent) spec(role Role) (ComponentSpec, *specError) {
	spec := ComponentSpec{Name: c.Name, Version: string(c.Version)}
	if spec.Version == "" {
		return spec, &specError{".version", "missing: pin a version such as \"1.34.0\" or a constraint such as \"~> 1.34.0\""}
	}
	if role == RoleRuntime {
		if spec.Name == "" {
			return spec, &specError{".name", "missing: name the runtime, runc or crun"}
		}
		if !slices.Contains(Runtimes, spec.Name) {
			return spec, &specError{".name", fmt.Sprintf("unknown runtime %q; use runc or crun", spec.Name)}
		}
	} else if spec.Name != "" {
		return spec, &specError{".name", "only the runtime component takes a name"}
	}
	if c.Source != "" {
		s, err := ParseSource(c.Source)
		if err != nil {
			return spec, &specError{".source", err.Error()}
		}
		spec.Source = s
	}
	if c.Commit != "" {
		spec.Commit = strings.ToLower(strings.TrimSpace(c.Commit))
		if !commitRE.MatchString(spec.Commit) {
			return spec, &specError{".commit", fmt.Sprintf("%q is not a commit hash: use 7 to 40 hex digits, e.g. 5dd0877c", c.Commit)}
		}
	}
	return spec, nil
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)

func (m *rawMatrix) validate(field func(key, msg string) error) (*Matrix, error) {
	out := &Matrix{Axes: map[Role][]AxisValue{}}
	for key, items := range m.Axes {
		role, err := ParseRole(key)
		if err != nil {
			return nil, field("matrix", err.Error())
		}
		fkey := "matrix." + key
		if len(items) == 0 {
			return nil, field(fkey, "an axis is a list of values, like [\"1.30.0\", \"1.34.0\"]")
		}
		seen := map[string]bool{}
		for _, item := range items {
			av, err := item.value(role)
			if err != nil {
				return nil, field(fkey, err.Error())
			}
			if seen[av.Label] {
				return nil, field(fkey, fmt.Sprintf("%q is listed twice; each axis value must be distinct", av.Label))
			}
			seen[av.Label] = true
			out.Axes[role] = append(out.Axes[role], av)
		}
	}
	for _, ex := range m.Exclude {
		e := map[Role]string{}
		for k, v := range ex {
			role, err := ParseRole(k)
			if err != nil || out.Axes[role] == nil {
				return nil, field("matrix.exclude", fmt.Sprintf("%q is not a matrix axis", k))
			}
			e[role] = string(v)
		}
		out.Exclude = append(out.Exclude, e)
	}
	for _, inc := range m.Include {
		e := map[Role]AxisValue{}
		for k, raw := range inc {
			role, err := ParseRole(k)
			if err != nil {
				return nil, field("matrix.include", err.Error())
			}
			av, err := raw.value(role)
			if err != nil {
				return nil, field("matrix.include", err.Error())
			}
			e[role] = av
		}
		if len(e) == 0 {
			return nil, field("matrix.include", "an empty entry adds nothing; name components, like {cri-tools: \"1.37.0\"}")
		}
		out.Include = append(out.Include, e)
	}
	if len(out.Axes) == 0 && len(out.Include) == 0 {
		return nil, field("matrix", "no axes: name components, like `cri-tools: [\"1.30.0\", \"1.34.0\"]`")
	}
	return out, nil
}

// value reads "1.30.0", "runc@1.3.6" or {name, version, source}.
func (a rawAxisValue) value(role Role) (AxisValue, error) {
	var spec ComponentSpec
	if a.Spec != nil {
		s, err := a.Spec.spec(role)
		if err != nil {
			return AxisValue{}, errors.New(strings.TrimPrefix(err.field, ".") + ": " + err.msg)
		}
		spec = s
	} else if role == RoleRuntime {
		name, ver, ok := strings.Cut(a.Text, "@")
		if !ok {
			return AxisValue{}, fmt.Errorf("%q: runtime values are NAME@VERSION, like runc@1.3.6 or crun@1.8.1", a.Text)
		}
		spec = ComponentSpec{Name: name, Version: ver}
	} else {
		spec = ComponentSpec{Version: a.Text}
	}
	if spec.Version == "" {
		return AxisValue{}, fmt.Errorf("an axis value needs a version")
	}
	label := spec.Version
	if role == RoleRuntime {
		if !slices.Contains(Runtimes, spec.Name) {
			return AxisValue{}, fmt.Errorf("unknown runtime %q; use runc or crun", spec.Name)
		}
		label = spec.Name + "@" + spec.Version
	} else if spec.Name != "" {
		return AxisValue{}, fmt.Errorf("only the runtime axis takes a name")
	}
	return AxisValue{Label: label, Spec: spec}, nil
}

// checkKeys walks a YAML mapping and refuses any key the schema lacks,
// suggesting the closest known one.
func checkKeys(path string, node *yaml.Node, allowed map[string]any, prefix string) error {
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, val := node.Content[i], node.Content[i+1]
		full := strings.TrimPrefix(prefix+"."+k.Value, ".")
		sub, ok := allowed[k.Value]
		if !ok {
			known := make([]string, 0, len(allowed))
			for key := range allowed {
				known = append(known, key)
			}
			slices.Sort(known)
			what := "unknown key"
			if prefix == "components" || prefix == "matrix" {
				what = "unknown component"
			}
			msg := fmt.Sprintf("%s %q", what, k.Value)
			if s := Suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else {
				msg += "; allowed here: " + strings.Join(known, ", ")
			}
			return &Error{File: path, Line: k.Line, Field: prefix, Msg: msg}
		}
		switch want := sub.(type) {
		case map[string]any:
			if val.Kind != yaml.MappingNode {
				if val.Tag == "!!null" {
					continue
				}
				return &Error{File: path, Line: val.Line, Field: full, Msg: "expected a mapping (key: value), got a " + kindName(val)}
			}
			if err := checkKeys(path, val, want, full); err != nil {
				return err
			}
		case nil:
			if val.Kind != yaml.ScalarNode {
				return &Error{File: path, Line: val.Line, Field: full, Msg: "expected a single value, got a " + kindName(val)}
			}
		}
	}
	return nil
}

func collectLines(node *yaml.Node, prefix string, out map[string]int) {
	if node.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		full := strings.TrimPrefix(prefix+"."+node.Content[i].Value, ".")
		out[full] = node.Content[i].Line
		collectLines(node.Content[i+1], full, out)
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "scalar"
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

var yamlLinePrefixRE = regexp.MustCompile(`(yaml: )?(unmarshal errors:\s*)?line \d+: `)

func yamlErrText(err error) string {
	s := yamlLinePrefixRE.ReplaceAllString(err.Error(), "")
	return strings.Join(strings.Fields(strings.TrimPrefix(s, "yaml: ")), " ")
}

// Suggest returns the known word closest to s, if it is close enough to be a typo.
func Suggest(s string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := levenshtein(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= 2 || (bestD <= 3 && len(s) > 6) {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// ValidName reports whether s may name a profile.
func ValidName(s string) bool { return nameRE.MatchString(s) }
