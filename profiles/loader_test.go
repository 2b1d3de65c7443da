package profiles

import (
	"fmt"
	"strings"
	"testing"
)

const good = `name: t
image: debian-12
source: gomod
vm: {cpus: 2, memory: 2GiB, disk: 10GiB}
components:
  cri-o:     {version: "1.34.0"}
  cri-tools: {version: "~> 1.34.0"}
  runtime:   {name: runc, version: "1.3.6"}
test: image-volume-lifecycle
`

var noEnv Overrides

func TestParseGood(t *testing.T) {
	p, err := Parse("t.yaml", []byte(good), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if p.VM.Memory != 2<<30 || p.VM.Disk != 10<<30 || p.VM.CPUs != 2 {
		t.Errorf("vm = %+v", p.VM)
	}
	if p.Components[RoleRuntime].Name != "runc" {
		t.Errorf("runtime = %+v", p.Components[RoleRuntime])
	}
	if p.LockPath() != "t.lock" {
		t.Errorf("lock path %s", p.LockPath())
	}
}

func TestParseTests(t *testing.T) {
	for _, tc := range []struct {
		test     string
		own      bool
		upstream string
	}{
		{"image-volume-lifecycle", true, ""},
		{"upstream", false, "oci_volumes.bats"},
		{"both", true, "oci_volumes.bats"},
		{"upstream:image_volume.bats", false, "image_volume.bats"},
		{"none", false, ""},
	} {
		p, err := Parse("t.yaml", []byte(strings.Replace(good, "test: image-volume-lifecycle", "test: "+tc.test, 1)), noEnv)
		if err != nil {
			t.Fatalf("%s: %v", tc.test, err)
		}
		file, _ := p.Test.UpstreamFile()
		if p.Test.Own() != tc.own || file != tc.upstream {
			t.Errorf("%s: own %v upstream %q", tc.test, p.Test.Own(), file)
		}
	}
}

func TestParseBadInput(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the one-line error
	}{
		{"yaml syntax", "name: t\nvm:\n  cpus: [\n", []string{"p.yaml:", "YAML syntax"}},
		{"typo top level", strings.Replace(good, "test:", "tset:", 1), []string{"p.yaml:9", `unknown key "tset"`, `did you mean "test"`}},
		{"typo vm key", strings.Replace(good, "memory:", "memroy:", 1), []string{"p.yaml:4", "vm", `"memroy"`, `did you mean "memory"`}},
		{"typo component", strings.Replace(good, "cri-tools:", "cri-tool:", 1), []string{"p.yaml:7", `unknown component "cri-tool"`, `"cri-tools"`}},
		{"unknown image", strings.Replace(good, "image: debian-12", "image: debian-21", 1), []string{"p.yaml:2", "image", `unknown image "debian-21"`, `did you mean "debian-12"`}},
		{"unknown component", strings.Replace(good, "test:", "  dockerd: {version: 1.0}\ntest:", 1), []string{`unknown component "dockerd"`}},
		{"unknown image key type", strings.Replace(good, "image: debian-12", "image: {a: b}", 1), []string{"image", "mapping"}},
		{"bad version", strings.Replace(good, `"1.34.0"}`, `"one.two"}`, 1), []string{"components.cri-o.version", "neither a version nor a constraint"}},
		{"constraint matches nothing", strings.Replace(good, `"~> 1.34.0"`, `"~> 1.99.0"`, 1), []string{"components.cri-tools.version", "matches no catalog version", "nearest known: 1.35.0, 1.36.0, 1.37.0"}},
		{"negative memory", strings.Replace(good, "memory: 2GiB", "memory: -1", 1), []string{"p.yaml:4", "vm.memory", "not a size"}},
		{"garbage memory", strings.Replace(good, "memory: 2GiB", "memory: 2GB!", 1), []string{"vm.memory", `"2GB!" is not a size`}},
		{"decimal unit", strings.Replace(good, "memory: 2GiB", "memory: 2GB", 1), []string{"vm.memory", "binary unit"}},
		{"cpus", strings.Replace(good, "cpus: 2", "cpus: two", 1), []string{"vm.cpus", "CPU count"}},
		{"unknown runtime", strings.Replace(good, "name: runc", "name: kata", 1), []string{"components.runtime.name", `"kata"`}},
		{"unknown source", strings.Replace(good, "source: gomod", "source: ftp", 1), []string{"source", `unknown source "ftp"`}},
		{"missing crio", strings.Replace(good, `  cri-o:     {version: "1.34.0"}`+"\n", "", 1), []string{"cri-o is required"}},
		{"matrix axis not a component", good + "matrix:\n  kernel: [\"6.1\"]\n", []string{"matrix", `unknown component "kernel"`}},
		{"matrix bad runtime value", good + "matrix:\n  runtime: [\"runc\"]\n", []string{"matrix.runtime", "NAME@VERSION"}},
		{"matrix bad version", good + "matrix:\n  cri-tools: [\"1.30.0\", \"9.x\"]\n", []string{"matrix.cri-tools", "9.x"}},
		{"release version not in catalog", strings.Replace(good, "source: gomod", "source: release", 1) + "matrix:\n  cri-tools: [\"9.9.9\"]\n", []string{"matrix.cri-tools", "9.9.9 is not in the release catalog"}},
		{"exclude names no axis", good + "matrix:\n  cri-tools: [\"1.30.0\"]\n  exclude: [{runtime: runc@1.3.6}]\n", []string{"matrix.exclude", `"runtime" is not a matrix axis`}},
		{"gomod for crun", strings.Replace(good, "name: runc, version: \"1.3.6\"", "name: crun, version: \"1.8.1\"", 1), []string{"components.runtime.version", "crun cannot come from source gomod", "it can come from release, mirror, file, package"}},
		{"file CNI plugins", strings.Replace(good, "test:", "  cni-plugins: {version: \"1.1.1\", source: \"file:///usr/lib/cni/bridge\"}\ntest:", 1), []string{"components.cni-plugins.source", "cni-plugins cannot come from source file", "package, bundle"}},
		{"package CRI-O", strings.Replace(good, `cri-o:     {version: "1.34.0"}`, `cri-o:     {version: "1.34.0", source: package}`, 1), []string{"components.cri-o.source", "cri-o cannot come from source package"}},
		{"bundle without release CRI-O", strings.Replace(good, "test:", "  conmon: {version: \"2.1.6\", source: bundle}\ntest:", 1), []string{"components.conmon.source", "CRI-O release bundle", "use source package"}},
		{"duplicate axis value", good + "matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\", \"1.30.0\"]\n", []string{"matrix.cri-tools", `"1.30.0" is listed twice`}},
		{"too many cells", good + "matrix:\n  cri-tools: [" + strings.Repeat("\"1.30.0\",", 0) + manyVersions(20) + "]\n  cri-o: [" + manyVersions(20) + "]\n", []string{"matrix", "expands to 400 cells", "limit of 256"}},
		{"version as a list", strings.Replace(good, `cri-o:     {version: "1.34.0"}`, `cri-o:     {version: [1, 2]}`, 1), []string{"components.cri-o.version", "expected a single value, got a list"}},
		{"too large", good + "# " + strings.Repeat("x", MaxFileSize) + "\n", []string{"too large for a profile"}},
		{"empty", "", []string{"empty"}},
		{"not a mapping", "- a\n- b\n", []string{"mapping"}},
		{"bad name", strings.Replace(good, "name: t", "name: 'a b'", 1), []string{"name", "not a valid name"}},
		{"unknown test", strings.Replace(good, "test: image-volume-lifecycle", "test: upstrem", 1), []string{"p.yaml:9", "test", `unknown test "upstrem"`, "upstream:FILE.bats, both"}},
		{"upstream file is a path", strings.Replace(good, "test: image-volume-lifecycle", "test: upstream:../x.bats", 1), []string{"test", `"../x.bats" is not a file name in CRI-O's test/ directory`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("no error for %s", tt.name)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// Overrides lay values over a profile's keys; a bad one names where it
// came from. The loader reads no environment: the CLI builds overrides.
func TestOverrides(t *testing.T) {
	t.Setenv("ENVCTL_VM_MEMORY", "8GiB") // never read here
	p, err := Parse("t.yaml", []byte(good), Overrides{
		"vm.memory":                    {Value: "4GiB", From: "ENVCTL_VM_MEMORY"},
		"components.cri-tools.version": {Value: "1.30.0", From: "ENVCTL_COMPONENTS_CRI_TOOLS_VERSION"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.VM.Memory != 4<<30 {
		t.Errorf("memory %s", p.VM.Memory)
	}
	if p.Components[RoleCRITools].Version != "1.30.0" {
		t.Errorf("cri-tools %+v", p.Components[RoleCRITools])
	}
	_, err = Parse("t.yaml", []byte(good), Overrides{"vm.memory": {Value: "lots", From: "ENVCTL_VM_MEMORY"}})
	if err == nil || !strings.Contains(err.Error(), "ENVCTL_VM_MEMORY") {
		t.Errorf("bad override error %v does not name the variable", err)
	}
	if _, err := Parse("t.yaml", []byte(good), Overrides{"test": {Value: "none", From: "ENVCTL_TEST"}}); err == nil || !strings.Contains(err.Error(), "not a key an override may set") {
		t.Errorf("test is not a profile override: %v", err)
	}
	if p, err := (Loader{}).LoadFile("crio-1.34-runc.yaml"); err != nil || p.VM.Memory != 2<<30 {
		t.Errorf("a loader without overrides read the environment: %v %v", p, err)
	}
}

func TestHashChangesWithPins(t *testing.T) {
	a, _ := Parse("t.yaml", []byte(good), noEnv)
	b, _ := Parse("t.yaml", []byte(strings.Replace(good, "1.3.6", "1.3.5", 1)), noEnv)
	c, _ := Parse("t.yaml", []byte("# a comment\n"+good), noEnv)
	if a.Hash() == b.Hash() {
		t.Error("hash ignores the runtime version")
	}
	if a.Hash() != c.Hash() {
		t.Error("hash changes with a comment")
	}
}

func TestMatrixExpansion(t *testing.T) {
	tests := []struct {
		name   string
		matrix string
		cells  []string
	}{
		{"none", "", []string{"t"}},
		{"one axis", "matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\"]\n", []string{"cri-tools=1.30.0", "cri-tools=1.34.0"}},
		{"two axes with exclude", `matrix:
  cri-tools: ["1.30.0", "1.34.0"]
  runtime:
    - runc@1.3.6
    - {name: crun, version: "1.8.1", source: "file:///usr/bin/crun"}
  exclude: [{cri-tools: "1.30.0", runtime: "crun@1.8.1"}]
`, []string{"cri-tools=1.30.0,runtime=runc@1.3.6", "cri-tools=1.34.0,runtime=runc@1.3.6", "cri-tools=1.34.0,runtime=crun@1.8.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("t.yaml", []byte(good+tt.matrix), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range p.Cells() {
				got = append(got, c.Name)
			}
			if strings.Join(got, " ") != strings.Join(tt.cells, " ") {
				t.Errorf("cells %v, want %v", got, tt.cells)
			}
		})
	}
	p, _ := Parse("t.yaml", []byte(good+"matrix:\n  runtime:\n    - {name: crun, version: \"1.8.1\", source: \"file:///usr/bin/crun\"}\n"), noEnv)
	rt := p.Cells()[0].Components[RoleRuntime]
	if rt.Name != "crun" || rt.Source != "file:///usr/bin/crun" || rt.Version != "1.8.1" {
		t.Errorf("crun cell runtime %+v", rt)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"2GiB", 2 << 30, true}, {"512MiB", 512 << 20, true}, {"10G", 10 << 30, true},
		{"2048", 2048 << 20, true}, {"1TiB", 1 << 40, true}, {" 3 GiB", 3 << 30, true},
		{"-1", 0, false}, {"2GB!", 0, false}, {"0", 0, false}, {"", 0, false}, {"2GB", 0, false}, {"1.5GiB", 3 << 29, true}, {"99999999999999GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v", tt.in, got, err)
		}
	}
	if s := Size(2 << 30).String(); s != "2GiB" {
		t.Errorf("String = %s", s)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(good + "matrix:\n  cri-tools: [\"1.30.0\"]\n  exclude: [{cri-tools: 1.30.0}]\n"))
	f.Add([]byte("vm: {memory: -1}"))
	f.Add([]byte("components: [1, 2]"))
	f.Add([]byte("matrix: {runtime: [{name: crun}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data, noEnv)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(err.Error(), "While parsing") {
				t.Errorf("multi-line error: %q", err)
			}
			return
		}
		_ = p.Cells()
		_ = p.Hash()
	})
}

func manyVersions(n int) string {
	var v []string
	for i := range n {
		v = append(v, fmt.Sprintf("\"1.%d.0\"", 30+i))
	}
	return strings.Join(v, ", ")
}

// TestVersionsKeepTheirText: an unquoted 1.10 is a YAML float, but a
// version must stay "1.10", not become 1.1.
func TestVersionsKeepTheirText(t *testing.T) {
	src := strings.Replace(good, `cri-o:     {version: "1.34.0"}`, `cri-o:     {version: 1.34.0}`, 1)
	src = strings.Replace(src, `runtime:   {name: runc, version: "1.3.6"}`, `runtime:   {name: runc, version: 1.10}`, 1)
	p, err := Parse("t.yaml", []byte(src), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Components[RoleRuntime].Version; v != "1.10" {
		t.Errorf("runtime version %q, want the text 1.10", v)
	}
	if v := p.Components[RoleCRIO].Version; v != "1.34.0" {
		t.Errorf("cri-o version %q", v)
	}
	p, err = Parse("t.yaml", []byte(good+"matrix:\n  runtime: [{name: runc, version: 1.20}]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Cells()[0].Components[RoleRuntime].Version; v != "1.20" {
		t.Errorf("axis version %q, want 1.20", v)
	}
}

func TestInputsNameTheField(t *testing.T) {
	a, _ := Parse("t.yaml", []byte(good), noEnv)
	in := a.Inputs()
	for k, want := range map[string]string{"components.runtime.version": "1.3.6", "components.runtime.name": "runc", "image": "debian-12", "source": "gomod"} {
		if in[k] != want {
			t.Errorf("input %s = %q, want %q", k, in[k], want)
		}
	}
}

func TestMatrixInclude(t *testing.T) {
	src := good + `matrix:
  cri-tools: ["1.30.0", "1.34.0"]
  exclude: [{cri-tools: "1.30.0"}]
  include:
    - {cri-tools: "1.37.0", runtime: "runc@1.4.0"}
    - {cri-tools: "1.34.0"}
`
	p, err := Parse("t.yaml", []byte(src), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range p.Cells() {
		got = append(got, c.Name)
	}
	want := []string{"cri-tools=1.34.0", "cri-tools=1.37.0,runtime=runc@1.4.0"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("cells %v, want %v (the include that repeats a cell adds nothing)", got, want)
	}
	rt := p.Cells()[1].Components[RoleRuntime]
	if rt.Name != "runc" || rt.Version != "1.4.0" {
		t.Errorf("included runtime %+v", rt)
	}
	if vals := ParseCellName(got[1]); vals[RoleRuntime] != "runc@1.4.0" || vals[RoleCRITools] != "1.37.0" {
		t.Errorf("ParseCellName %v", vals)
	}
	if ParseCellName("crio-1.34-runc") != nil {
		t.Error("a profile's own cell has no axis values")
	}
	if !strings.Contains(p.Inputs()["matrix.include"], "cri-tools=1.37.0") {
		t.Errorf("inputs %v", p.Inputs())
	}
	for _, bad := range []struct{ yaml, want string }{
		{"matrix:\n  include: [{kernel: \"6.1\"}]\n", "unknown component \"kernel\""},
		{"matrix:\n  include: [{runtime: runc}]\n", "NAME@VERSION"},
		{"matrix:\n  include: [{}]\n", "adds nothing"},
		{"matrix:\n  include: [\"1.30.0\"]\n", "matrix.include"},
	} {
		if _, err := Parse("t.yaml", []byte(good+bad.yaml), noEnv); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v", bad.yaml, err)
		}
	}
}

func TestCellSelection(t *testing.T) {
	p, err := Parse("t.yaml", []byte(good+"matrix:\n  cri-tools: [\"1.30.0\", \"1.34.0\", \"1.36.0\"]\n  runtime: [runc@1.3.6, runc@1.4.0]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		patterns []string
		n        int
	}{
		{nil, 6}, {[]string{"runc@1.4.0"}, 3}, {[]string{"cri-tools=1.3[04]*"}, 4}, {[]string{"1.30.0", "1.36.0"}, 4},
	}
	for _, tt := range tests {
		got, err := p.CellsMatching(tt.patterns)
		if err != nil || len(got) != tt.n {
			t.Errorf("%v: %v %v", tt.patterns, got, err)
		}
	}
	if _, err := p.CellsMatching([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "no cell matches") {
		t.Errorf("no match: %v", err)
	}
	if _, err := p.CellNamed(""); err == nil || !strings.Contains(err.Error(), "the matrix has 6 cells") {
		t.Errorf("no --cell: %v", err)
	}
	if n, err := p.CellNamed("cri-tools=1.30.0,runtime=runc@1.3.6"); err != nil || n == "" {
		t.Errorf("named: %v", err)
	}
	if _, err := p.CellNamed("cri-tools=9"); err == nil {
		t.Error("unknown cell accepted")
	}
}
