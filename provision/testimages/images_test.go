package testimages

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	dir := t.TempDir()
	bin := filepath.Join(dir, "guest")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/static")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build static helper: %v\n%s", err, out)
	}
	r, err := Serve(context.Background(), bin)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, repo := range []string{ArtifactRepo, WorkloadRepo, PauseRepo} {
		ref, _ := name.ParseReference(r.Addr+"/"+repo, name.Insecure)
		if _, err := remote.Image(ref); err != nil {
			t.Errorf("pull %s: %v", repo, err)
		}
	}
}

func TestRefusesDynamicBinary(t *testing.T) {
	if _, _, err := Workload("/bin/ls"); err == nil {
		t.Error("accepted a dynamically linked binary")
	}
}
