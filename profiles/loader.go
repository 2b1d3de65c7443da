package profiles

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/fault"
)

// Error is a problem with a profile file. It names the file, the line when
// known, and the field.
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

// SearchDirs lists the directories searched for profiles by name, in order:
// $ENVCTL_PROFILES_DIR (a list), ./profiles, and $XDG_CONFIG_HOME/envctl/profiles.
func SearchDirs() []string {
	var dirs []string
	if env := os.Getenv("ENVCTL_PROFILES_DIR"); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	dirs = append(dirs, "profiles")
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cfg = filepath.Join(home, ".config")
		}
	}
	if cfg != "" {
		dirs = append(dirs, filepath.Join(cfg, "envctl", "profiles"))
	}
	return dirs
}

// Entry is one profile found on disk.
type Entry struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Err  string `json:"error,omitempty"`
}

// List finds every profile in the search path. A name found twice is listed
// once, from the first directory (that is the one Load picks).
func List() []Entry {
	seen := map[string]bool{}
	var out []Entry
	for _, dir := range SearchDirs() {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		more, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
		matches = append(matches, more...)
		sort.Strings(matches)
		for _, m := range matches {
			name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(m), ".yaml"), ".yml")
			if seen[name] {
				continue
			}
			seen[name] = true
			e := Entry{Name: name, Path: m}
			if _, err := LoadFile(m); err != nil {
				e.Err = err.Error()
			}
			out = append(out, e)
		}
	}
	return out
}

// Find turns a profile name or path into a file path.
func Find(nameOrPath string) (string, error) {
	if strings.ContainsRune(nameOrPath, os.PathSeparator) || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		if _, err := os.Stat(nameOrPath); err != nil {
			return "", fault.Inputf("profile %s: file not found; pass a profile name or an existing YAML path (`envctl profiles` lists them)", nameOrPath)
		}
		return nameOrPath, nil
	}
	dirs := SearchDirs()
	for _, dir := range dirs {
		for _, ext := range []string{".yaml", ".yml"} {
			p := filepath.Join(dir, nameOrPath+ext)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	var names []string
	for _, e := range List() {
		names = append(names, e.Name)
	}
	hint := ""
	if s := suggest(nameOrPath, names); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return "", fault.Inputf("profile %q not found in %s%s; `envctl profiles` lists the known ones", nameOrPath, strings.Join(dirs, ", "), hint)
}

// Load finds and loads a profile by name or path.
func Load(nameOrPath string) (*Profile, error) {
	path, err := Find(nameOrPath)
	if err != nil {
		return nil, err
	}
	return LoadFile(path)
}

// LoadFile reads and validates one profile file, applying ENVCTL_* overrides.
func LoadFile(path string) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fault.Inputf("profile %s: %v", path, err)
	}
	p, err := Parse(path, data, os.LookupEnv)
	if err != nil {
		return nil, fault.AsInput(err)
	}
	return p, nil
}

// schema lists the keys a profile may have. A nil value accepts any scalar;
// "*" stands for any key.
var schema = map[string]any{
	"name": nil, "description": nil, "image": nil, "source": nil, "test": nil,
	"vm": map[string]any{"cpus": nil, "memory": nil, "disk": nil},
	"components": map[string]any{
		RoleCRIO: componentKeys, RoleCRITools: componentKeys, RoleRuntime: componentKeys,
		RoleConmon: componentKeys, RoleCNI: componentKeys,
	},
	"matrix": map[string]any{
		RoleCRIO: nil, RoleCRITools: nil, RoleRuntime: nil, RoleConmon: nil, RoleCNI: nil,
		"exclude": nil,
	},
}

var componentKeys = map[string]any{"name": nil, "version": nil, "source": nil}

// overridable lists the keys ENVCTL_* variables may set, e.g.
// ENVCTL_VM_MEMORY=4GiB or ENVCTL_COMPONENTS_CRI_TOOLS_VERSION=1.34.0.
func overridable() []string {
	keys := []string{"image", "source", "test", "vm.cpus", "vm.memory", "vm.disk"}
	for _, r := range Roles {
		for _, f := range []string{"name", "version", "source"} {
			keys = append(keys, "components."+r+"."+f)
		}
	}
	return keys
}

// EnvName is the variable that overrides a profile key.
func EnvName(key string) string {
	return "ENVCTL_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// Parse validates a profile's bytes. lookupEnv supplies ENVCTL_* overrides
// (os.LookupEnv in the product, a map in tests).
func Parse(path string, data []byte, lookupEnv func(string) (string, bool)) (*Profile, error) {
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

	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	overrides := map[string]string{}
	for _, key := range overridable() {
		if val, ok := lookupEnv(EnvName(key)); ok {
			v.Set(key, val)
			overrides[key] = EnvName(key)
		}
	}
	field := func(key, msg string) error {
		e := &Error{File: path, Line: lines[key], Field: key, Msg: msg}
		if env, ok := overrides[key]; ok {
			e.Msg += " (set by " + env + ")"
		}
		return e
	}

	p := &Profile{Path: path, Components: map[string]ComponentSpec{}}
	p.Name = v.GetString("name")
	if p.Name == "" {
		p.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".yaml"), ".yml")
	}
	if !regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`).MatchString(p.Name) {
		return nil, field("name", fmt.Sprintf("%q is not a valid name: use letters, digits, '.', '_' and '-'", p.Name))
	}
	p.Description = v.GetString("description")
	p.Image = v.GetString("image")
	if p.Image == "" {
		p.Image = DefaultImage
	}
	if known := images.DefaultCatalog().Names(); !contains(known, p.Image) {
		msg := fmt.Sprintf("unknown image %q; known: %s", p.Image, strings.Join(known, ", "))
		if s := suggest(p.Image, known); s != "" {
			msg = fmt.Sprintf("unknown image %q; did you mean %q?", p.Image, s)
		}
		return nil, field("image", msg)
	}
	p.Source = v.GetString("source")
	if err := checkSource(p.Source); err != nil {
		return nil, field("source", err.Error())
	}
	p.Test = v.GetString("test")
	if p.Test == "" {
		p.Test = DefaultTest
	}
	if !contains(Tests, p.Test) {
		return nil, field("test", fmt.Sprintf("unknown test %q; known: %s", p.Test, strings.Join(Tests, ", ")))
	}

	p.VM = VM{CPUs: DefaultCPUs, Memory: DefaultMemory, Disk: DefaultDisk}
	if v.IsSet("vm.cpus") {
		n, err := strconv.Atoi(strings.TrimSpace(v.GetString("vm.cpus")))
		if err != nil || n < 1 || n > 256 {
			return nil, field("vm.cpus", fmt.Sprintf("%q is not a CPU count: use a whole number from 1 to 256", v.GetString("vm.cpus")))
		}
		p.VM.CPUs = n
	}
	for key, dst := range map[string]*Size{"vm.memory": &p.VM.Memory, "vm.disk": &p.VM.Disk} {
		if !v.IsSet(key) {
			continue
		}
		s, err := ParseSize(v.GetString(key))
		if err != nil {
			return nil, field(key, err.Error())
		}
		*dst = s
	}
	if p.VM.Memory < 256<<20 {
		return nil, field("vm.memory", fmt.Sprintf("%s is too little memory to boot; use at least 512MiB", p.VM.Memory))
	}
	if p.VM.Disk < 2<<30 {
		return nil, field("vm.disk", fmt.Sprintf("%s is too small; use at least 4GiB", p.VM.Disk))
	}

	for _, role := range Roles {
		key := "components." + role
		if !v.IsSet(key) {
			continue
		}
		spec := ComponentSpec{
			Name:    v.GetString(key + ".name"),
			Version: strings.TrimSpace(v.GetString(key + ".version")),
			Source:  v.GetString(key + ".source"),
		}
		if spec.Version == "" {
			return nil, field(key+".version", "missing: pin a version such as \"1.34.0\" or a constraint such as \"~> 1.34.0\"")
		}
		if role == RoleRuntime {
			if spec.Name == "" {
				return nil, field(key+".name", "missing: name the runtime, runc or crun")
			}
			if !contains(Runtimes, spec.Name) {
				return nil, field(key+".name", fmt.Sprintf("unknown runtime %q; use runc or crun", spec.Name))
			}
		} else if spec.Name != "" {
			return nil, field(key+".name", "only the runtime component takes a name")
		}
		if err := checkSource(spec.Source); err != nil {
			return nil, field(key+".source", err.Error())
		}
		p.Components[role] = spec
	}
	for _, required := range []string{RoleCRIO, RoleCRITools, RoleRuntime} {
		if _, ok := p.Components[required]; !ok {
			return nil, field("components", fmt.Sprintf("%s is required: pin it with `%s: {version: \"X.Y.Z\"}`", required, required))
		}
	}

	if v.IsSet("matrix") {
		m, err := parseMatrix(v, field)
		if err != nil {
			return nil, err
		}
		p.Matrix = m
	}

	// Resolve every cell against the catalog now, so a bad version is a load error.
	cat := catalog.Default()
	for _, cell := range p.Cells() {
		for role, spec := range cell.Components {
			if _, err := ResolveComponent(cat, p, role, spec); err != nil {
				key := "components." + role + ".version"
				if p.Matrix != nil && cell.Values[role] != "" {
					key = "matrix." + role
				}
				return nil, field(key, err.Error())
			}
		}
	}
	return p, nil
}

func parseMatrix(v *viper.Viper, field func(key, msg string) error) (*Matrix, error) {
	m := &Matrix{Axes: map[string][]AxisValue{}}
	for _, role := range Roles {
		key := "matrix." + role
		if !v.IsSet(key) {
			continue
		}
		raw, ok := v.Get(key).([]any)
		if !ok {
			if s := v.GetString(key); s != "" {
				raw = []any{s}
			}
		}
		if len(raw) == 0 {
			return nil, field(key, "an axis is a list of values, like [\"1.30.0\", \"1.34.0\"]")
		}
		for _, item := range raw {
			av, err := axisValue(role, item)
			if err != nil {
				return nil, field(key, err.Error())
			}
			m.Axes[role] = append(m.Axes[role], av)
		}
	}
	if v.IsSet("matrix.exclude") {
		raw, ok := v.Get("matrix.exclude").([]any)
		if !ok {
			return nil, field("matrix.exclude", "a list of {axis: value} maps")
		}
		for _, item := range raw {
			mm, ok := item.(map[string]any)
			if !ok {
				return nil, field("matrix.exclude", "each entry is a map like {cri-tools: \"1.30.0\", runtime: \"crun@1.8.1\"}")
			}
			ex := map[string]string{}
			for k, val := range mm {
				if _, isAxis := m.Axes[k]; !isAxis {
					return nil, field("matrix.exclude", fmt.Sprintf("%q is not a matrix axis", k))
				}
				ex[k] = fmt.Sprint(val)
			}
			m.Exclude = append(m.Exclude, ex)
		}
	}
	if len(m.Axes) == 0 {
		return nil, field("matrix", "no axes: name components, like `cri-tools: [\"1.30.0\", \"1.34.0\"]`")
	}
	return m, nil
}

// axisValue reads "1.30.0", "runc@1.3.6" or {name, version, source}.
func axisValue(role string, item any) (AxisValue, error) {
	var spec ComponentSpec
	switch x := item.(type) {
	case map[string]any:
		for k := range x {
			if _, ok := componentKeys[k]; !ok {
				return AxisValue{}, fmt.Errorf("unknown key %q in an axis value; allowed: name, version, source", k)
			}
		}
		spec = ComponentSpec{Name: fmt.Sprint(orEmpty(x["name"])), Version: fmt.Sprint(orEmpty(x["version"])), Source: fmt.Sprint(orEmpty(x["source"]))}
		if err := checkSource(spec.Source); err != nil {
			return AxisValue{}, err
		}
	default:
		s := strings.TrimSpace(fmt.Sprint(x))
		if role == RoleRuntime {
			name, ver, ok := strings.Cut(s, "@")
			if !ok {
				return AxisValue{}, fmt.Errorf("%q: runtime values are NAME@VERSION, like runc@1.3.6 or crun@1.8.1", s)
			}
			spec = ComponentSpec{Name: name, Version: ver}
		} else {
			spec = ComponentSpec{Version: s}
		}
	}
	if spec.Version == "" {
		return AxisValue{}, fmt.Errorf("an axis value needs a version")
	}
	label := spec.Version
	if role == RoleRuntime {
		if !contains(Runtimes, spec.Name) {
			return AxisValue{}, fmt.Errorf("unknown runtime %q; use runc or crun", spec.Name)
		}
		label = spec.Name + "@" + spec.Version
	} else if spec.Name != "" {
		return AxisValue{}, fmt.Errorf("only the runtime axis takes a name")
	}
	return AxisValue{Label: label, Spec: spec}, nil
}

func orEmpty(v any) any {
	if v == nil {
		return ""
	}
	return v
}

// checkKeys walks the YAML mapping and refuses any key the schema lacks.
func checkKeys(path string, node *yaml.Node, allowed map[string]any, prefix string) error {
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, val := node.Content[i], node.Content[i+1]
		name := k.Value
		full := strings.TrimPrefix(prefix+"."+name, ".")
		sub, ok := allowed[name]
		if !ok {
			var known []string
			for key := range allowed {
				known = append(known, key)
			}
			sort.Strings(known)
			what := "unknown key"
			if prefix == "components" || prefix == "matrix" {
				what = "unknown component"
			}
			msg := fmt.Sprintf("%s %q", what, name)
			if s := suggest(name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else {
				msg += "; allowed here: " + strings.Join(known, ", ")
			}
			if prefix == "" {
				return &Error{File: path, Line: k.Line, Msg: msg}
			}
			return &Error{File: path, Line: k.Line, Field: prefix, Msg: msg}
		}
		if subMap, isMap := sub.(map[string]any); isMap {
			if val.Kind != yaml.MappingNode {
				if val.Tag == "!!null" {
					continue
				}
				return &Error{File: path, Line: val.Line, Field: full, Msg: "expected a mapping (key: value), got a " + kindName(val)}
			}
			if err := checkKeys(path, val, subMap, full); err != nil {
				return err
			}
		} else if val.Kind == yaml.MappingNode && !(prefix == "matrix") {
			return &Error{File: path, Line: val.Line, Field: full, Msg: "expected a single value, got a mapping"}
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
	default:
		return "scalar"
	}
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return 0
	}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

var yamlLinePrefixRE = regexp.MustCompile(`^(yaml: )?line \d+: `)

func yamlErrText(err error) string {
	return strings.TrimPrefix(yamlLinePrefixRE.ReplaceAllString(err.Error(), ""), "yaml: ")
}

func checkSource(s string) error {
	switch {
	case s == "", s == SourceRelease, s == SourceGoMod, s == SourceMirror, s == SourcePackage, s == SourceBundle:
		return nil
	case strings.HasPrefix(s, SourceFile):
		if !strings.HasPrefix(s, "file:///") {
			return fmt.Errorf("%q: a file source is an absolute URL like file:///usr/local/bin/crio", s)
		}
		return nil
	}
	return fmt.Errorf("unknown source %q; use release, gomod, mirror, package, bundle or file:///path", s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known word closest to s, if it is close enough to be a typo.
func suggest(s string, known []string) string {
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
