package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

func tgz(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// TestReleaseSource fetches real-format release archives from a local
// server: the CRI-O bundle and the crictl tarball, unpacked once.
func TestReleaseSource(t *testing.T) {
	bundle := tgz(t, map[string]string{"cri-o/bin/crio": "crio", "cri-o/bin/pinns": "pinns", "cri-o/bin/conmon": "conmon", "cri-o/cni-plugins/bridge": "bridge"})
	crictl := tgz(t, map[string]string{"crictl": "crictl"})
	runc := []byte("runc")
	mux := http.NewServeMux()
	for path, b := range map[string][]byte{"/cri-o.amd64.v1.34.0.tar.gz": bundle, "/crictl-v1.34.0-linux-amd64.tar.gz": crictl, "/runc.amd64": runc} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { w.Write(b) })
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	c, _ := cache.New(t.TempDir())
	f := &Fetcher{Cache: c}
	crio := lock.Part{Role: profiles.RoleCRIO, Artifact: lock.Artifact{Component: "cri-o", Version: "1.34.0", Source: "release", URL: srv.URL + "/cri-o.amd64.v1.34.0.tar.gz", SHA256: sum(bundle)}}
	cell := lock.LockedCell{Components: []lock.Part{crio}}
	tests := []struct {
		part lock.Part
		want map[string]string
		cni  bool
	}{
		{crio, map[string]string{"crio": "crio", "pinns": "pinns"}, false},
		{lock.Part{Role: profiles.RoleCRITools, Artifact: lock.Artifact{Component: "cri-tools", Version: "1.34.0", Source: "release", URL: srv.URL + "/crictl-v1.34.0-linux-amd64.tar.gz", SHA256: sum(crictl)}}, map[string]string{"crictl": "crictl"}, false},
		{lock.Part{Role: profiles.RoleRuntime, Artifact: lock.Artifact{Component: "runc", Version: "1.3.6", Source: "release", URL: srv.URL + "/runc.amd64", SHA256: sum(runc)}}, map[string]string{"runc": "runc"}, false},
		{lock.Part{Role: profiles.RoleConmon, Artifact: lock.Artifact{Component: "conmon", Version: "2.1.6", Source: "bundle", Bundle: crio.Key()}}, map[string]string{"conmon": "conmon"}, false},
		{lock.Part{Role: profiles.RoleCNI, Artifact: lock.Artifact{Component: "cni-plugins", Version: "1.1.1", Source: "bundle", Bundle: crio.Key()}}, map[string]string{}, true},
	}
	for _, tt := range tests {
		got, err := f.Fetch(context.Background(), cell, tt.part)
		if err != nil {
			t.Fatalf("%s: %v", tt.part.Component, err)
		}
		for name, content := range tt.want {
			b, _ := os.ReadFile(got.Binaries[name])
			if string(b) != content {
				t.Errorf("%s: %s = %q", tt.part.Component, name, b)
			}
		}
		if tt.cni && !strings.HasSuffix(got.Dir, "cni-plugins") {
			t.Errorf("%s: CNI dir %q", tt.part.Component, got.Dir)
		}
		if cached, ok := f.Cached(cell, tt.part); !ok || len(cached.Binaries) != len(got.Binaries) {
			t.Errorf("%s: not found cached after fetching", tt.part.Component)
		}
	}
	bad := lock.Part{Role: profiles.RoleRuntime, Artifact: lock.Artifact{Component: "runc", Version: "1.3.6", Source: "release", URL: srv.URL + "/runc.amd64", SHA256: sum([]byte("other"))}}
	if _, err := f.Fetch(context.Background(), cell, bad); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("mismatch: %v", err)
	}
	if _, ok := f.Cached(cell, bad); ok {
		t.Error("an artifact that never downloaded is cached")
	}
	orphan := lock.Part{Role: profiles.RoleConmon, Artifact: lock.Artifact{Component: "conmon", Version: "2.1.6", Source: "bundle"}}
	if _, err := f.Fetch(context.Background(), lock.LockedCell{}, orphan); !fault.Is(err, fault.Input) {
		t.Errorf("bundle without a release CRI-O: %v", err)
	}
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "crun")
	os.WriteFile(p, []byte("crun"), 0o755)
	s := sha256.Sum256([]byte("crun"))
	f := &Fetcher{}
	a := lock.Part{Role: profiles.RoleRuntime, Artifact: lock.Artifact{Component: "crun", Source: profiles.FileSource(p), SHA256: hex.EncodeToString(s[:])}}
	got, err := f.Fetch(context.Background(), lock.LockedCell{}, a)
	if err != nil || got.Binaries["crun"] != p {
		t.Fatalf("file source: %v %v", got, err)
	}
	os.WriteFile(p, []byte("changed"), 0o755)
	if _, err := f.Fetch(context.Background(), lock.LockedCell{}, a); err == nil || !strings.Contains(err.Error(), "changed since it was locked") {
		t.Errorf("changed file: %v", err)
	}
	pkg := lock.Part{Role: profiles.RoleConmon, Artifact: lock.Artifact{Component: "conmon", Source: profiles.SourcePackage}}
	if got, err := f.Fetch(context.Background(), lock.LockedCell{}, pkg); err != nil || !got.InGuest {
		t.Errorf("package source: %+v %v", got, err)
	}
}

// TestUntarStaysInside: entries, links and link targets that would leave
// the destination are refused.
func TestUntarStaysInside(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
		ok   bool
	}{
		{"plain", tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644}, true},
		{"dot-dot", tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}, false},
		{"absolute", tar.Header{Name: "/etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, false},
		{"symlink out", tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../../etc"}, false},
		{"absolute symlink", tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, false},
		{"symlink in", tar.Header{Name: "d/link", Typeflag: tar.TypeSymlink, Linkname: "../a"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			tw := tar.NewWriter(gz)
			_ = tw.WriteHeader(&tt.hdr)
			_ = tw.Close()
			_ = gz.Close()
			dir := t.TempDir()
			src := filepath.Join(dir, "a.tgz")
			_ = os.WriteFile(src, buf.Bytes(), 0o644)
			dst := filepath.Join(dir, "out")
			err := Untar(src, dst)
			if (err == nil) != tt.ok {
				t.Errorf("Untar: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "escape")); err == nil {
				t.Error("a file escaped the destination")
			}
		})
	}
	// A link planted earlier in the archive cannot be followed out.
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	_ = tw.WriteHeader(&tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "."})
	_ = tw.WriteHeader(&tar.Header{Name: "d/x", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	_ = gz.Close()
	dir := t.TempDir()
	src := filepath.Join(dir, "b.tgz")
	_ = os.WriteFile(src, buf.Bytes(), 0o644)
	if err := Untar(src, filepath.Join(dir, "out")); err != nil {
		t.Errorf("a link inside the root: %v", err)
	}
}

// A flipped byte in a cached blob or in its unpacked tree is found before
// the files are handed out: the warning names the file, and the blob is
// fetched again or the tree unpacked again, so what comes back is intact.
func TestCorruptCacheIsMadeAgain(t *testing.T) {
	bundle := tgz(t, map[string]string{"crictl": "crictl-bits"})
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++; w.Write(bundle) }))
	defer srv.Close()
	s := sha256.Sum256(bundle)
	c, _ := cache.New(t.TempDir())
	var steps []string
	f := &Fetcher{Cache: c, Step: func(format string, args ...any) { steps = append(steps, fmt.Sprintf(format, args...)) }}
	part := lock.Part{Role: profiles.RoleCRITools, Artifact: lock.Artifact{Component: "cri-tools", Version: "1.34.0", Source: "release", URL: srv.URL + "/crictl.tar.gz", SHA256: hex.EncodeToString(s[:])}}
	got, err := f.Fetch(context.Background(), lock.LockedCell{}, part)
	if err != nil {
		t.Fatal(err)
	}
	crictl := got.Binaries["crictl"]
	want := sha256.Sum256([]byte("crictl-bits"))
	if got.Digests[crictl] != hex.EncodeToString(want[:]) {
		t.Fatalf("digests %v", got.Digests)
	}
	// The unpacked binary: unpacked again from the (intact) blob.
	if err := os.WriteFile(crictl, []byte("crictl-bitz"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err = f.Fetch(context.Background(), lock.LockedCell{}, part)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got.Binaries["crictl"]); string(b) != "crictl-bits" || hits != 1 {
		t.Errorf("after a damaged tree: %q, %d downloads", b, hits)
	}
	if len(steps) == 0 || !strings.Contains(steps[len(steps)-1], crictl+" is corrupt") {
		t.Errorf("no warning naming the file: %v", steps)
	}
	// The blob itself: fetched again.
	blob := c.Path(digest.NewDigestFromEncoded(digest.SHA256, part.SHA256))
	_ = os.RemoveAll(filepath.Dir(crictl))
	b, _ := os.ReadFile(blob)
	b[10] ^= 1
	_ = os.WriteFile(blob, b, 0o644)
	got, err = f.Fetch(context.Background(), lock.LockedCell{}, part)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got.Binaries["crictl"]); string(b) != "crictl-bits" || hits != 2 {
		t.Errorf("after a damaged blob: %q, %d downloads", b, hits)
	}
}

func TestReferenced(t *testing.T) {
	f := &lock.File{
		Image: lock.Image{Digest: "sha256:disk", Kernel: "sha256:kernel"},
		Artifacts: []lock.Artifact{
			{Component: "cri-tools", Version: "1.34.0", Source: profiles.SourceRelease, SHA256: "abc"},
			{Component: "runc", Version: "1.3.6", Source: profiles.SourceGoMod, Module: "m", ModuleSum: "h1:x", Recipe: "runc"},
			{Component: "conmon", Version: "2.1.6", Source: profiles.SourcePackage},
		},
	}
	r := Referenced(f)
	for _, e := range []cache.Entry{
		{Kind: cache.EntryBlob, Name: "sha256:disk"}, {Kind: cache.EntryBlob, Name: "sha256:kernel"},
		{Kind: cache.EntryBlob, Name: "sha256:abc"}, {Kind: cache.EntryUnpacked, Name: "abc"},
		{Kind: cache.EntryBuild, Name: BuildKey(f.Artifacts[1])},
	} {
		if !r.Has(e) {
			t.Errorf("%s %s is not referenced", e.Kind, e.Name)
		}
	}
	if r.Has(cache.Entry{Kind: cache.EntryBlob, Name: "sha256:other"}) || len(r[cache.EntryBuild]) != 1 {
		t.Errorf("refs %v", r)
	}
}
