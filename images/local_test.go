package images

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// store makes a store whose registry holds one local build of debian-12
// with its three blobs cached.
func store(t *testing.T) (*Store, Local) {
	t.Helper()
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c)
	l := Local{Name: "debian-12", Format: "raw", FastSeed: true, Recipe: s.recipeHash("debian-12"), Packages: map[string]string{"conmon": "2.1.6+ds1-1"}}
	for _, part := range []struct {
		data string
		dst  *string
	}{{"disk", &l.Disk}, {"kernel", &l.Kernel}, {"initrd", &l.Initrd}} {
		src := filepath.Join(t.TempDir(), part.data)
		_ = os.WriteFile(src, []byte(part.data), 0o644)
		d, _, err := c.Import(context.Background(), src, true)
		if err != nil {
			t.Fatal(err)
		}
		*part.dst = d.String()
	}
	if err := s.saveLocal(context.Background(), func(m map[string]Local) { m["debian-12"] = l }); err != nil {
		t.Fatal(err)
	}
	return s, l
}

func TestResolveAndEnsure(t *testing.T) {
	s, l := store(t)
	ref, err := s.Resolve("debian-12")
	if err != nil || ref.Kind != lock.ImageLocal || ref.Digest != l.Disk || ref.Kernel != l.Kernel {
		t.Fatalf("resolve %+v %v", ref, err)
	}
	f, err := s.Ensure(context.Background(), ref)
	if err != nil || !f.FastSeed || f.Packages["conmon"] == "" {
		t.Fatalf("ensure %+v %v", f, err)
	}
	if b, _ := os.ReadFile(f.Kernel); string(b) != "kernel" {
		t.Errorf("kernel file %s", f.Kernel)
	}
	if s.Packages(ref)["conmon"] != "2.1.6+ds1-1" {
		t.Error("packages")
	}
	if _, ok := s.Current("debian-12"); !ok {
		t.Error("a fresh build is not current")
	}
	ref2, err := s.Resolve("ubuntu-24.04")
	if err != nil || ref2.Kind != lock.ImageDownload || !strings.HasPrefix(ref2.URL, "https://cloud-images.ubuntu.com/") {
		t.Errorf("download ref %+v %v", ref2, err)
	}
	for name, want := range map[string]string{"plan9": "unknown image", "": "unknown image"} {
		if _, err := s.Resolve(name); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), want) {
			t.Errorf("resolve %q: %v", name, err)
		}
	}
	// A locked local build whose blobs were pruned is a clear input error.
	gone := ref
	gone.Kernel = digest.FromString("other").String()
	if _, err := s.Ensure(context.Background(), gone); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "envctl image build debian-12") {
		t.Errorf("missing blob: %v", err)
	}
	bad := ref
	bad.Kind = "floppy"
	if _, err := s.Ensure(context.Background(), bad); !fault.Is(err, fault.Input) {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestDownloadImage(t *testing.T) {
	s, _ := store(t)
	body := []byte("qcow2 image")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
	defer srv.Close()
	s.Catalog = &catalog.ImageCatalog{Images: map[string]*catalog.Image{"tiny": {Name: "tiny", URL: srv.URL + "/tiny.qcow2", Digest: digest.FromBytes(body).String(), Format: "qcow2"}}}
	p, err := s.Pull(context.Background(), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, body) {
		t.Error("pulled content")
	}
	ref, _ := s.Resolve("tiny")
	if f, err := s.Ensure(context.Background(), ref); err != nil || f.Disk != p || f.Format != "qcow2" {
		t.Errorf("ensure download %+v %v", f, err)
	}
	if _, err := s.Pull(context.Background(), "debian-12"); !fault.Is(err, fault.Input) {
		t.Errorf("pull of a name without a download: %v", err)
	}
	rows, err := s.List()
	if err != nil || len(rows) != 2 || rows[0].Kind != "local" || !rows[1].Cached {
		t.Errorf("list %+v %v", rows, err)
	}
	var buf bytes.Buffer
	WriteListings(&buf, rows)
	if !strings.Contains(buf.String(), "tiny") {
		t.Errorf("listing %s", buf.String())
	}
}

// TestRemoveAndPrune: `image rm` forgets a build; `image prune` then
// deletes exactly the blobs nothing references.
func TestRemoveAndPrune(t *testing.T) {
	s, l := store(t)
	ctx := context.Background()
	p, err := s.Prune(ctx, nil)
	if err != nil || len(p.Removed) != 0 {
		t.Fatalf("prune with everything in use removed %v %v", p.Removed, err)
	}
	if err := s.RemoveLocal(ctx, "plan9"); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "debian-12") {
		t.Errorf("rm of an unknown build: %v", err)
	}
	if err := s.RemoveLocal(ctx, "debian-12"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Current("debian-12"); ok {
		t.Error("removed build is still current")
	}
	p, err = s.Prune(ctx, nil)
	if err != nil || len(p.Removed) != 3 || p.Freed != int64(len("disk")+len("kernel")+len("initrd")) {
		t.Fatalf("prune %+v %v", p, err)
	}
	d, _ := cache.ParseDigest(l.Disk)
	if _, ok := s.Cache.Has(d); ok {
		t.Error("the disk blob survived prune")
	}
}

func TestCorruptRegistry(t *testing.T) {
	s, _ := store(t)
	if err := os.WriteFile(filepath.Join(s.Cache.Dir, "images", "local.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.Resolve("debian-12")
	if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("a corrupt registry must be an infrastructure error, not bad input: %v", err)
	}
}

func TestPackageChanges(t *testing.T) {
	got := PackageChanges(map[string]string{"bash": "5.2.15-2", "systemd": "252.36-1", "gone": "1"}, map[string]string{"bash": "5.2.15-2", "systemd": "252.38-1", "vim": "9.0"})
	want := []string{"gone 1 → (none)", "systemd 252.36-1 → 252.38-1", "vim (none) → 9.0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("changes %v, want %v", got, want)
	}
}

// A lock that pins another build of a local image than this machine has
// is refused, naming what differs: the packages, or the recipe.
func TestLockedBuildNotHere(t *testing.T) {
	s, l := store(t)
	ref, _ := s.Resolve("debian-12")
	if ref.Recipe != l.Recipe || ref.Packages["conmon"] != "2.1.6+ds1-1" {
		t.Fatalf("the lock entry lacks recipe or packages: %+v", ref)
	}
	other := ref
	other.Digest = "sha256:" + strings.Repeat("e", 64)
	other.Packages = map[string]string{"conmon": "2.1.6+ds1-2", "systemd": "252.36-1"}
	_, err := s.Ensure(context.Background(), other)
	for _, want := range []string{"the lock pins sha256:eeee", "this machine's build is " + l.Disk, "conmon 2.1.6+ds1-2 → 2.1.6+ds1-1", "systemd 252.36-1 → (none)", "--update"} {
		if err == nil || !strings.Contains(err.Error(), want) || !fault.Is(err, fault.Input) {
			t.Errorf("err %v lacks %q", err, want)
		}
	}
	other.Packages, other.Recipe = ref.Packages, "sha256:old"
	if _, err := s.Ensure(context.Background(), other); err == nil || !strings.Contains(err.Error(), "recipe differs") {
		t.Errorf("recipe: %v", err)
	}
}
