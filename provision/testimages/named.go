package testimages

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Names are the image names an upstream test file expects, each served
// with one of the hermetic images.
type Names struct {
	// Artifact gets the artifact volume image (/dir/file=1, /file=2).
	Artifact string
	// Pause gets the pause image.
	Pause string
	// Workloads get the workload image (sleep, cat).
	Workloads []string
}

// UpstreamNames are the names CRI-O's test/oci_volumes.bats and its
// helpers use at v1.34.0 (common.sh's IMAGES, and the artifact the file
// pulls). Read the locked tree's own list with ParseImagesArray.
var UpstreamNames = Names{
	Artifact:  "quay.io/crio/artifact:v1",
	Pause:     "registry.k8s.io/pause:3.10",
	Workloads: []string{"quay.io/crio/fedora-crio-ci:latest", "quay.io/crio/hello-wasm:latest"},
}

// NamedRepo is where a name lives in the registry: its registry host
// becomes the first path component, so that a registries.conf prefix
// mapping (MirrorConf) finds it: "registry.k8s.io/pause:3.10" →
// "registry.k8s.io/pause:3.10".
func NamedRepo(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("test image %q: %w", ref, err)
	}
	return r.Context().RegistryStr() + "/" + r.Context().RepositoryStr() + ":" + r.Identifier(), nil
}

// ServeNamed starts a registry on 127.0.0.1 holding the hermetic images
// under the names an upstream test file expects. The guest reaches it on
// its loopback (GuestPort) through the names MirrorConf maps.
func ServeNamed(ctx context.Context, workloadBinary string, n Names) (*Registry, error) {
	r, err := listen()
	if err != nil {
		return nil, err
	}
	if err := r.PushNamed(ctx, workloadBinary, n); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// PushNamed adds the hermetic images under upstream's names.
func (r *Registry) PushNamed(ctx context.Context, workloadBinary string, n Names) error {
	art, err := Artifact()
	if err != nil {
		return err
	}
	work, pause, err := Workload(workloadBinary)
	if err != nil {
		return err
	}
	images := map[string]v1.Image{n.Artifact: art, n.Pause: pause}
	for _, w := range n.Workloads {
		images[w] = work
	}
	for ref, img := range images {
		repo, err := NamedRepo(ref)
		if err == nil {
			err = r.Push(ctx, repo, img)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// MirrorConf is a registries.conf drop-in that sends every registry host
// the names use to the test registry on the guest's loopback.
func (n Names) MirrorConf() string {
	var hosts []string
	for _, ref := range append([]string{n.Artifact, n.Pause}, n.Workloads...) {
		if r, err := name.ParseReference(ref); err == nil && !slices.Contains(hosts, r.Context().RegistryStr()) {
			hosts = append(hosts, r.Context().RegistryStr())
		}
	}
	slices.Sort(hosts)
	var b strings.Builder
	b.WriteString("# Written by envctl: upstream's image names, served by envctl's test registry.\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", h, fmt.Sprintf("localhost:%d/%s", GuestPort, h))
	}
	return b.String()
}

// ParseImagesArray reads the IMAGES=( … ) array of an upstream common.sh:
// the images its helpers import before each test.
func ParseImagesArray(commonSh string) []string {
	_, rest, ok := strings.Cut(commonSh, "\nIMAGES=(")
	if !ok {
		return nil
	}
	body, _, ok := strings.Cut(rest, ")")
	if !ok {
		return nil
	}
	return strings.Fields(body)
}
