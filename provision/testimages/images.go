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
	"path"
	"slices"
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
			tw.Write(f.data)
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
func Artifact() (v1.Image, error) {
	l, err := layer([]file{
		{name: "dir/", mode: 0o755, dir: true},
		{name: "dir/file", mode: 0o644, data: []byte("1\n")},
		{name: "file", mode: 0o644, data: []byte("2\n")},
	})
	if err != nil {
		return nil, err
	}
	return image(l, v1.Config{})
}

// Workload returns the workload and pause images around a binary that
// answers to sleep, cat and pause (normally envctl itself). A dynamically
// linked binary (a plain `go build` has cgo on) brings its ELF interpreter
// and shared libraries from the host, so the images work however envctl
// was linked.
func Workload(binary string) (workload, pause v1.Image, err error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("workload binary: %w", err)
	}
	deps, libDirs, err := RuntimeDeps(binary)
	if err != nil {
		return nil, nil, err
	}
	files := []file{
		{name: "bin/", mode: 0o755, dir: true},
		{name: "bin/envctl-guest", mode: 0o755, data: data},
		{name: "bin/sleep", link: "envctl-guest"},
		{name: "bin/cat", link: "envctl-guest"},
		{name: "bin/true", link: "envctl-guest"},
		{name: "pause", link: "bin/envctl-guest"},
	}
	dirs := map[string]bool{"bin/": true}
	for _, d := range deps {
		rel := strings.TrimPrefix(d.path, "/")
		for dir := path.Dir(rel); dir != "." && !dirs[dir+"/"]; dir = path.Dir(dir) {
			dirs[dir+"/"] = true
			files = append(files, file{name: dir + "/", mode: 0o755, dir: true})
		}
		files = append(files, file{name: rel, mode: 0o755, data: d.data})
	}
	slices.SortStableFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	l, err := layer(files)
	if err != nil {
		return nil, nil, err
	}
	env := []string{"PATH=/bin"}
	if len(libDirs) > 0 {
		env = append(env, "LD_LIBRARY_PATH="+strings.Join(libDirs, ":"))
	}
	if workload, err = image(l, v1.Config{Env: env, Cmd: []string{"/bin/sleep", "infinity"}}); err != nil {
		return nil, nil, err
	}
	pause, err = image(l, v1.Config{Env: env, Entrypoint: []string{"/pause"}})
	return workload, pause, err
}

// dep is a file a dynamically linked binary needs at run time.
type dep struct {
	path string // where the loader looks for it
	data []byte
}

// libraryDirs are searched, in order, for the shared libraries a binary
// names (after the interpreter's own directory).
var libraryDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// RuntimeDeps lists what a binary needs from the host to run in an empty
// container: nothing for a static binary; else its ELF interpreter and
// every shared library it needs, transitively. It also returns the
// directories the libraries sit in.
func RuntimeDeps(binary string) ([]dep, []string, error) {
	interp, libs, err := elfNeeds(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("workload binary %s: %w", binary, err)
	}
	if interp == "" {
		return nil, nil, nil
	}
	var out []dep
	var dirs []string
	b, err := os.ReadFile(interp)
	if err != nil {
		return nil, nil, fmt.Errorf("workload binary %s is dynamically linked, and its interpreter %s cannot be read: %w", binary, interp, err)
	}
	out = append(out, dep{interp, b})
	search := append([]string{path.Dir(interp)}, libraryDirs...)
	seen := map[string]bool{path.Base(interp): true}
	for len(libs) > 0 {
		lib := libs[0]
		libs = libs[1:]
		if seen[lib] {
			continue
		}
		seen[lib] = true
		found := ""
		for _, d := range search {
			if _, err := os.Stat(path.Join(d, lib)); err == nil {
				found = path.Join(d, lib)
				break
			}
		}
		if found == "" {
			return nil, nil, fmt.Errorf("workload binary %s needs %s, which is in none of %s; build envctl with CGO_ENABLED=0", binary, lib, strings.Join(search, ", "))
		}
		data, err := os.ReadFile(found)
		if err != nil {
			return nil, nil, fmt.Errorf("workload binary %s: %w", binary, err)
		}
		out = append(out, dep{found, data})
		if !slices.Contains(dirs, path.Dir(found)) {
			dirs = append(dirs, path.Dir(found))
		}
		_, more, err := elfNeeds(found)
		if err != nil {
			return nil, nil, fmt.Errorf("library %s: %w", found, err)
		}
		libs = append(libs, more...)
	}
	return out, dirs, nil
}

// elfNeeds reads an ELF file's interpreter ("" when static) and the
// shared libraries it names.
func elfNeeds(p string) (interp string, libs []string, err error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return "", nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	libs, err = f.ImportedLibraries()
	return interp, libs, err
}

// Registry is an in-process OCI registry on host loopback.
type Registry struct {
	Addr string
	srv  *http.Server
}

// Serve starts a registry on 127.0.0.1 and pushes the test images into it.
func Serve(ctx context.Context, workloadBinary string) (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("test registry: listen on 127.0.0.1: %w", err)
	}
	r := &Registry{Addr: l.Addr().String(), srv: &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}}
	go r.srv.Serve(l)
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
	for repo, img := range map[string]v1.Image{ArtifactRepo: art, WorkloadRepo: work, PauseRepo: pause} {
		if err := r.Push(ctx, repo, img); err != nil {
			r.Close()
			return nil, err
		}
	}
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
