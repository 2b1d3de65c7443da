package catalog

import (
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedCatalogCoversRequiredRanges(t *testing.T) {
	c := Default()
	need := map[string][]string{
		"cri-o":     {"1.31.0", "1.32.0", "1.33.0", "1.34.0"},
		"cri-tools": {"1.30.0", "1.31.0", "1.34.0", "1.36.0", "1.37.0"},
		"runc":      {"1.1.14", "1.2.6", "1.3.6", "1.4.0"},
		"crun":      {"1.8", "1.8.1", "1.14", "1.20"},
	}
	for comp, versions := range need {
		cc, err := c.Get(comp)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range versions {
			got, err := cc.Resolve(v, false)
			if err != nil || got != v {
				t.Errorf("%s %s: got %q, %v", comp, v, got, err)
			}
		}
	}
	for _, comp := range []string{"cri-o", "cri-tools", "runc", "crun"} {
		if cc, _ := c.Get(comp); cc.Release == nil || cc.Release.ChecksumURL == "" {
			t.Errorf("%s has no release URLs", comp)
		}
	}
	for _, comp := range []string{"cri-o", "cri-tools", "runc"} {
		if cc, _ := c.Get(comp); cc.GoMod == nil {
			t.Errorf("%s has no gomod recipe", comp)
		}
	}
}

func TestResolve(t *testing.T) {
	c, err := Parse([]byte(`components:
  x:
    binaries: [x]
    versions: ["1.9", "1.10", "1.2.0", "1.9.1", "1.10.2", "2.0.0-rc.1"]
`))
	if err != nil {
		t.Fatal(err)
	}
	x, _ := c.Get("x")
	if got := strings.Join(x.Sorted(), " "); got != "1.2.0 1.9 1.9.1 1.10 1.10.2 2.0.0-rc.1" {
		t.Errorf("sorted = %s (1.10 must sort after 1.9)", got)
	}
	tests := []struct {
		spec, want string
		unknown    bool
		errHas     string
	}{
		{"1.10", "1.10", false, ""},
		{"=1.9.1", "1.9.1", false, ""},
		{"~> 1.9", "1.10.2", false, ""},
		{"~> 1.9.0", "1.9.1", false, ""},
		{">= 1.9, < 1.10", "1.9.1", false, ""},
		{"1.11.0", "", false, "nearest known: 1.10, 1.10.2, 2.0.0-rc.1"},
		{"1.11.0", "1.11.0", true, ""},
		{"> 3", "", false, "matches no catalog version"},
		{"banana", "", false, "neither a version nor a constraint"},
		{"", "", false, "empty"},
	}
	for _, tt := range tests {
		got, err := x.Resolve(tt.spec, tt.unknown)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Resolve(%q) err = %v, want %q", tt.spec, err, tt.errHas)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.spec, got, err, tt.want)
		}
	}
}

func TestExpand(t *testing.T) {
	c := Default()
	tests := map[string]string{
		"cri-tools": "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz",
		"crun":      "https://github.com/containers/crun/releases/download/1.34.0/crun-1.34.0-linux-amd64",
		"runc":      "https://github.com/opencontainers/runc/releases/download/v1.34.0/runc.amd64",
		"cri-o":     "https://storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v1.34.0.tar.gz",
	}
	for comp, want := range tests {
		cc, _ := c.Get(comp)
		if got := Expand(cc.Release.URL, "1.34.0", "amd64"); got != want {
			t.Errorf("%s: %s, want %s", comp, got, want)
		}
	}
}

func TestComponentFacts(t *testing.T) {
	c := Default()
	tests := []struct {
		name, main, pkg string
		sources         []string
		refused         []string
	}{
		{"cri-o", "crio", "cri-o", []string{"release", "gomod", "file"}, []string{"package", "bundle"}},
		{"cri-tools", "crictl", "cri-tools", []string{"release", "gomod"}, []string{"bundle"}},
		{"runc", "runc", "runc", []string{"gomod", "package"}, []string{"bundle"}},
		{"crun", "crun", "crun", []string{"release", "package", "file"}, []string{"gomod"}},
		{"conmon", "conmon", "conmon", []string{"package", "bundle"}, []string{"release", "gomod"}},
		{"cni-plugins", "bridge", "containernetworking-plugins", []string{"package", "bundle"}, []string{"file", "gomod"}},
	}
	for _, tt := range tests {
		comp, err := c.Get(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if comp.Main() != tt.main || comp.Package != tt.pkg || len(comp.VersionArgs) == 0 {
			t.Errorf("%s: main %s package %s args %v", tt.name, comp.Main(), comp.Package, comp.VersionArgs)
		}
		for _, s := range tt.sources {
			if !comp.AllowsSource(s) {
				t.Errorf("%s refuses source %s", tt.name, s)
			}
		}
		for _, s := range tt.refused {
			if comp.AllowsSource(s) {
				t.Errorf("%s allows source %s, which cannot work", tt.name, s)
			}
		}
	}
	crio, _ := c.Get("cri-o")
	if !crio.Release.Archive() || crio.Release.Layout["crio"] != "cri-o/bin/crio" || crio.Release.Bundles["conmon"].Files["conmon"] == "" || crio.Release.Bundles["cni-plugins"].Dir == "" {
		t.Errorf("CRI-O bundle layout %+v", crio.Release)
	}
	if runc, _ := c.Get("runc"); runc.Release.Archive() {
		t.Error("the runc release is the binary itself, not an archive")
	}
}

func TestSameVersionAndCompare(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"1.8", "1.8.0", true}, {"v1.34.0", "1.34.0", true}, {"1.30.0", "1.34.0", false},
		{"1.34.0-rc.1", "1.34.0", false}, {"1.34.0-rc.1", "1.34.0-rc.1", true}, {"x", "x", true},
	}
	for _, tt := range tests {
		if got := SameVersion(tt.a, tt.b); got != tt.same {
			t.Errorf("SameVersion(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
	if Compare("1.10", "1.9") <= 0 || Compare("1.34.0-rc.1", "1.34.0") >= 0 {
		t.Error("Compare orders versions as text")
	}
}

func TestImageCatalog(t *testing.T) {
	c := Images()
	if im := c.Images["debian-12"]; im == nil || !strings.HasPrefix(im.Digest, "sha512:") || im.Format != "qcow2" {
		t.Errorf("debian-12 %+v", im)
	}
	if _, ok := c.Builds["debian-12"]; !ok {
		t.Error("no debian-12 build recipe")
	}
	if got := strings.Join(c.Names(), " "); !strings.Contains(got, "debian-12") || !strings.Contains(got, "fedora-42") {
		t.Errorf("names %s", got)
	}
	if _, err := ParseImages([]byte("images: {x: {bogus: 1}}")); err == nil {
		t.Error("accepted an unknown field")
	}
}

// The provenance table: every entry names a known version, and the facts
// the issue of the moved CRI-O tag rests on are there.
func TestProvenance(t *testing.T) {
	c := Default()
	for name, p := range Provenances() {
		comp, err := c.Get(name)
		if err != nil {
			t.Fatalf("provenance for %s: %v", name, err)
		}
		for v, r := range p.Releases {
			if !slices.Contains(comp.Versions, v) || len(r.Commit) != 40 || r.Time.IsZero() {
				t.Errorf("%s %s: %+v (not a catalog version, or no full commit and time)", name, v, r)
			}
		}
	}
	crio, _ := c.Get("cri-o")
	r, ok := crio.Upstream("1.34.0")
	if !ok || r.Commit != "d91a449706dbbd6c285e4d365bbd3b65fd8de43c" || r.Time.Format("2006-01-02") != "2025-09-10" {
		t.Errorf("cri-o 1.34.0: %+v", r)
	}
	tests := []struct {
		version, commit string
		want            SourceStatus
	}{
		{"1.34.0", "d91a449706dbbd6c285e4d365bbd3b65fd8de43c", StatusRelease},
		{"v1.34.0", "d91a4497", StatusRelease},
		{"1.34.0", "5dd0877c91adb0d2b253f8009d12bb6531ca0104", StatusMovedTag},
		{"1.99.0", "5dd0877c", StatusUnknown},
		{"1.34.0", "", StatusUnknown},
	}
	for _, tt := range tests {
		if got := crio.Status(tt.version, tt.commit); got != tt.want {
			t.Errorf("Status(%s, %s) = %s, want %s", tt.version, tt.commit, got, tt.want)
		}
	}
}
