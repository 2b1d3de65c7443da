package ociartifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/envctl/envctl/profiles/base/fault"
)

// testImage writes a small image: a sparse disk with data at both ends,
// a kernel and an initrd.
func testImage(t *testing.T) (Meta, []File) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, fill func(f *os.File)) File {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		fill(f)
		f.Close()
		b, _ := os.ReadFile(p)
		s := sha256.Sum256(b)
		return File{Role: Role(name), Path: p, Digest: "sha256:" + hex.EncodeToString(s[:])}
	}
	files := []File{
		write("disk", func(f *os.File) {
			f.WriteString("ext4 superblock")
			f.Truncate(8 << 20)
			f.WriteAt([]byte("last block"), 8<<20-10)
		}),
		write("kernel", func(f *os.File) { f.WriteString(strings.Repeat("vmlinuz", 1000)) }),
		write("initrd", func(f *os.File) { f.WriteString(strings.Repeat("initramfs", 1000)) }),
	}
	return Meta{Name: "debian-12", Format: "raw", Recipe: strings.Repeat("ab", 32), Snapshot: "20261204T081651Z", FastSeed: true,
		Packages: map[string]string{"zlib1g": "1:1.2.13.dfsg-1+deb12u1"}}, files
}

// packed is testImage packed into an artifact, staged in work.
func packed(t *testing.T) (img v1.Image, files []File, work string) {
	t.Helper()
	meta, files := testImage(t)
	work = t.TempDir()
	img, err := Pack(context.Background(), meta, files, work)
	if err != nil {
		t.Fatal(err)
	}
	return img, files, work
}

func pins(files []File) map[Role]string {
	out := map[Role]string{}
	for _, f := range files {
		out[f.Role] = f.Digest
	}
	return out
}

func checkUnpacked(t *testing.T, u Unpacked, files []File) {
	t.Helper()
	for _, f := range files {
		want, _ := os.ReadFile(f.Path)
		got, err := os.ReadFile(u.Paths[f.Role])
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: unpacked content differs (%v)", f.Role, err)
		}
	}
	if u.Meta.Snapshot != "20261204T081651Z" || u.Meta.Packages["zlib1g"] != "1:1.2.13.dfsg-1+deb12u1" || !u.Meta.FastSeed {
		t.Errorf("meta %+v", u.Meta)
	}
}

// A pushed artifact pulls back byte for byte, found by the tag its disk
// digest gives; blobs changed in the registry are refused.
func TestRegistryRoundTrip(t *testing.T) {
	blobs := &tampering{BlobHandler: registry.NewDiskBlobHandler(t.TempDir())}
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(blobs), registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	repo, err := ParseRepository(u.Host + "/envctl/images")
	if err != nil {
		t.Fatal(err)
	}
	meta, files := testImage(t)
	ctx := context.Background()
	img, err := Pack(ctx, meta, files, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := Push(ctx, repo, img, Tag(files[0].Digest), "debian-12")
	if err != nil || !strings.Contains(pushed, "@sha256:") {
		t.Fatalf("push: %q %v", pushed, err)
	}
	got, err := Pull(ctx, repo.Tag(Tag(files[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	un, err := Unpack(ctx, got, t.TempDir(), "store", pins(files))
	if err != nil {
		t.Fatal(err)
	}
	checkUnpacked(t, un, files)
	if fi, _ := os.Stat(un.Paths[Disk]); fi.Size() != 8<<20 {
		t.Errorf("disk size %d", fi.Size())
	}

	// Another image's pins: refused before any blob is read.
	other := pins(files)
	other[Disk] = "sha256:" + strings.Repeat("0", 64)
	if _, err := Unpack(ctx, got, t.TempDir(), "store", other); !isCorrupt(err) || !strings.Contains(err.Error(), "the lock pins sha256:000") {
		t.Errorf("other pins: %v", err)
	}
	// A missing tag is a NotFoundError.
	var nf *NotFoundError
	if _, err := Pull(ctx, repo.Tag("sha256-"+strings.Repeat("1", 64))); !errors.As(err, &nf) {
		t.Errorf("missing tag: %v", err)
	}

	// The registry now serves the kernel blob with one byte changed.
	m, _ := got.Manifest()
	blobs.flip = m.Layers[1].Digest
	again, err := Pull(ctx, repo.Tag(Tag(files[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = Unpack(ctx, again, dir, "store", pins(files))
	if !isCorrupt(err) || !fault.Is(err, fault.Infra) {
		t.Fatalf("changed blob: %v, want a corrupt-artifact infrastructure error", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "kernel")); serr == nil {
		t.Error("the changed kernel was left behind")
	}
}

func isCorrupt(err error) bool {
	var c *CorruptError
	return errors.As(err, &c)
}

// Export writes an OCI image layout tarball that import reads back; a
// changed blob, an entry outside the layout and a file that is not a
// layout are refused.
func TestLayoutRoundTrip(t *testing.T) {
	img, files, work := packed(t)
	ctx := context.Background()
	tarball := filepath.Join(t.TempDir(), "images.tar")
	if err := WriteLayout(ctx, tarball, []Tagged{{Tag: Tag(files[0].Digest), Image: img}}, work); err != nil {
		t.Fatal(err)
	}
	imgs, dir, err := ReadLayout(ctx, tarball, work)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Tag != Tag(files[0].Digest) {
		t.Fatalf("read %d images, tag %q", len(imgs), imgs[0].Tag)
	}
	un, err := Unpack(ctx, imgs[0].Image, t.TempDir(), tarball, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkUnpacked(t, un, files)

	// A changed blob inside the layout.
	m, _ := imgs[0].Image.Manifest()
	blob := filepath.Join(dir, "blobs", "sha256", m.Layers[2].Digest.Hex)
	b, _ := os.ReadFile(blob)
	b[len(b)-5] ^= 1
	_ = os.WriteFile(blob, b, 0o644)
	if _, err := Unpack(ctx, imgs[0].Image, t.TempDir(), tarball, nil); !isCorrupt(err) {
		t.Errorf("changed layout blob: %v", err)
	}
	os.RemoveAll(dir)

	for _, tc := range []struct {
		name  string
		write func(tw *tar.Writer)
		want  string
	}{
		{"escape", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "../evil", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
			tw.Write([]byte("x"))
		}, "points outside the layout"},
		{"symlink", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "index.json", Linkname: "/etc/shadow", Typeflag: tar.TypeSymlink})
		}, "not a plain file or directory"},
		{"no layout", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
			tw.Write([]byte("hi"))
		}, "not an OCI image layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.tar")
			f, _ := os.Create(p)
			tw := tar.NewWriter(f)
			tc.write(tw)
			tw.Close()
			f.Close()
			_, _, err := ReadLayout(ctx, p, work)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !fault.Is(err, fault.Input) {
				t.Errorf("err %v, want an input error with %q", err, tc.want)
			}
		})
	}
}

func TestPackRefusesADamagedFile(t *testing.T) {
	meta, files := testImage(t)
	os.WriteFile(files[1].Path, []byte("not the kernel"), 0o644)
	_, err := Pack(context.Background(), meta, files, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the cached file is damaged") {
		t.Errorf("err %v", err)
	}
}

func TestParseRepository(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"127.0.0.1:5000/envctl/images", true},
		{"ghcr.io/org/envctl-images", true},
		{"ghcr.io/org/envctl-images@sha256:" + strings.Repeat("a", 64), false},
		{"UPPER/case", false},
		{"", false},
		{"localhost:5000/x", true},
		{"https://ghcr.io/org/x", true},
		{"http://127.0.0.1:5000/envctl/images", true},
		{"envctl/images", false}, // would be index.docker.io/envctl/images
		{"myorg/x", false},
		{"images", false},
		{"ftp://h/x", false},
		{"ghcr.io", false},
	} {
		_, err := ParseRepository(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.in, err)
		}
		if err != nil && !strings.Contains(err.Error(), "HOST[:PORT]/PATH") {
			t.Errorf("%q: unhelpful error %v", tc.in, err)
		}
	}
}

// tampering serves one blob with a byte changed, as a registry whose
// storage was changed after the push would.
type tampering struct {
	registry.BlobHandler
	flip v1.Hash
}

func (b *tampering) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	rc, err := b.BlobHandler.Get(ctx, repo, h)
	if err != nil || h != b.flip {
		return rc, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	data[len(data)/2] ^= 0xff
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Stat and Put pass through to the disk handler.
func (b *tampering) Stat(ctx context.Context, repo string, h v1.Hash) (int64, error) {
	return b.BlobHandler.(registry.BlobStatHandler).Stat(ctx, repo, h)
}

func (b *tampering) Put(ctx context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	return b.BlobHandler.(registry.BlobPutHandler).Put(ctx, repo, h, rc)
}
