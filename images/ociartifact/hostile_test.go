package ociartifact

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/envctl/envctl/profiles/base/fault"
)

// rawHeader is a ustar header block made by hand: Go's tar writer will
// not write the PAX records of a sparse file.
func rawHeader(name string, size int64, flag byte) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = flag
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	var sum int
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// sparseTar is a PAX 1.0 sparse entry named name that declares realSize
// bytes and holds ten.
func sparseTar(name string, realSize int64) []byte {
	var recs string
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", name}, {"GNU.sparse.realsize", fmt.Sprint(realSize)}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n = len(fmt.Sprint(n)) + len(rec)
		}
		recs += fmt.Sprint(n) + rec
	}
	sparseMap := pad([]byte("1\n0\n10\n"))
	data := append(sparseMap, []byte("0123456789")...)
	var out []byte
	out = append(out, rawHeader("PaxHeaders/x", int64(len(recs)), tar.TypeXHeader)...)
	out = append(out, pad([]byte(recs))...)
	out = append(out, rawHeader("GNUSparseFile.0/x", int64(len(data)), tar.TypeReg)...)
	out = append(out, pad(data)...)
	return append(out, make([]byte, 1024)...)
}

func writeTar(t *testing.T, entries func(tw *tar.Writer)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	entries(tw)
	tw.Close()
	f.Close()
	return p
}

// Import is bounded by the tarball itself: a sparse entry, a count past
// MaxLayoutEntries, an oversized index and a manifest or description that
// declares more than envctl reads are refused with one line, and nothing
// is left in the work directory.
func TestImportBounds(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		make func(t *testing.T) string
		want string
	}{
		{"sparse 2 GiB blob", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "bomb.tar")
			os.WriteFile(p, sparseTar("blobs/sha256/"+strings.Repeat("a", 64), 2<<30), 0o644)
			return p
		}, "sparse"},
		{"sparse 1 GiB index", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "bomb.tar")
			os.WriteFile(p, sparseTar("index.json", 1<<30), 0o644)
			return p
		}, "sparse"},
		{"entry count", func(t *testing.T) string {
			return writeTar(t, func(tw *tar.Writer) {
				for i := 0; i <= MaxLayoutEntries; i++ {
					tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", i), Mode: 0o755, Typeflag: tar.TypeDir})
				}
			})
		}, "entry count is larger than 4096"},
		{"large index", func(t *testing.T) string {
			return writeTar(t, func(tw *tar.Writer) {
				tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: MaxIndexBytes + 1, Typeflag: tar.TypeReg})
				tw.Write(bytes.Repeat([]byte(" "), MaxIndexBytes+1))
			})
		}, "more than envctl reads"},
		{"manifest declares 1 TiB", func(t *testing.T) string {
			return layoutWith(t, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 1 << 40, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}}, nil)
		}, "declares 1099511627776 bytes"},
		{"description declares 1 TiB", func(t *testing.T) string {
			m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
				Config: v1.Descriptor{MediaType: ConfigMediaType, Size: 1 << 40, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("c", 64)}}}
			raw, _ := json.Marshal(m)
			h, n, _ := v1.SHA256(bytes.NewReader(raw))
			return layoutWith(t, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: n, Digest: h}, map[v1.Hash][]byte{h: raw})
		}, "image description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.make(t)
			work := t.TempDir()
			_, _, err := ReadLayout(ctx, p, work)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line with %q", err, tc.want)
			}
			if c := fault.ClassOf(err); c != fault.Input && c != fault.Infra {
				t.Errorf("class %v", c)
			}
			if left, _ := os.ReadDir(work); len(left) != 0 {
				t.Errorf("left in work: %v", left)
			}
		})
	}
}

// layoutWith is a layout tarball whose index lists desc, with blobs.
func layoutWith(t *testing.T, desc v1.Descriptor, blobs map[v1.Hash][]byte) string {
	idx, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
	return writeTar(t, func(tw *tar.Writer) {
		file := func(name string, b []byte) {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
		file("index.json", idx)
		for h, b := range blobs {
			file("blobs/sha256/"+h.Hex, b)
		}
	})
}

// handMade is an artifact with a manifest and description made by hand,
// as a hostile registry would serve.
func handMade(t *testing.T, meta Meta, layers map[Role][]byte, edit func(m *v1.Manifest)) v1.Image {
	t.Helper()
	a := &artifact{layers: map[v1.Hash]*fileLayer{}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	dir := t.TempDir()
	for _, role := range Roles {
		b, ok := layers[role]
		if !ok {
			continue
		}
		h, n, _ := v1.SHA256(bytes.NewReader(b))
		p := filepath.Join(dir, string(role))
		os.WriteFile(p, b, 0o644)
		a.layers[h] = &fileLayer{path: p, digest: h, size: n, mediaType: role.MediaType()}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: role.MediaType(), Size: n, Digest: h,
			Annotations: map[string]string{AnnotationContent: meta.Files[role]}})
	}
	a.config, _ = json.Marshal(meta)
	h, n, _ := v1.SHA256(bytes.NewReader(a.config))
	m.Config = v1.Descriptor{MediaType: ConfigMediaType, Size: n, Digest: h}
	if edit != nil {
		edit(&m)
	}
	a.manifest, _ = json.Marshal(m)
	img, err := partial.CompressedToImage(a)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func zstdOf(t *testing.T, n int64) []byte {
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	io.CopyN(enc, zeroReader{}, n)
	enc.Close()
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A registry's blobs are bounded before they are read: a decompression
// bomb stops at the declared size, a layer or a description declared as
// 1 TiB is refused before any byte is fetched. Served by a real registry
// on loopback.
func TestPullBounds(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	repo, _ := ParseRepository(u.Host + "/envctl/images")
	ctx := context.Background()
	const declared = 1 << 20
	bomb := zstdOf(t, 256<<20) // 256 MiB of zeros in about 10 KB
	zeros := "sha256:" + strings.Repeat("d", 64)
	meta := Meta{Name: "debian-12", Format: "raw", Files: map[Role]string{Disk: zeros}, Sizes: map[Role]int64{Disk: declared}}
	for _, tc := range []struct {
		name string
		img  v1.Image
		max  func() // shortens MaxContent for a description without sizes
		want string
	}{
		{"decompression bomb", handMade(t, meta, map[Role][]byte{Disk: bomb}, nil), nil, "larger than 1048576 bytes"},
		{"bomb without declared sizes", handMade(t, Meta{Name: "debian-12", Format: "raw", Files: meta.Files}, map[Role][]byte{Disk: bomb}, nil),
			func() { MaxContent[Disk] = 2 << 20 }, "larger than 2097152 bytes"},
		{"layer declared 1 TiB", handMade(t, meta, map[Role][]byte{Disk: bomb}, func(m *v1.Manifest) { m.Layers[0].Size = 1 << 40 }), nil, "declared 1099511627776 bytes"},
		{"description declared 1 TiB", handMade(t, meta, map[Role][]byte{Disk: bomb}, func(m *v1.Manifest) { m.Config.Size = 1 << 40 }), nil, "the image description (declared 1099511627776 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.max != nil {
				old := MaxContent[Disk]
				tc.max()
				defer func() { MaxContent[Disk] = old }()
			}
			ref := repo.Tag(strings.ReplaceAll(tc.name, " ", "-"))
			if err := remote.Write(ref, tc.img); err != nil {
				t.Fatal(err)
			}
			got, err := Pull(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			_, err = Unpack(ctx, got, dir, "store", nil)
			var large *TooLargeError
			if !errors.As(err, &large) || !strings.Contains(err.Error(), tc.want) || !fault.Is(err, fault.Infra) {
				t.Fatalf("err %v, want a too-large infrastructure error with %q", err, tc.want)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left: %v", left)
			}
		})
	}
}

// An image description from outside gets a lock's field rules: every
// value reproduced in issue 25 is refused before any layer is read.
func TestDescriptionRules(t *testing.T) {
	disk := "sha256:" + strings.Repeat("e", 64)
	good := func() Meta {
		return Meta{Name: "debian-12", Format: "raw", Recipe: strings.Repeat("ab", 32), Snapshot: "20261204T081651Z",
			Packages: map[string]string{"bash": "5.2.15-2+b7"}, Files: map[Role]string{Disk: disk}, Sizes: map[Role]int64{Disk: 1 << 30}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good description refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(m *Meta)
		want string
	}{
		{"snapshot", func(m *Meta) { m.Snapshot = "../../not-a-stamp" }, "snapshot"},
		{"format", func(m *Meta) { m.Format = "qcow2" }, "raw disk"},
		{"recipe", func(m *Meta) { m.Recipe = "$(id)" }, "recipe"},
		{"package", func(m *Meta) { m.Packages["../../etc/passwd"] = "1" }, "packages"},
		{"name", func(m *Meta) { m.Name = "../x" }, "name"},
		{"kernel only", func(m *Meta) { m.Files = map[Role]string{Kernel: disk} }, "no disk"},
		{"bad digest", func(m *Meta) { m.Files[Kernel] = "md5:x" }, "kernel"},
		{"unknown role", func(m *Meta) { m.Files["rootfs"] = disk }, "not a role"},
		{"size too large", func(m *Meta) { m.Sizes[Disk] = 1 << 40 }, "sizes.disk"},
		{"size of no file", func(m *Meta) { m.Sizes[Initrd] = 1 }, "sizes.initrd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.edit(&m)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			// Unpack refuses it as corrupt, before any layer is read.
			_, err = Unpack(context.Background(), handMade(t, m, nil, nil), t.TempDir(), "x.tar", nil)
			if !isCorrupt(err) || !strings.Contains(err.Error(), "not valid") {
				t.Errorf("unpack: %v", err)
			}
		})
	}
}

// A registry that accepts the connection and never answers ends a pull
// within the header timeout, and within the caller's deadline.
func TestSilentRegistry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	old := timeouts
	defer func() { timeouts = old }()
	ref, _ := ParseReference(ln.Addr().String() + "/envctl/images:x")
	for _, tc := range []struct {
		name     string
		timeouts Timeouts
		ctx      time.Duration
	}{
		{"header timeout", Timeouts{Dial: time.Second, TLS: time.Second, Header: 300 * time.Millisecond, Idle: 300 * time.Millisecond}, time.Minute},
		{"caller's deadline", DefaultTimeouts, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeouts = tc.timeouts
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			start := time.Now()
			_, err := Pull(ctx, ref)
			if err == nil || !fault.Is(err, fault.Infra) {
				t.Fatalf("err %v", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

// Export never writes through a name another user could have planted:
// a symlink at the old fixed temporary name is left alone.
func TestExportIgnoresPlantedSymlink(t *testing.T) {
	img, files, work := packed(t)
	ctx := context.Background()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	out := filepath.Join(dir, "out.tar")
	if err := os.Symlink(victim, out+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(ctx, out, []Tagged{{Tag: Tag(files[0].Digest), Image: img}}, work); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("victim overwritten: %d bytes", len(b))
	}
	if fi, err := os.Lstat(out); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("out: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("directory holds %d entries, want victim, out.tar and the planted link", len(ents))
	}
}

// FuzzReadLayout feeds import tarballs generated over the layout's names
// (and raw bytes): nothing panics, every refusal is one classed line, and
// nothing is left in the work directory.
func FuzzReadLayout(f *testing.F) {
	f.Add([]byte(`{"imageLayoutVersion":"1.0.0"}`), []byte(`{"schemaVersion":2,"manifests":[]}`), "blobs/sha256/aa", uint8(0), int64(10))
	f.Add([]byte("x"), []byte("{}"), "../escape", uint8(tar.TypeSymlink), int64(1<<40))
	f.Add([]byte{}, []byte(`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":3,"digest":"sha256:`+strings.Repeat("a", 64)+`"}]}`), "index.json", uint8(tar.TypeReg), int64(3))
	f.Fuzz(func(t *testing.T, layoutFile, index []byte, name string, flag uint8, size int64) {
		p := filepath.Join(t.TempDir(), "in.tar")
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		file := func(n string, b []byte) {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		file("oci-layout", layoutFile)
		file("index.json", index)
		if size >= 0 && size < 1<<16 {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: flag})
			tw.Write(bytes.Repeat([]byte{'a'}, int(size)))
		}
		tw.Close()
		raw := buf.Bytes()
		if flag%7 == 0 { // also raw, possibly torn, bytes
			raw = append(sparseTar(name, size), raw[:len(raw)/2]...)
		}
		os.WriteFile(p, raw, 0o644)
		work := t.TempDir()
		imgs, dir, err := ReadLayout(context.Background(), p, work)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || fault.ClassOf(err) == fault.Unclassified {
				t.Fatalf("refusal not one classed line: %v", err)
			}
			if left, _ := os.ReadDir(work); len(left) != 0 {
				t.Fatalf("left in work: %v", left)
			}
			return
		}
		for _, im := range imgs {
			_, _ = Unpack(context.Background(), im.Image, t.TempDir(), p, nil)
		}
		os.RemoveAll(dir)
	})
}

// FuzzDescription decodes image descriptions: Validate never panics, and
// a description it accepts has a raw disk and only well-formed fields.
func FuzzDescription(f *testing.F) {
	f.Add([]byte(`{"name":"debian-12","format":"raw","files":{"disk":"sha256:` + strings.Repeat("a", 64) + `"},"sizes":{"disk":10}}`))
	f.Add([]byte(`{"name":"../x","format":"qcow2","recipe":"$(id)","files":{"kernel":""}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var m Meta
		if json.Unmarshal(raw, &m) != nil {
			return
		}
		if m.Validate() != nil {
			return
		}
		if m.Format != "raw" || m.Files[Disk] == "" || strings.Contains(m.Name, "/") {
			t.Fatalf("accepted %+v", m)
		}
		for role, n := range m.Sizes {
			if n < 0 || n > MaxContent[role] {
				t.Fatalf("accepted size %s=%d", role, n)
			}
		}
	})
}
