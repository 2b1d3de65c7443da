package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
)

const profileYAML = `name: p
image: debian-12
source: gomod
components:
  cri-o:     {version: "1.34.0"}
  cri-tools: {version: "1.34.0"}
  runtime:   {name: runc, version: "1.3.6"}
  conmon:    {version: "2.1.6", source: package}
`

func load(t *testing.T, dir, src string) *profiles.Profile {
	t.Helper()
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := profiles.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sample(p *profiles.Profile) *File {
	f := &File{LockVersion: FormatVersion, Profile: p.Name, ProfileHash: p.Hash(), Inputs: p.Inputs(), Arch: "amd64",
		Image: Image{Name: "debian-12", Kind: ImageLocal, Digest: "sha256:" + strings.Repeat("a", 64), Format: "raw"}}
	arts := []Artifact{
		{Component: "cri-o", Version: "1.34.0", Source: profiles.SourceGoMod, Module: "github.com/cri-o/cri-o", ModuleSum: "h1:x", Recipe: "crio"},
		{Component: "cri-tools", Version: "1.34.0", Source: profiles.SourceGoMod, Module: "sigs.k8s.io/cri-tools", ModuleSum: "h1:y", Recipe: "crictl"},
		{Component: "runc", Version: "1.3.6", Source: profiles.SourceGoMod, Module: "github.com/opencontainers/runc", ModuleSum: "h1:z", Recipe: "runc"},
		{Component: "conmon", Version: "2.1.6", Source: profiles.SourcePackage, Package: "conmon"},
	}
	for i := range arts[:3] {
		arts[i].Binaries = map[string]string{arts[i].Recipe: strings.Repeat("b", 64)}
		arts[i].Toolchain = "go1.26.0"
	}
	f.Artifacts = arts
	c := Cell{Name: "p", Components: map[profiles.Role]string{}}
	for i, r := range []profiles.Role{profiles.RoleCRIO, profiles.RoleCRITools, profiles.RoleRuntime, profiles.RoleConmon} {
		c.Components[r] = arts[i].Key()
	}
	f.Cells = []Cell{c}
	return f
}

func TestRoundTripAndCell(t *testing.T) {
	dir := t.TempDir()
	p := load(t, dir, profileYAML)
	if err := Write(p.LockPath(), sample(p)); err != nil {
		t.Fatal(err)
	}
	f, err := ForProfile(p, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Cell(p, "p")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Components) != 4 || c.Components[0].Role != profiles.RoleCRIO || c.Components[2].Component != "runc" {
		t.Errorf("cell components %+v", c.Components)
	}
	if c.VersionList() != "cri-o 1.34.0, cri-tools 1.34.0, runc 1.3.6, conmon 2.1.6" || c.Versions()["runc"] != "1.3.6" {
		t.Errorf("versions %s", c.VersionList())
	}
	if a, ok := c.Component(profiles.RoleConmon); !ok || a.Pin() != "guest package conmon" {
		t.Errorf("conmon %+v", a)
	}
	if c.Hash == "" || c.Test != profiles.TestImageVolume || c.VM.CPUs != 2 {
		t.Errorf("cell %+v", c)
	}
	if _, err := f.Cell(p, "nope"); !fault.Is(err, fault.Input) {
		t.Errorf("missing cell: %v", err)
	}
}

func TestStaleLocksNameTheField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *profiles.Profile, f *File) *profiles.Profile
		want   []string
	}{
		{"runtime version edited", func(p *profiles.Profile, f *File) *profiles.Profile {
			return load(t, filepath.Dir(p.Path), strings.Replace(profileYAML, `"1.3.6"`, `"1.3.5"`, 1))
		}, []string{"changed components.runtime.version from \"1.3.6\" to \"1.3.5\""}},
		{"component added", func(p *profiles.Profile, f *File) *profiles.Profile {
			return load(t, filepath.Dir(p.Path), profileYAML+"  cni-plugins: {version: \"1.1.1\", source: package}\n")
		}, []string{"added components.cni-plugins."}},
		{"other arch", func(p *profiles.Profile, f *File) *profiles.Profile { f.Arch = "arm64"; return p }, []string{"locked for arm64"}},
		{"old format", func(p *profiles.Profile, f *File) *profiles.Profile { f.LockVersion = 1; return p }, []string{"lock format 1"}},
		{"hand-edited hash", func(p *profiles.Profile, f *File) *profiles.Profile {
			f.ProfileHash = "sha256:" + strings.Repeat("0", 64)
			return p
		}, []string{"edited by hand"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := load(t, dir, profileYAML)
			f := sample(p)
			p2 := tt.mutate(p, f)
			if err := Write(p.LockPath(), f); err != nil {
				t.Fatal(err)
			}
			_, err := ForProfile(p2, "amd64")
			var stale *StaleError
			if !errors.As(err, &stale) || fault.ClassOf(err) != fault.Input {
				t.Fatalf("err = %v, want a stale-lock input error", err)
			}
			for _, w := range append(tt.want, "run `envctl lock`", p.LockPath()) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

// A lock whose content is not what its profile resolves to (edited by
// hand, or badly merged) is refused, naming the field, even though its
// inputs and hash match the profile.
func TestTamperedLocks(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(f *File)
		want   string
		class  any
	}{
		{"cri-tools swapped back to 1.30.0", func(f *File) {
			f.Artifacts[1].Version = "1.30.0"
			f.Cells[0].Components[profiles.RoleCRITools] = f.Artifacts[1].Key()
		}, "cells[p].components.cri-tools: the lock pins cri-tools@1.30.0/gomod, the profile resolves to cri-tools@1.34.0/gomod", &TamperedError{}},
		{"source swapped", func(f *File) {
			f.Artifacts[2].Source = profiles.SourceRelease
			f.Cells[0].Components[profiles.RoleRuntime] = f.Artifacts[2].Key()
		}, "cells[p].components.runtime: the lock pins runc@1.3.6/release", &TamperedError{}},
		{"role dropped", func(f *File) { delete(f.Cells[0].Components, profiles.RoleConmon) }, "cells[p].components.conmon: missing", &TamperedError{}},
		{"extra cell from a bad merge", func(f *File) {
			f.Cells = append(f.Cells, Cell{Name: "other", Components: f.Cells[0].Components})
		}, "cells: the lock has p, other", &TamperedError{}},
		{"binary digests missing", func(f *File) { f.Artifacts[0].Binaries = nil }, "records no binary digests", &StaleError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, t.TempDir(), profileYAML)
			f := sample(p)
			tt.mutate(f)
			if err := Write(p.LockPath(), f); err != nil {
				t.Fatal(err)
			}
			_, err := ForProfile(p, "amd64")
			if err == nil || fault.ClassOf(err) != fault.Input || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "envctl lock") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			switch tt.class.(type) {
			case *TamperedError:
				var te *TamperedError
				if !errors.As(err, &te) {
					t.Errorf("%T, want a TamperedError", err)
				}
			case *StaleError:
				var se *StaleError
				if !errors.As(err, &se) {
					t.Errorf("%T, want a StaleError", err)
				}
			}
		})
	}
}

func TestMissingAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	p := load(t, dir, profileYAML)
	_, err := ForProfile(p, "amd64")
	var missing *MissingError
	if !errors.As(err, &missing) || fault.ClassOf(err) != fault.Input || !strings.Contains(err.Error(), "envctl lock") {
		t.Errorf("missing lock: %v", err)
	}
	if err := os.WriteFile(p.LockPath(), []byte("lock_version: 2\nbogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ForProfile(p, "amd64")
	if !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "not a valid lock file") || strings.Contains(err.Error(), "\n") {
		t.Errorf("corrupt lock: %v", err)
	}
	f := sample(p)
	f.Cells[0].Components[profiles.RoleCRITools] = "cri-tools@9.9.9/gomod"
	if _, err := f.Cell(p, "p"); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "does not hold") {
		t.Errorf("dangling artifact: %v", err)
	}
}

func TestDiffInputs(t *testing.T) {
	if d := DiffInputs(map[string]string{"a": "1"}, map[string]string{"a": "1"}); d != "" {
		t.Errorf("equal inputs differ: %s", d)
	}
	if d := DiffInputs(map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}); !strings.Contains(d, "dropped b") {
		t.Errorf("dropped: %s", d)
	}
}

// A lock is input: every field is checked for its form when it is read,
// and a truncated or garbled lock gets one line naming the field, before
// anything uses a value as a path, a URL, an argument or a flag.
func TestGarbledFieldsAreRefused(t *testing.T) {
	dir := t.TempDir()
	p := load(t, dir, profileYAML)
	valid := sample(p)
	valid.Artifacts[0].ModuleSum = "h1:ux2URwAyENy5e5hD9Z95tshdfy98eqatZk0fxx3rhuk="
	tests := []struct {
		name  string
		edit  func(f *File)
		field string
	}{
		{"a sha256 that is a path", func(f *File) { f.Artifacts[3].SHA256 = "../../zz" }, "artifacts[3].sha256"},
		{"an image digest that is a path", func(f *File) { f.Image.Digest = "sha256:../../../../etc" }, "image.digest"},
		{"a short digest", func(f *File) { f.Image.Kernel = "sha256:abc" }, "image.kernel"},
		{"a tool URL on the local disk", func(f *File) {
			f.Tools = []Artifact{{Component: ToolBats, Version: "1.11.1-1", Source: profiles.SourceRelease, URL: "file:///etc/shadow", SHA256: strings.Repeat("c", 64)}}
		}, "tools[0].url"},
		{"a recipe that climbs out", func(f *File) { f.Artifacts[0].Recipe = "../../x" }, "artifacts[0].recipe"},
		{"a binary named outside its directory", func(f *File) {
			f.Artifacts[1].Binaries = map[string]string{"../../../etc/evil": strings.Repeat("b", 64)}
		}, "artifacts[1].binaries"},
		{"a commit that is linker flags", func(f *File) {
			f.Artifacts[0].Origin = &Origin{Commit: "abc -X main.evil=1"}
		}, "artifacts[0].origin.commit"},
		{"a module sum that is not one", func(f *File) { f.Artifacts[0].ModuleSum = "h1:fake-@v" }, "artifacts[0].module_sum"},
		{"an image recipe that climbs out", func(f *File) { f.Image.Recipe = "../../x" }, "image.recipe"},
		{"a truncated lock", func(f *File) { f.Cells = nil }, "cells"},
		{"an empty lock", func(f *File) { *f = File{} }, "lock_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := *valid
			f.Image = valid.Image
			f.Artifacts = append([]Artifact(nil), valid.Artifacts...)
			tt.edit(&f)
			path := filepath.Join(t.TempDir(), "p.lock")
			if err := Write(path, &f); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			var te *TamperedError
			if !errors.As(err, &te) || te.Field != tt.field || !fault.Is(err, fault.Input) || strings.Contains(err.Error(), "\n") {
				t.Errorf("err %v, want a one-line input error naming %s", err, tt.field)
			}
		})
	}
	path := filepath.Join(dir, "p.lock")
	if err := Write(path, valid); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err != nil {
		t.Errorf("a valid lock: %v", err)
	}
	// The committed locks are valid.
	shipped, _ := filepath.Glob("../*.lock")
	for _, l := range shipped {
		if _, err := Read(l); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	// A lock cut off in the middle is refused in one line.
	b, _ := os.ReadFile(path)
	_ = os.WriteFile(path, b[:len(b)/3], 0o644)
	if _, err := Read(path); err == nil || strings.Contains(err.Error(), "\n") || !fault.Is(err, fault.Input) {
		t.Errorf("a truncated lock: %v", err)
	}
}
