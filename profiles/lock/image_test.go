package lock

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEarliestState(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{"", "", ""},
		{"20261203T021527Z", "", "20261203T021527Z"},
		{"", "20261203T021527Z", "20261203T021527Z"},
		{"20261203T021527Z", "20261204T035428Z", "20261203T021527Z"},
		{"20261204T035428Z", "20261203T021527Z", "20261203T021527Z"},
		{"20261203T021527Z", "20261203T021527Z", "20261203T021527Z"},
	} {
		if got := EarliestState(c.a, c.b); got != c.want {
			t.Errorf("EarliestState(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func pinned(snapshot string) Image {
	return Image{Name: "debian-12", Kind: ImageLocal, Digest: "sha256:" + strings.Repeat("a", 64), Format: "raw",
		Kernel: "sha256:" + strings.Repeat("b", 64), Initrd: "sha256:" + strings.Repeat("c", 64), Recipe: strings.Repeat("d", 64),
		Snapshot: snapshot, Packages: map[string]string{"bash": "5.2.15-2+b13", "zlib1g": "1:1.2.13.dfsg-1"}}
}

// TestSameContent: only the digests, format and packages decide whether
// two pins are the same image; the archive state and recipe do not.
func TestSameContent(t *testing.T) {
	base := pinned("20261203T021527Z")
	for _, c := range []struct {
		name   string
		change func(*Image)
		same   bool
	}{
		{"identical", func(*Image) {}, true},
		{"a later archive state", func(i *Image) { i.Snapshot = "20261206T080000Z" }, true},
		{"no archive state", func(i *Image) { i.Snapshot = "" }, true},
		{"another recipe", func(i *Image) { i.Recipe = strings.Repeat("e", 64) }, true},
		{"another disk", func(i *Image) { i.Digest = "sha256:" + strings.Repeat("f", 64) }, false},
		{"another kernel", func(i *Image) { i.Kernel = "sha256:" + strings.Repeat("f", 64) }, false},
		{"another initrd", func(i *Image) { i.Initrd = "sha256:" + strings.Repeat("f", 64) }, false},
		{"a moved package", func(i *Image) {
			i.Packages = map[string]string{"bash": "5.2.15-2+b13", "zlib1g": "1:1.2.13.dfsg-1+deb12u1"}
		}, false},
		{"another name", func(i *Image) { i.Name = "debian-13" }, false},
	} {
		other := pinned(base.Snapshot)
		c.change(&other)
		if got := base.SameContent(other); got != c.same {
			t.Errorf("%s: SameContent = %v, want %v", c.name, got, c.same)
		}
		merged := other.WithStateOf(base)
		switch {
		case c.same && merged.Snapshot != base.Snapshot:
			t.Errorf("%s: WithStateOf kept %q, want the earlier %q", c.name, merged.Snapshot, base.Snapshot)
		case !c.same && merged.Snapshot != other.Snapshot:
			t.Errorf("%s: WithStateOf took %q from another image", c.name, merged.Snapshot)
		}
	}
}

// TestUpdateOnASecondDay: a lock made again on a later day, for the same
// image read at a later archive state, is left as it is; one for another
// image is written, with that image's state.
func TestUpdateOnASecondDay(t *testing.T) {
	dir := t.TempDir()
	p := load(t, dir, profileYAML)
	first := sample(p)
	first.Image = pinned("20261203T021527Z")
	first.Generated = time.Date(2026, 12, 3, 2, 20, 0, 0, time.UTC)
	path := p.LockPath()
	if changed, err := Update(path, first); err != nil || !changed {
		t.Fatalf("first Update: changed %v, %v", changed, err)
	}
	written, _ := os.ReadFile(path)
	stat, _ := os.Stat(path)

	again := sample(p)
	again.Image = pinned("20261206T081651Z")
	again.Generated = time.Date(2026, 12, 6, 8, 20, 0, 0, time.UTC)
	changed, err := Update(path, again)
	if err != nil || changed {
		t.Fatalf("a second day's lock of the same image: changed %v, %v", changed, err)
	}
	if again.Image.Snapshot != "20261203T021527Z" || !again.Generated.Equal(first.Generated) {
		t.Errorf("the unchanged lock in memory: snapshot %s, generated %s", again.Image.Snapshot, again.Generated)
	}
	now, _ := os.ReadFile(path)
	stat2, _ := os.Stat(path)
	if string(now) != string(written) || !stat2.ModTime().Equal(stat.ModTime()) {
		t.Error("Update rewrote a lock that pins the same image")
	}

	moved := sample(p)
	moved.Image = pinned("20261206T081651Z")
	moved.Image.Digest = "sha256:" + strings.Repeat("f", 64)
	moved.Image.Packages = map[string]string{"bash": "5.2.15-2+b13", "zlib1g": "1:1.2.13.dfsg-1+deb12u1"}
	if changed, err := Update(path, moved); err != nil || !changed {
		t.Fatalf("a lock of another image: changed %v, %v", changed, err)
	}
	got, err := Read(path)
	if err != nil || got.Image.Digest != moved.Image.Digest || got.Image.Snapshot != "20261206T081651Z" {
		t.Errorf("the re-pinned lock: %+v, %v", got, err)
	}

	// Not a lock at all: replaced.
	garbled := filepath.Join(dir, "garbled.lock")
	_ = os.WriteFile(garbled, []byte("not: [a lock"), 0o644)
	if changed, err := Update(garbled, first); err != nil || !changed {
		t.Errorf("a garbled lock: changed %v, %v", changed, err)
	}
}

// TestDiffMarksProvenance: two locks that differ only in the archive
// state their image was read at pin the same environment.
func TestDiffMarksProvenance(t *testing.T) {
	p := load(t, t.TempDir(), profileYAML)
	a, b := sample(p), sample(p)
	a.Image, b.Image = pinned("20261203T021527Z"), pinned("20261206T081651Z")
	diffs := Diff(a, b)
	if len(diffs) != 1 || !diffs[0].Provenance || diffs[0].Field != "snapshot" {
		t.Fatalf("diffs %+v", diffs)
	}
	if c := Content(diffs); len(c) != 0 {
		t.Errorf("content differences %+v", c)
	}
	var out strings.Builder
	WriteDiff(&out, "A", "B", diffs)
	if !strings.Contains(out.String(), "snapshot (provenance)") || !strings.Contains(out.String(), "only provenance differs") {
		t.Errorf("WriteDiff:\n%s", out.String())
	}
	b.Image.Packages = map[string]string{"bash": "5.2.15-2+b13"}
	if c := Content(Diff(a, b)); len(c) != 1 || c[0].Field != "package zlib1g" {
		t.Errorf("a package change: %+v", c)
	}
}
