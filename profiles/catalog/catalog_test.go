package catalog

import (
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
