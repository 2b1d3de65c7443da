package testimages

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The registry serves upstream's image names the way the guest asks for
// them through MirrorConf: registry host as the first path component.
func TestRegistryServesUpstreamNames(t *testing.T) {
	r, err := ServeNamed(context.Background(), build(t, "./testdata/static", false), UpstreamNames)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	art, _ := Artifact()
	want, _ := art.Digest()
	for _, tc := range []struct{ ref, repo string }{
		{"quay.io/crio/artifact:v1", "quay.io/crio/artifact:v1"},
		{"quay.io/crio/fedora-crio-ci:latest", "quay.io/crio/fedora-crio-ci:latest"},
		{"quay.io/crio/hello-wasm:latest", "quay.io/crio/hello-wasm:latest"},
		{"registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"},
	} {
		repo, err := NamedRepo(tc.ref)
		if err != nil || repo != tc.repo {
			t.Errorf("NamedRepo(%s) = %s, %v", tc.ref, repo, err)
			continue
		}
		ref, _ := name.ParseReference(r.Addr+"/"+repo, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			t.Errorf("pull %s: %v", tc.ref, err)
			continue
		}
		if d, _ := img.Digest(); (tc.ref == UpstreamNames.Artifact) != (d == want) {
			t.Errorf("%s has digest %s; the artifact is %s", tc.ref, d, want)
		}
	}
	conf := UpstreamNames.MirrorConf()
	for _, s := range []string{`prefix = "quay.io"`, `location = "localhost:5000/quay.io"`, `prefix = "registry.k8s.io"`, `location = "localhost:5000/registry.k8s.io"`} {
		if !strings.Contains(conf, s) {
			t.Errorf("mirror drop-in lacks %s:\n%s", s, conf)
		}
	}
}

func TestParseImagesArray(t *testing.T) {
	common := "X=1\nIMAGES=(\n    registry.k8s.io/pause:3.10\n    quay.io/crio/fedora-crio-ci:latest\n    quay.io/crio/hello-wasm:latest\n)\nfunction img2dir() {\n"
	got := ParseImagesArray(common)
	if !slices.Equal(got, []string{"registry.k8s.io/pause:3.10", "quay.io/crio/fedora-crio-ci:latest", "quay.io/crio/hello-wasm:latest"}) {
		t.Errorf("got %v", got)
	}
	if ParseImagesArray("no array") != nil {
		t.Error("no array should give nil")
	}
	// The module's own common.sh, when this machine has it.
	if home, err := os.UserHomeDir(); err == nil {
		if b, err := os.ReadFile(filepath.Join(home, "go/pkg/mod/github.com/cri-o/cri-o@v1.34.0/test/common.sh")); err == nil {
			if got := ParseImagesArray(string(b)); len(got) != 3 || got[0] != UpstreamNames.Pause {
				t.Errorf("cri-o v1.34.0 common.sh: %v", got)
			}
		}
	}
}
