package artdisk_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/provision/artdisk"
	"github.com/envctl/envctl/provision/guest"
)

func file(t *testing.T, dir, name, content, remote string) guest.Upload {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return guest.Upload{Local: p, Remote: remote, SHA256: hex.EncodeToString(sum[:])}
}

func TestEnsureBuildsOnceAndHoldsTheFiles(t *testing.T) {
	src := t.TempDir()
	c := newCache(t)
	files := []guest.Upload{
		file(t, src, "crio", "#!crio 1.34.0", "/usr/local/bin/crio"),
		file(t, src, "bridge", "#!bridge", "/opt/cni/bin/bridge"),
		file(t, src, "host-local", "#!host-local", "/opt/cni/bin/host-local"),
	}
	d, err := artdisk.Ensure(context.Background(), c, files)
	if err != nil || !d.Built || d.Size%512 != 0 {
		t.Fatalf("disk %+v %v", d, err)
	}
	f, _ := os.Open(d.Path)
	defer f.Close()
	tr := tar.NewReader(f)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = string(b)
		if h.Mode != 0o755 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: mode %o mtime %v", h.Name, h.Mode, h.ModTime)
		}
	}
	if len(got) != 3 || got["usr/local/bin/crio"] != "#!crio 1.34.0" || got["opt/cni/bin/host-local"] != "#!host-local" {
		t.Errorf("disk holds %v", got)
	}
	// The same files, listed in another order and from other host paths:
	// the same disk, not built again.
	other := t.TempDir()
	again := []guest.Upload{
		file(t, other, "h", "#!host-local", "/opt/cni/bin/host-local"),
		file(t, other, "c", "#!crio 1.34.0", "/usr/local/bin/crio"),
		file(t, other, "b", "#!bridge", "/opt/cni/bin/bridge"),
	}
	d2, err := artdisk.Ensure(context.Background(), c, again)
	if err != nil || d2.Built || d2.Digest != d.Digest {
		t.Errorf("second disk %+v %v", d2, err)
	}
	// A different file: another disk.
	changed := append(again[:2:2], file(t, other, "b2", "#!bridge 2", "/opt/cni/bin/bridge"))
	if d3, _ := artdisk.Ensure(context.Background(), c, changed); d3.Digest == d.Digest || d3.Key == d.Key {
		t.Error("a changed file gave the same disk")
	}
}

func TestEnsureRefusesAFileThatIsNotTheVerifiedOne(t *testing.T) {
	src := t.TempDir()
	c := newCache(t)
	f := file(t, src, "runc", "#!runc", "/usr/local/bin/runc")
	if err := os.WriteFile(f.Local, []byte("#!evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := artdisk.Ensure(context.Background(), c, []guest.Upload{f})
	var changed *guest.ChangedError
	if !errors.As(err, &changed) {
		t.Fatalf("err %v", err)
	}
	if ents, _ := c.Entries(); len(ents) != 0 {
		t.Errorf("a disk with a changed file entered the cache: %v", ents)
	}
}

func TestACorruptDiskIsBuiltAgain(t *testing.T) {
	src := t.TempDir()
	c := newCache(t)
	files := []guest.Upload{file(t, src, "crictl", "#!crictl 1.34.0", "/usr/local/bin/crictl")}
	d, err := artdisk.Ensure(context.Background(), c, files)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(d.Path)
	b[600] ^= 0xff
	if err := os.WriteFile(d.Path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d2, err := artdisk.Ensure(context.Background(), c, files)
	if err != nil || !d2.Built || d2.Digest != d.Digest {
		t.Fatalf("after corruption: %+v %v", d2, err)
	}
	if got, _ := cache.FileDigest(d2.Path, d.Digest.Algorithm()); got != d.Digest {
		t.Error("the rebuilt disk is not the original")
	}
}

func newCache(t *testing.T) *cache.Cache {
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
