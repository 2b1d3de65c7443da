package cache

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// flip changes one byte of a file in place, as a failing disk or a stray
// write would.
func flip(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyBlobs(t *testing.T) {
	c, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "blob")
	data := []byte(strings.Repeat("runc", 10000))
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, p, err := c.Import(context.Background(), src, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Verify(d); err != nil || got != p {
		t.Fatalf("intact blob: %q %v", got, err)
	}
	// A touch moves the stamp: the blob is hashed again, found intact and
	// stamped anew.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(d); err != nil {
		t.Fatalf("touched blob: %v", err)
	}
	// A flipped byte with the modification time put back: the change time
	// still moved, so the blob is hashed, found corrupt and removed.
	st, _ := os.Stat(p)
	flip(t, p, 100)
	_ = os.Chtimes(p, st.ModTime(), st.ModTime())
	_, err = c.Verify(d)
	var corrupt *CorruptError
	if !errors.As(err, &corrupt) || corrupt.Path != p || corrupt.Expected != d || !strings.Contains(err.Error(), p) {
		t.Fatalf("flipped byte: %v", err)
	}
	if _, ok := c.Has(d); ok {
		t.Error("a corrupt blob is still present")
	}
	if _, err := c.Verify(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after removal: %v", err)
	}
}

func TestSealAndCheckTree(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string // "" for intact
	}{
		{"intact", func(*testing.T, string) {}, ""},
		{"touched only", func(t *testing.T, dir string) {
			later := time.Now().Add(time.Hour)
			_ = os.Chtimes(filepath.Join(dir, "bin/crictl"), later, later)
		}, ""},
		{"flipped byte", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "bin/crictl"), 10) }, "bin/crictl is corrupt: expected sha256:"},
		{"file removed", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, "bin/crictl")) }, "bin/crictl is corrupt: missing"},
		{"file added", func(t *testing.T, dir string) { _ = os.WriteFile(filepath.Join(dir, "bin/extra"), []byte("x"), 0o755) }, "bin/extra is corrupt: not in the manifest"},
		{"symbolic link added", func(t *testing.T, dir string) { _ = os.Symlink("/etc/passwd", filepath.Join(dir, "bin/runc")) }, "bin/runc is corrupt: not a regular file the manifest records"},
		{"file replaced by a link to the same bytes", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "LICENSE")
			copyTo := filepath.Join(t.TempDir(), "LICENSE")
			_ = os.WriteFile(copyTo, []byte("Apache"), 0o644)
			_ = os.Remove(p)
			_ = os.Symlink(copyTo, p)
		}, "LICENSE is corrupt: not a regular file"},
		{"a recorded link retargeted", func(t *testing.T, dir string) {
			_ = os.Remove(filepath.Join(dir, "bin/ctl"))
			_ = os.Symlink("/etc/shadow", filepath.Join(dir, "bin/ctl"))
		}, "bin/ctl is corrupt: the symbolic link to crictl was changed"},
		{"manifest removed", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, ManifestName)) }, "no manifest"},
		{"manifest garbled", func(t *testing.T, dir string) { _ = os.WriteFile(filepath.Join(dir, ManifestName), []byte("{"), 0o644) }, "unreadable manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_ = os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
			_ = os.WriteFile(filepath.Join(dir, "bin/crictl"), []byte(strings.Repeat("crictl", 1000)), 0o755)
			_ = os.WriteFile(filepath.Join(dir, "LICENSE"), []byte("Apache"), 0o644)
			_ = os.Symlink("crictl", filepath.Join(dir, "bin/ctl")) // an archive's own link
			sealed, err := SealTree(dir)
			if err != nil || len(sealed) != 3 {
				t.Fatalf("seal: %v %v", sealed, err)
			}
			tt.damage(t, dir)
			m, err := CheckTree(dir)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d, ok := m.Digest(dir, filepath.Join(dir, "bin/crictl")); !ok || d != sealed["bin/crictl"].Digest {
					t.Errorf("digest %s", d)
				}
				return
			}
			if !IsCorrupt(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCleanTemp(t *testing.T) {
	c, _ := New(t.TempDir())
	old := filepath.Join(c.Dir, "tmp", "sha256-x.part")
	fresh := filepath.Join(c.Dir, "tmp", "build-crio-123")
	_ = os.WriteFile(old, []byte("x"), 0o644)
	_ = os.MkdirAll(fresh, 0o755)
	past := time.Now().Add(-48 * time.Hour)
	_ = os.Chtimes(old, past, past)
	removed, err := c.CleanTemp(24 * time.Hour)
	if err != nil || len(removed) != 1 || removed[0] != old {
		t.Errorf("removed %v %v", removed, err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a fresh temporary directory was removed")
	}
}

// A server that stops sending mid-file ends the download after the idle
// timeout, and nothing enters the cache.
func TestDownloadIdleTimeout(t *testing.T) {
	old := IdleTimeout
	IdleTimeout = 500 * time.Millisecond
	defer func() { IdleTimeout = old }()
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c, _ := New(t.TempDir())
	start := time.Now()
	_, err := c.Fetch(context.Background(), srv.URL+"/stall", digestOf([]byte("x")))
	if err == nil || !strings.Contains(err.Error(), "stalled") || time.Since(start) > 10*time.Second {
		t.Fatalf("stalled download: %v after %s", err, time.Since(start))
	}
	if blobs, _ := c.List(); len(blobs) != 0 {
		t.Error("a stalled download entered the cache")
	}
}

// What a running envctl holds is never removed by gc or verify: a build,
// a blob, a saved guest; a saved guest still being written neither.
// putBlob imports content into the cache as a blob.
func putBlob(t *testing.T, c *Cache, content string) (digest.Digest, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "blob")
	_ = os.WriteFile(src, []byte(content), 0o644)
	d, p, err := c.Import(t.Context(), src, false)
	if err != nil {
		t.Fatal(err)
	}
	return d, p
}

func TestHeldEntriesAreLeftAlone(t *testing.T) {
	c, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	build := filepath.Join(c.Dir, "builds", "crictl-1.34.0-abc")
	_ = os.MkdirAll(build, 0o755)
	_ = os.WriteFile(filepath.Join(build, "crictl"), []byte("crictl"), 0o755)
	if _, err := SealTree(build); err != nil {
		t.Fatal(err)
	}
	d, blob := putBlob(t, c, "image")
	writing := filepath.Join(c.Dir, "boot", "0123-456")
	_ = os.MkdirAll(writing, 0o700)

	release, err := c.Hold(filepath.Join(build, "crictl"), blob)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := c.Entries()
	var inUse int
	for _, e := range entries {
		err := c.RemoveEntry(ctx, e)
		var iu *InUseError
		if !errors.As(err, &iu) {
			t.Errorf("%s %s: %v, want in use", e.Kind, e.Name, err)
		}
		inUse++
	}
	if inUse != 3 {
		t.Errorf("%d entries, want the build, the blob and the state being written", inUse)
	}
	release()
	if err := c.Remove(ctx, d); err != nil {
		t.Errorf("released blob: %v", err)
	}
	if err := c.RemoveEntry(ctx, Entry{Kind: EntryBuild, Name: "crictl-1.34.0-abc", Path: build}); err != nil {
		t.Errorf("released build: %v", err)
	}
	if _, err := os.Stat(build); !os.IsNotExist(err) {
		t.Error("the released build is still there")
	}
}

// Hold, then check, then use: a hold on an entry already removed is an
// error (issue 25: it used to succeed), HoldChecked proves the entry
// under the hold, and a corrupt blob a run holds is not removed under it.
func TestHoldThenCheck(t *testing.T) {
	c, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	put := func(content string) (string, func()) {
		d, p := putBlob(t, c, content)
		return p, func() { _ = c.Remove(ctx, d) }
	}
	build := filepath.Join(c.Dir, "builds", "runc-1.3.0-abc")
	_ = os.MkdirAll(build, 0o755)
	_ = os.WriteFile(filepath.Join(build, "runc"), []byte("runc"), 0o755)
	if _, err := SealTree(build); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path func() string
		want any
	}{
		{"whole blob", func() string { p, _ := put("a"); return p }, nil},
		{"whole build", func() string { return filepath.Join(build, "runc") }, nil},
		{"removed before the hold", func() string { p, rm := put("b"); rm(); return p }, new(*GoneError)},
		{"changed before the hold", func() string { p, _ := put("c"); os.Chmod(p, 0o644); os.WriteFile(p, []byte("d"), 0o644); return p }, new(*CorruptError)},
		{"outside the cache", func() string { return "/etc/hostname" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release, err := c.HoldChecked(tc.path())
			defer release()
			switch want := tc.want.(type) {
			case nil:
				if err != nil {
					t.Fatalf("err %v", err)
				}
			case **GoneError:
				if !errors.As(err, want) {
					t.Fatalf("err %v, want gone", err)
				}
			case **CorruptError:
				if !errors.As(err, want) {
					t.Fatalf("err %v, want corrupt", err)
				}
			}
		})
	}
	// A corrupt blob that a run holds stays where it is (the run has it
	// open); once released, verify removes it.
	p, _ := put("held")
	release, err := c.Hold(p)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("HELD"), 0o644)
	d, _ := ParseDigest("sha256:" + filepath.Base(p))
	if _, err := c.VerifyFull(d); !IsCorrupt(err) {
		t.Fatalf("verify: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Error("a held blob was removed under its run")
	}
	release()
	if _, err := c.VerifyFull(d); !IsCorrupt(err) {
		t.Fatalf("verify: %v", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Error("the released corrupt blob is still there")
	}
}

// A kept VM's pin outlives every process: while its environment's
// directory exists, no remover (gc's RemoveEntry, image prune's Remove,
// verify of a corrupt blob) takes what it pins; once the directory is
// gone, the pin lapses.
func TestPinnedEntriesOutliveTheProcess(t *testing.T) {
	c, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	d, blob := putBlob(t, c, "base image")
	owner := filepath.Join(t.TempDir(), "envs", "kept1")
	_ = os.MkdirAll(owner, 0o700)
	if err := c.Pin(owner, blob, "/outside/the/cache"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		remove func() error
	}{
		{"cache gc", func() error { return c.RemoveEntry(ctx, Entry{Kind: EntryBlob, Name: d.String(), Path: blob}) }},
		{"image prune", func() error { return c.Remove(ctx, d) }},
		{"verify of a corrupt blob", func() error {
			os.Chmod(blob, 0o644)
			os.WriteFile(blob, []byte("BASE IMAGE"), 0o644)
			_, err := c.VerifyFull(d)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = tc.remove()
			if _, err := os.Stat(blob); err != nil {
				t.Fatalf("%s removed a pinned blob", tc.name)
			}
		})
	}
	var iu *InUseError
	if err := c.Remove(ctx, d); !errors.As(err, &iu) || !strings.Contains(err.Error(), "kept VM") {
		t.Errorf("remove: %v", err)
	}
	_ = os.RemoveAll(owner)
	if pins := c.Pinned(); len(pins) != 0 {
		t.Errorf("pins of a removed environment: %v", pins)
	}
	if err := c.Remove(ctx, d); err != nil {
		t.Errorf("remove after the pin lapsed: %v", err)
	}
}

// CheckTreeFiles proves only the files a reader uses: damage to another
// file of the tree is not its business, damage to a listed one is.
func TestCheckTreeFiles(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		files  []string
		want   string // "" for intact
	}{
		{"intact", func(*testing.T, string) {}, []string{"disk"}, ""},
		{"another file flipped", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "mem"), 3) }, []string{"disk"}, ""},
		{"the file flipped", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "disk"), 3) }, []string{"disk"}, "disk is corrupt: expected sha256:"},
		{"the file removed", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, "disk")) }, []string{"disk"}, "disk is corrupt: missing"},
		{"a file the seal does not know", func(*testing.T, string) {}, []string{"other"}, "other is corrupt: not in the manifest"},
		{"no manifest", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, ManifestName)) }, []string{"disk"}, "no manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_ = os.WriteFile(filepath.Join(dir, "disk"), []byte(strings.Repeat("d", 4096)), 0o600)
			_ = os.WriteFile(filepath.Join(dir, "mem"), []byte(strings.Repeat("m", 4096)), 0o600)
			if _, err := SealTree(dir); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, dir)
			err := CheckTreeFiles(dir, tt.files...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err %v, want %q", err, tt.want)
			}
		})
	}
}
