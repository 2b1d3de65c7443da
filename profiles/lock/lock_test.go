package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/fault"
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
		{"hand-edited hash", func(p *profiles.Profile, f *File) *profiles.Profile { f.ProfileHash = "sha256:00"; return p }, []string{"edited by hand"}},
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
