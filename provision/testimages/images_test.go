package testimages

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestArtifactDeterministicAndContent(t *testing.T) {
	a, _ := Artifact()
	b, _ := Artifact()
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("artifact image not deterministic: %s vs %s", da, db)
	}
	tr := tar.NewReader(mutate.Extract(a))
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		got[h.Name] = string(data)
	}
	if got["dir/file"] != "1\n" || got["file"] != "2\n" {
		t.Errorf("artifact content %v", got)
	}
}

func TestRegistryServesImages(t *testing.T) {
	r, err := Serve(context.Background(), build(t, "./testdata/static", false))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ids := map[string]string{}
	c := CaseArtifactRepos
	for _, repo := range []string{ArtifactRepo, WorkloadRepo, PauseRepo, c.SubPath, c.Invalid, c.NotPulled} {
		ref, _ := name.ParseReference(r.Addr+"/"+repo, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			t.Errorf("pull %s: %v", repo, err)
			continue
		}
		id, _ := img.ConfigName()
		if other, ok := ids[id.String()]; ok {
			t.Errorf("%s and %s have one image ID %s: the side-by-side cases need one each", repo, other, id)
		}
		ids[id.String()] = repo
		if repo == ArtifactRepo || strings.HasPrefix(repo, "envctl/artifact-") {
			layers, _ := img.Layers()
			art, _ := Artifact()
			want, _ := art.Layers()
			d1, _ := layers[0].Digest()
			d2, _ := want[0].Digest()
			if len(layers) != 1 || d1 != d2 {
				t.Errorf("%s: layers %v, want the artifact's %v", repo, d1, d2)
			}
		}
	}
}

func build(t *testing.T, pkg string, cgo bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if cgo {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestWorkloadBinary: the test workload is a static binary whatever
// envctl is: built from the embedded source with the go command and
// cached, or envctl itself when static; a dynamic binary is refused.
func TestWorkloadBinary(t *testing.T) {
	dir := t.TempDir()
	dynamic := build(t, "./testdata/dynamic", true)
	if CheckStatic(dynamic) == nil {
		t.Skip("the toolchain built a static binary here")
	}
	if _, _, err := Workload(dynamic); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("accepted a dynamic workload: %v", err)
	}
	bin, err := WorkloadBinary(context.Background(), dir, dynamic)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(bin); err != nil || !strings.HasPrefix(bin, dir) {
		t.Fatalf("workload %s: %v", bin, err)
	}
	again, err := WorkloadBinary(context.Background(), dir, dynamic)
	if err != nil || again != bin {
		t.Errorf("not cached: %s %v", again, err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"true", nil, 0, ""},
		{"sleep", []string{"0.01"}, 0, ""},
		{"cat", []string{"/nonexistent"}, 1, ""},
		{"envctl-guest", nil, 2, ""},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Args[0] = tc.name
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d (%v)", tc.name, code, tc.code, err)
		}
	}
	// Without the go command, a static envctl serves as its own workload;
	// a dynamic one cannot.
	static := build(t, "./testdata/static", false)
	t.Setenv("PATH", t.TempDir())
	if got, err := WorkloadBinary(context.Background(), t.TempDir(), static); err != nil || got != static {
		t.Errorf("static self: %s %v", got, err)
	}
	if _, err := WorkloadBinary(context.Background(), t.TempDir(), dynamic); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic self without go: %v", err)
	}
}

func TestStaticBinaryNeedsNothing(t *testing.T) {
	if err := CheckStatic(build(t, "./testdata/static", false)); err != nil {
		t.Errorf("static binary: %v", err)
	}
	if _, _, err := Workload(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("accepted a missing binary")
	}
	notELF := filepath.Join(t.TempDir(), "script")
	_ = os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if _, _, err := Workload(notELF); err == nil {
		t.Error("accepted a file that is not an ELF binary")
	}
}

// Upstream images are pulled by the host (here from a stand-in upstream
// registry on loopback) and served to the guest under stable names.
func TestServeUpstream(t *testing.T) {
	up, err := Serve(context.Background(), build(t, "./testdata/static", false))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ref := up.Addr + "/" + ArtifactRepo
	reg, err := ServeUpstream(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	repo, err := UpstreamRepo(ref)
	if err != nil || !strings.HasPrefix(repo, "upstream/127.0.0.1-") || !strings.HasSuffix(repo, "/envctl/artifact:v1") {
		t.Fatalf("repo %q %v", repo, err)
	}
	got, err := name.ParseReference(reg.Addr+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(got); err != nil {
		t.Errorf("the copy is not served: %v", err)
	}
	if r, _ := UpstreamRepo(Upstream.Artifact); r != "upstream/quay.io/crio/artifact:v1" {
		t.Errorf("quay.io repo %q", r)
	}
	if _, err := ServeUpstream(context.Background(), up.Addr+"/no/such:image"); err == nil || !strings.Contains(err.Error(), "--test-images local") {
		t.Errorf("missing upstream image: %v", err)
	}
}
