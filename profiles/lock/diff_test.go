package lock

import (
	"bytes"
	"maps"
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles"
)

// Diff names every field that differs, per cell and part.
func TestDiff(t *testing.T) {
	p := &profiles.Profile{Name: "p", Path: "/x/p.yaml"}
	base := func() *File {
		f := sample(p)
		f.Image.Recipe, f.Image.Packages = "sha256:r1", map[string]string{"bash": "5.2.15-2", "systemd": "252.36-1"}
		f.Artifacts[0].Origin = &Origin{Commit: "5dd0877c91adb0d2b253f8009d12bb6531ca0104"}
		f.Tools = []Artifact{{Component: ToolBats, Version: "1.11.1-1", Source: profiles.SourceRelease, SHA256: strings.Repeat("c", 64)},
			{Component: ToolCRIOTests, Version: "1.34.0", Source: profiles.SourceGoMod, Module: CRIOModule, ModuleSum: "h1:x"}}
		return f
	}
	tests := []struct {
		name   string
		mutate func(f *File)
		want   []string // "cell part field a b"
	}{
		{"identical", func(*File) {}, nil},
		{"bats", func(f *File) { f.Tools[0].SHA256 = "other" }, []string{"- tool bats sha256 " + strings.Repeat("c", 64) + " other"}},
		{"no CRI-O test tree", func(f *File) { f.Tools = f.Tools[:1] }, []string{"- tool cri-o-tests@1.34.0 tool present (none)"}},
		{"image digest", func(f *File) { f.Image.Digest = "sha256:other" }, []string{"- image disk sha256:" + strings.Repeat("a", 64) + " sha256:other"}},
		{"kernel", func(f *File) { f.Image.Kernel = "sha256:k2" }, []string{"- image kernel (none) sha256:k2"}},
		{"recipe", func(f *File) { f.Image.Recipe = "sha256:r2" }, []string{"- image recipe sha256:r1 sha256:r2"}},
		{"a package", func(f *File) { f.Image.Packages["systemd"] = "252.38-1" }, []string{"- image package systemd 252.36-1 252.38-1"}},
		{"a package added", func(f *File) { f.Image.Packages["vim"] = "9.0" }, []string{"- image package vim (none) 9.0"}},
		{"version", func(f *File) {
			f.Artifacts[1].Version = "1.30.0"
			f.Cells[0].Components[profiles.RoleCRITools] = f.Artifacts[1].Key()
		}, []string{"p cri-tools version 1.34.0 1.30.0"}},
		{"commit", func(f *File) { f.Artifacts[0].Origin = &Origin{Commit: "d91a449706dbbd6c285e4d365bbd3b65fd8de43c"} },
			[]string{"p cri-o commit 5dd0877c91adb0d2b253f8009d12bb6531ca0104 d91a449706dbbd6c285e4d365bbd3b65fd8de43c"}},
		{"module sum", func(f *File) { f.Artifacts[2].ModuleSum = "h1:other" }, []string{"p runtime module_sum h1:z h1:other"}},
		{"binary digest", func(f *File) { f.Artifacts[1].Binaries = map[string]string{"crictl": "c2"} },
			[]string{"p cri-tools binary crictl " + strings.Repeat("b", 64) + " c2"}},
		{"source", func(f *File) {
			f.Artifacts[3].Source = profiles.SourceBundle
			f.Cells[0].Components[profiles.RoleConmon] = f.Artifacts[3].Key()
		}, []string{"p conmon source package bundle"}},
		{"toolchain", func(f *File) { f.Artifacts[2].Toolchain = "go1.27.0" }, []string{"p runtime toolchain go1.26.0 go1.27.0"}},
		{"arch", func(f *File) { f.Arch = "arm64" }, []string{"- lock arch amd64 arm64"}},
		{"cell only in one", func(f *File) { f.Cells = append(f.Cells, Cell{Name: "q"}) }, []string{"q lock cell (none) present"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := base(), base()
			tt.mutate(b)
			var got []string
			for _, d := range Diff(a, b) {
				got = append(got, strings.Join([]string{orDash(d.Cell), d.Part, d.Field, d.A, d.B}, " "))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var buf bytes.Buffer
			WriteDiff(&buf, "ci", "laptop", Diff(a, b))
			if len(tt.want) == 0 && !strings.Contains(buf.String(), "pin the same environment") || len(tt.want) > 0 && !strings.Contains(buf.String(), "LAPTOP") {
				t.Errorf("table:\n%s", buf.String())
			}
		})
	}
}

// Summarize says what differs in a few lines, and cells are paired: two
// single-cell locks cell to cell, matrix cells by their axis values.
func TestSummarize(t *testing.T) {
	p := &profiles.Profile{Name: "p", Path: "/x/p.yaml"}
	withCritools := func(f *File, cell, version string) {
		a := f.Artifacts[1]
		a.Version = version
		f.Artifacts = append(f.Artifacts, a)
		for i := range f.Cells {
			if f.Cells[i].Name == cell {
				f.Cells[i].Components = maps.Clone(f.Cells[i].Components)
				f.Cells[i].Components[profiles.RoleCRITools] = a.Key()
			}
		}
	}
	matrix := func(names ...string) func(*File) {
		return func(f *File) {
			c := f.Cells[0]
			f.Cells = nil
			for _, n := range names {
				f.Cells = append(f.Cells, Cell{Name: n, Components: c.Components})
			}
		}
	}
	tests := []struct {
		name       string
		a, b       func(f *File)
		want       []string
		cellsFound int // cells with a "cell" difference (present in one only)
	}{
		{"identical", func(*File) {}, func(*File) {}, nil, 0},
		{"two profiles, one cell each", func(f *File) { f.Cells[0].Name = "crio-1.34-runc" },
			func(f *File) { f.Cells[0].Name = "seed-crictl-1.30"; withCritools(f, "seed-crictl-1.30", "1.30.0") },
			[]string{"cri-tools 1.34.0 → 1.30.0"}, 0},
		{"a commit", func(*File) {}, func(f *File) { f.Artifacts[0].Origin = &Origin{Commit: "d91a449706dbbd6c285e4d365bbd3b65fd8de43c"} },
			[]string{"cri-o 1.34.0: commit (none) → d91a4497"}, 0},
		{"binaries", func(*File) {}, func(f *File) { f.Artifacts[2].Binaries = map[string]string{"runc": "c"} },
			[]string{"runc 1.3.6: other binaries (runc)"}, 0},
		{"image packages", func(*File) {}, func(f *File) {
			f.Image.Digest = "sha256:" + strings.Repeat("d", 64)
			f.Image.Packages = map[string]string{"a": "1", "b": "1", "c": "1", "d": "1"}
		}, []string{"image debian-12: disk sha256:aaaaaaaaaaaa → sha256:dddddddddddd",
			"4 image package(s) differ: a (none) → 1, b (none) → 1, c (none) → 1, and 1 more"}, 0},
		{"matrix axes in another order", matrix("cri-tools=1.34.0,runtime=runc@1.3.6", "cri-tools=1.30.0,runtime=runc@1.3.6"),
			func(f *File) {
				matrix("runtime=runc@1.3.6,cri-tools=1.34.0", "runtime=runc@1.3.6,cri-tools=1.30.0")(f)
				withCritools(f, "runtime=runc@1.3.6,cri-tools=1.30.0", "1.30.0")
			},
			[]string{"cri-tools=1.30.0,runtime=runc@1.3.6: cri-tools 1.34.0 → 1.30.0"}, 0},
		{"a matrix cell only in one", matrix("x=1", "x=2"), matrix("x=1"), []string{"cell x=2 only in A"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := sample(p), sample(p)
			tt.a(a)
			tt.b(b)
			got := Summarize(a, b)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("summary:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			n := 0
			for _, d := range Diff(a, b) {
				if d.Field == "cell" {
					n++
				}
			}
			if n != tt.cellsFound {
				t.Errorf("%d cells unmatched, want %d: %+v", n, tt.cellsFound, Diff(a, b))
			}
		})
	}
}
