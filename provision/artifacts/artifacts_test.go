package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/lock"
)

func TestCRIAPIMinor(t *testing.T) {
	tests := []struct {
		in     string
		minor  int
		approx bool
	}{
		{"v0.34.0-rc.2", 34, false},
		{"v0.33.0", 33, false},
		{"v0.0.0-20240417201531-b7b7c17fd8b6 (replaced: k8s.io/kubernetes/staging/src/k8s.io/cri-api)", 30, true},
		{"v0.0.0-20240901000000-aaaaaaaaaaaa", 31, true},
	}
	for _, tt := range tests {
		m, approx, err := CRIAPIMinor(tt.in)
		if err != nil || m != tt.minor || approx != tt.approx {
			t.Errorf("CRIAPIMinor(%q) = %d, %v, %v", tt.in, m, approx, err)
		}
	}
	if _, _, err := CRIAPIMinor("v1.2.3"); err == nil {
		t.Error("accepted v1.2.3")
	}
}

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
		b := b
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { w.Write(b) })
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	c, _ := cache.New(t.TempDir())
	f := &Fetcher{Cache: c}
	crio := lock.Artifact{Component: "cri-o", Version: "1.34.0", Source: "release", URL: srv.URL + "/cri-o.amd64.v1.34.0.tar.gz", SHA256: sum(bundle)}
	lf := &lock.File{Artifacts: []lock.Artifact{crio}}
	tests := []struct {
		art  lock.Artifact
		want map[string]string
		cni  bool
	}{
		{crio, map[string]string{"crio": "crio", "pinns": "pinns", "conmon": "conmon"}, true},
		{lock.Artifact{Component: "cri-tools", Version: "1.34.0", Source: "release", URL: srv.URL + "/crictl-v1.34.0-linux-amd64.tar.gz", SHA256: sum(crictl)}, map[string]string{"crictl": "crictl"}, false},
		{lock.Artifact{Component: "runc", Version: "1.3.6", Source: "release", URL: srv.URL + "/runc.amd64", SHA256: sum(runc)}, map[string]string{"runc": "runc"}, false},
		{lock.Artifact{Component: "conmon", Version: "2.1.6", Source: "bundle", Bundle: crio.Key()}, map[string]string{"conmon": "conmon"}, false},
		{lock.Artifact{Component: "cni-plugins", Version: "1.1.1", Source: "bundle", Bundle: crio.Key()}, map[string]string{}, true},
	}
	for _, tt := range tests {
		got, err := f.Fetch(context.Background(), lf, tt.art)
		if err != nil {
			t.Fatalf("%s: %v", tt.art.Component, err)
		}
		for name, content := range tt.want {
			b, _ := os.ReadFile(got.Binaries[name])
			if string(b) != content {
				t.Errorf("%s: %s = %q", tt.art.Component, name, b)
			}
		}
		if tt.cni && !strings.HasSuffix(got.CNIDir, "cni-plugins") {
			t.Errorf("%s: CNI dir %q", tt.art.Component, got.CNIDir)
		}
	}
	bad := lock.Artifact{Component: "runc", Version: "1.3.6", Source: "release", URL: srv.URL + "/runc.amd64", SHA256: sum([]byte("other"))}
	if _, err := f.Fetch(context.Background(), lf, bad); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("mismatch: %v", err)
	}
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "crun")
	os.WriteFile(p, []byte("crun"), 0o755)
	s := sha256.Sum256([]byte("crun"))
	f := &Fetcher{}
	a := lock.Artifact{Component: "crun", Source: "file://" + p, SHA256: hex.EncodeToString(s[:])}
	got, err := f.Fetch(context.Background(), &lock.File{}, a)
	if err != nil || got.Binaries["crun"] != p {
		t.Fatalf("file source: %v %v", got, err)
	}
	os.WriteFile(p, []byte("changed"), 0o755)
	if _, err := f.Fetch(context.Background(), &lock.File{}, a); err == nil || !strings.Contains(err.Error(), "changed since it was locked") {
		t.Errorf("changed file: %v", err)
	}
}
