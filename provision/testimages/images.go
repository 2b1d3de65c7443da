package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Repositories and tags the guest sees (through its 127.0.0.1:GuestPort).
const (
	GuestPort    = 5000
	ArtifactRepo = "envctl/artifact:v1"
	WorkloadRepo = "envctl/workload:v1"
	PauseRepo    = "envctl/pause:v1"
)

// CaseArtifactRepos are the volume images of the test's cases when they run
// side by side (the lifecycle case keeps ArtifactRepo): the artifact's
// content under an image ID of each case's own, so that removing one
// case's image never touches another's.
var CaseArtifactRepos = struct{ SubPath, Invalid, NotPulled string }{
	SubPath:   "envctl/artifact-subpath:v1",
	Invalid:   "envctl/artifact-invalid:v1",
	NotPulled: "envctl/artifact-notpulled:v1",
}

// GuestRef is how the guest names an image served by the registry.
func GuestRef(repo string) string { return fmt.Sprintf("localhost:%d/%s", GuestPort, repo) }

type file struct {
	name string
	mode int64
	data []byte
	link string
	dir  bool
}

func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: time.Unix(0, 0), Uname: "root", Gname: "root"}
		switch {
		case f.dir:
			h.Typeflag = tar.TypeDir
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

func image(l v1.Layer, cfg v1.Config) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// Artifact is the volume image: /dir/file = "1", /file = "2".
func Artifact() (v1.Image, error) { return artifact(v1.Config{}) }

// CaseArtifact is the artifact with a label naming the case: the same
// layer, another config, so another image ID.
func CaseArtifact(testCase string) (v1.Image, error) {
	return artifact(v1.Config{Labels: map[string]string{"org.envctl.test-case": testCase}})
}

func artifact(cfg v1.Config) (v1.Image, error) {
	l, err := layer([]file{
		{name: "dir/", mode: 0o755, dir: true},
		{name: "dir/file", mode: 0o644, data: []byte("1\n")},
		{name: "file", mode: 0o644, data: []byte("2\n")},
	})
	if err != nil {
		return nil, err
	}
	return image(l, cfg)
}

// Workload returns the workload and pause images around a static binary
// that answers to sleep, cat and pause (see WorkloadBinary).
func Workload(binary string) (workload, pause v1.Image, err error) {
	if err := CheckStatic(binary); err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("workload binary: %w", err)
	}
	l, err := layer([]file{
		{name: "bin/", mode: 0o755, dir: true},
		{name: "bin/envctl-guest", mode: 0o755, data: data},
		{name: "bin/sleep", link: "envctl-guest"},
		{name: "bin/cat", link: "envctl-guest"},
		{name: "bin/true", link: "envctl-guest"},
		{name: "pause", link: "bin/envctl-guest"},
	})
	if err != nil {
		return nil, nil, err
	}
	env := []string{"PATH=/bin"}
	if workload, err = image(l, v1.Config{Env: env, Cmd: []string{"/bin/sleep", "infinity"}}); err != nil {
		return nil, nil, err
	}
	pause, err = image(l, v1.Config{Env: env, Entrypoint: []string{"/pause"}})
	return workload, pause, err
}

// CheckStatic refuses a binary the test containers cannot run: not an ELF
// file, or dynamically linked. A dynamically linked Go program also cannot
// start its threads under CRI-O's default seccomp profile, which the pause
// container always gets.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("workload binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("workload binary %s is dynamically linked; the test containers need a static one", path)
		}
	}
	return nil
}

// Registry is an in-process OCI registry on host loopback.
type Registry struct {
	Addr string
	srv  *http.Server
}

// Serve starts a registry on 127.0.0.1 and pushes the test images into it.
func Serve(ctx context.Context, workloadBinary string) (*Registry, error) {
	r, err := listen()
	if err != nil {
		return nil, err
	}
	art, err := Artifact()
	if err != nil {
		r.Close()
		return nil, err
	}
	work, pause, err := Workload(workloadBinary)
	if err != nil {
		r.Close()
		return nil, err
	}
	images := map[string]v1.Image{ArtifactRepo: art, WorkloadRepo: work, PauseRepo: pause}
	c := CaseArtifactRepos
	for repo, testCase := range map[string]string{c.SubPath: "sub-path", c.Invalid: "invalid-sub-path", c.NotPulled: "not-pulled"} {
		if images[repo], err = CaseArtifact(testCase); err != nil {
			r.Close()
			return nil, err
		}
	}
	for repo, img := range images {
		if err := r.Push(ctx, repo, img); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// listen starts an empty registry on 127.0.0.1.
func listen() (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("test registry: listen on 127.0.0.1: %w", err)
	}
	r := &Registry{Addr: l.Addr().String(), srv: &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: time.Minute}}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

// Push stores an image under repo:tag.
func (r *Registry) Push(ctx context.Context, repo string, img v1.Image) error {
	ref, err := name.ParseReference(r.Addr+"/"+repo, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("test registry: push %s: %w", ref, err)
	}
	return nil
}

// Close stops the registry.
func (r *Registry) Close() error { return r.srv.Close() }

// Upstream are the images upstream's image-volume test uses.
var Upstream = struct{ Artifact, Workload, Pause string }{
	Artifact: "quay.io/crio/artifact:v1",
	Workload: "quay.io/crio/busybox:latest",
	Pause:    "registry.k8s.io/pause:3.10",
}

// UpstreamRepo is the repository an upstream image gets in the host's
// registry: "quay.io/crio/artifact:v1" → "upstream/quay.io/crio/artifact:v1".
func UpstreamRepo(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("test image %q: %w", ref, err)
	}
	host := strings.NewReplacer(":", "-").Replace(strings.ToLower(r.Context().RegistryStr()))
	return "upstream/" + host + "/" + r.Context().RepositoryStr() + ":" + r.Identifier(), nil
}

// ServeUpstream starts a registry on 127.0.0.1 holding copies of upstream
// images that the host pulls (linux/amd64). The guest pulls them from
// there, under UpstreamRepo names, so it needs no network of its own and
// never sees the host's loopback.
func ServeUpstream(ctx context.Context, refs ...string) (*Registry, error) {
	r, err := listen()
	if err != nil {
		return nil, err
	}
	for _, ref := range refs {
		if err := r.copyUpstream(ctx, ref); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func (r *Registry) copyUpstream(ctx context.Context, ref string) error {
	var opts []name.Option
	if host, _, _ := strings.Cut(ref, "/"); strings.HasPrefix(host, "127.") || strings.HasPrefix(host, "localhost") {
		opts = append(opts, name.Insecure)
	}
	src, err := name.ParseReference(ref, opts...)
	if err != nil {
		return fmt.Errorf("test image %q: %w", ref, err)
	}
	img, err := remote.Image(src, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		return fmt.Errorf("pull test image %s on the host: %w; check the network, or use --test-images local", ref, err)
	}
	repo, err := UpstreamRepo(ref)
	if err != nil {
		return err
	}
	return r.Push(ctx, repo, img)
}
