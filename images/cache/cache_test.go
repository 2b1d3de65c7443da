package cache

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

func TestFetch(t *testing.T) {
	payload := bytes.Repeat([]byte("envctl"), 100000)
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.ServeContent(w, r, "ok", timeZero, bytes.NewReader(payload))
	})
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload[:1000])
		// The handler returns early: the client sees a short body.
		if hj, ok := w.(http.Hijacker); ok {
			conn, _, _ := hj.Hijack()
			conn.Close()
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name   string
		path   string
		digest digest.Digest
		want   []string
	}{
		{"ok", "/ok", digestOf(payload), nil},
		{"404", "/missing", digestOf(payload), []string{"/missing", "HTTP 404", "envctl catalog"}},
		{"mismatch", "/ok", digestOf([]byte("other")), []string{"/ok", "checksum mismatch", digestOf([]byte("other")).String(), digestOf(payload).String(), "did not enter the cache"}},
		{"truncated", "/truncated", digestOf(payload), []string{"/truncated", "truncated file", "nothing entered the cache"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := New(t.TempDir())
			p, err := c.Fetch(context.Background(), srv.URL+tt.path, tt.digest)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(p)
				if !bytes.Equal(b, payload) || p != c.Path(tt.digest) {
					t.Errorf("cached file wrong at %s", p)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, ok := c.Has(tt.digest); ok {
				t.Error("a failed download entered the cache")
			}
			blobs, _ := c.List()
			if len(blobs) != 0 {
				t.Errorf("cache holds %v", blobs)
			}
		})
	}

	t.Run("cached second time", func(t *testing.T) {
		c, _ := New(t.TempDir())
		before := hits.Load()
		for i := 0; i < 3; i++ {
			if _, err := c.Fetch(context.Background(), srv.URL+"/ok", digestOf(payload)); err != nil {
				t.Fatal(err)
			}
		}
		if n := hits.Load() - before; n != 1 {
			t.Errorf("%d downloads for one blob", n)
		}
	})

	t.Run("parallel fetches share one download", func(t *testing.T) {
		c, _ := New(t.TempDir())
		before := hits.Load()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Separate Cache values stand in for separate envctl processes.
				c2, _ := New(c.Dir)
				_, err := c2.Fetch(context.Background(), srv.URL+"/ok", digestOf(payload))
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if n := hits.Load() - before; n != 1 {
			t.Errorf("%d downloads, want 1", n)
		}
	})

	t.Run("resume", func(t *testing.T) {
		c, _ := New(t.TempDir())
		d := digestOf(payload)
		part := filepath.Join(c.Dir, "tmp", d.Algorithm().String()+"-"+d.Encoded()+".part")
		os.WriteFile(part, payload[:250000], 0o644)
		var ranged atomic.Bool
		rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "" {
				ranged.Store(true)
			}
			http.ServeContent(w, r, "x", timeZero, bytes.NewReader(payload))
		}))
		defer rs.Close()
		if _, err := c.Fetch(context.Background(), rs.URL+"/x", d); err != nil {
			t.Fatal(err)
		}
		if !ranged.Load() {
			t.Error("the partial download was not resumed with a Range request")
		}
	})
}

func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tiny tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	big := bytes.Repeat([]byte("x"), 3<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "big", timeZero, bytes.NewReader(big))
	}))
	defer srv.Close()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Fetch(context.Background(), srv.URL+"/big", digestOf(big))
	if err == nil || !strings.Contains(err.Error(), "is full") || !strings.Contains(err.Error(), "ENVCTL_CACHE_DIR") {
		t.Fatalf("full disk: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(entries) != 0 {
		t.Errorf("partial file left behind: %v", entries)
	}
}

func TestImportAndDigests(t *testing.T) {
	c, _ := New(t.TempDir())
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("hello"), 0o644)
	d, p, err := c.Import(context.Background(), src, false)
	if err != nil || d != digestOf([]byte("hello")) || p != c.Path(d) {
		t.Fatalf("import: %v %v %s", d, err, p)
	}
	for _, bad := range []string{"md5:abc", "sha256:xyz", "sha256:" + strings.Repeat("a", 63), ""} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
	if err := c.Remove(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Has(d); ok {
		t.Error("not removed")
	}
}
