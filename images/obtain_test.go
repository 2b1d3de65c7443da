package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/images/ociartifact"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// fakeDebian stands in for mmdebstrap and Debian's archives: what a build
// installs depends only on where its packages come from (the source's
// first line), and its disk only on those packages, unless unstable is
// set (a recipe that does not reproduce).
type fakeDebian struct {
	states   map[string]map[string]string // first source line's URL → packages
	dates    map[string]string            // … → its Release date
	unstable bool
	builds   int
}

func (f *fakeDebian) key(src archive.Source) string {
	if len(src.Lines) == 0 {
		return "live"
	}
	fields := strings.Fields(src.Lines[0])
	for _, x := range fields {
		if strings.Contains(x, "://") {
			return x
		}
	}
	return src.Lines[0]
}

func (f *fakeDebian) run(_ context.Context, _ *catalog.ImageRecipe, src archive.Source, _, out string, _ io.Writer) error {
	f.builds++
	k := f.key(src)
	pkgs, ok := f.states[k]
	if !ok {
		return fmt.Errorf("fake archive %s unknown", k)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var list strings.Builder
	for _, n := range slices.Sorted(maps.Keys(pkgs)) {
		fmt.Fprintf(&list, "%s %s\n", n, pkgs[n])
	}
	disk := "disk\n" + list.String()
	if f.unstable {
		disk += fmt.Sprintf("build %d\n", f.builds)
	}
	files := map[string]string{"disk.raw": disk, "vmlinuz": "kernel", "initrd.img": "initrd", "packages.txt": list.String(),
		"archive.txt": "x_dists_bookworm_InRelease " + f.dates[k] + "\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(out, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var (
	oldPkgs = map[string]string{"bash": "5.2.15-2+b13", "zlib1g": "1:1.2.13.dfsg-1"}
	newPkgs = map[string]string{"bash": "5.2.15-2+b13", "zlib1g": "1:1.2.13.dfsg-1+deb12u1"}
)

const (
	oldDate = "Sat, 08 Nov 2026 10:00:00 UTC"
	newDate = "Thu, 04 Dec 2026 08:16:51 UTC"
)

// snapshotArchive is a file:// copy of the snapshot archive holding the
// old state, as the fake's source key for it.
func snapshotArchive(t *testing.T) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "debian", "20261108T120000Z", "dists", "bookworm")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "Release"), []byte("Date: "+oldDate+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newFake(snapshotDir string) *fakeDebian {
	snap := "copy://" + snapshotDir + "/debian/20261108T120000Z"
	return &fakeDebian{
		states: map[string]map[string]string{"http://deb.debian.org/debian": newPkgs, snap: oldPkgs},
		dates:  map[string]string{"http://deb.debian.org/debian": newDate, snap: oldDate},
	}
}

// lockedStore builds the old state in a store of its own and returns the
// pin a lock made there would hold.
func lockedStore(t *testing.T, snapshotDir string) (*Store, lock.Image) {
	t.Helper()
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c)
	s.RunRecipe = newFake(snapshotDir).run
	src, err := archive.FindSnapshot(context.Background(), "file://"+snapshotDir, "20261108T100000Z", "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Build(context.Background(), "debian-12", src, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if l.Snapshot != "20261108T100000Z" || l.Packages["zlib1g"] != "1:1.2.13.dfsg-1" {
		t.Fatalf("old build %+v", l)
	}
	return s, l.Pin()
}

func emptyStore(t *testing.T, fake *fakeDebian) *Store {
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c)
	s.RunRecipe = fake.run
	return s
}

func testRegistry(t *testing.T) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host + "/envctl/images"
}

// Obtain gets the locked image from the cache, the image store or a
// build, in that order, and re-pins only when a build here gives other
// packages.
func TestObtain(t *testing.T) {
	ctx := context.Background()
	snapDir := snapshotArchive(t)
	origin, want := lockedStore(t, snapDir)
	store := testRegistry(t)
	meters := &recordedMeters{}
	if _, err := origin.Push(task.WithMeters(ctx, meters.start), store, want); err != nil {
		t.Fatal(err)
	}
	// The push said how many bytes went, up to its total.
	if len(meters.all) == 0 || !strings.HasPrefix(meters.all[0].what, "push ") || meters.all[0].total == 0 || meters.all[0].done != meters.all[0].total || !meters.all[0].ended {
		t.Errorf("push meters: %+v", meters.all)
	}
	unreachable := "http://127.0.0.1:1/archive"

	tests := []struct {
		name    string
		store   string
		snap    string // snapshot archive base
		mirror  string
		setup   func(s *Store, f *fakeDebian)
		from    Origin
		repin   []string // packages moved
		errType any
		builds  int
	}{
		{name: "from the image store", store: store, snap: unreachable, from: FromStore},
		{name: "rebuilt from the snapshot archive at the lock's state", snap: "file://" + snapDir, from: FromBuild, builds: 1},
		{name: "the store lacks it: rebuilt from the snapshot", store: testRegistry(t), snap: "file://" + snapDir, from: FromBuild, builds: 1},
		{name: "no snapshot: a live build with moved packages re-pins", snap: unreachable, from: FromBuild, builds: 1,
			repin: []string{"zlib1g 1:1.2.13.dfsg-1 → 1:1.2.13.dfsg-1+deb12u1"}},
		{name: "this machine's current build is the rebuild", snap: unreachable, from: FromBuild, builds: 0,
			setup: func(s *Store, _ *fakeDebian) {
				if _, err := s.Build(ctx, "debian-12", archive.LiveSource("bookworm"), io.Discard); err != nil {
					t.Fatal(err)
				}
			}, repin: []string{"zlib1g 1:1.2.13.dfsg-1 → 1:1.2.13.dfsg-1+deb12u1"}},
		{name: "a mirror with the old packages reproduces it", snap: unreachable, mirror: "file://" + snapDir + "/debian/20261108T120000Z", from: FromBuild, builds: 1},
		{name: "same packages, other digest: not reproduced", snap: "file://" + snapDir, builds: 1,
			setup: func(_ *Store, f *fakeDebian) { f.unstable = true }, errType: new(*NotReproducedError)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFake(snapDir)
			s := emptyStore(t, fake)
			if tt.setup != nil {
				tt.setup(s, fake)
				fake.builds = 0
			}
			src := Sources{Store: tt.store, SnapshotBase: tt.snap, Mirror: tt.mirror}
			// The dry run says where it will come from before it does.
			if d := s.Describe(want, src); !strings.Contains(d, "re-pinned") || tt.store != "" && !strings.Contains(d, tt.store) {
				t.Errorf("describe before: %q", d)
			}
			ob, err := s.Obtain(ctx, want, src)
			if tt.errType != nil {
				if err == nil || !errors.As(err, tt.errType) || !fault.Is(err, fault.Infra) {
					t.Fatalf("err %v, want %T (infrastructure)", err, tt.errType)
				}
				if _, ok := s.Current("debian-12"); ok {
					t.Error("a build that did not reproduce became the current build")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ob.From != tt.from || fake.builds != tt.builds {
				t.Errorf("from %s with %d builds, want %s with %d", ob.From, fake.builds, tt.from, tt.builds)
			}
			if tt.repin == nil {
				if ob.Repin != nil || ob.Digest != want.Digest || !s.cached(want) {
					t.Errorf("obtained %+v, want the lock's own image in the cache", ob)
				}
				if d := s.Describe(want, src); d != "in the cache (by digest)" {
					t.Errorf("describe after: %q", d)
				}
				f, err := s.Ensure(ctx, want)
				if err != nil || !f.FastSeed || f.Packages["zlib1g"] != "1:1.2.13.dfsg-1" {
					t.Errorf("ensure after obtain: %+v %v", f, err)
				}
				return
			}
			if ob.Repin == nil || !slices.Equal(ob.Repin.Moved, tt.repin) || ob.Repin.Was != want.Digest || ob.Digest == want.Digest {
				t.Fatalf("repin %+v, want moved %v", ob.Repin, tt.repin)
			}
			if ob.Image.Snapshot != "20261204T081651Z" || ob.Image.Packages["zlib1g"] != "1:1.2.13.dfsg-1+deb12u1" {
				t.Errorf("the new pin %+v", ob.Image)
			}
			if !strings.Contains(strings.Join(ob.Repin.Tried, "; "), "not in the cache") {
				t.Errorf("tried %v", ob.Repin.Tried)
			}
		})
	}
}

// A blob changed in the image store is refused (an infrastructure
// error), and nothing of it enters the cache.
func TestObtainRefusesAChangedStoreBlob(t *testing.T) {
	ctx := context.Background()
	snapDir := snapshotArchive(t)
	origin, want := lockedStore(t, snapDir)
	blobs := &flipping{BlobHandler: registry.NewDiskBlobHandler(t.TempDir())}
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(blobs), registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	store := u.Host + "/envctl/images"
	if _, err := origin.Push(ctx, store, want); err != nil {
		t.Fatal(err)
	}
	blobs.on = true
	fake := newFake(snapDir)
	s := emptyStore(t, fake)
	_, err := s.Obtain(ctx, want, Sources{Store: store, SnapshotBase: "file://" + snapDir})
	var corrupt *ociartifact.CorruptError
	if !errors.As(err, &corrupt) || !fault.Is(err, fault.Infra) {
		t.Fatalf("err %v, want a corrupt artifact", err)
	}
	if fake.builds != 0 || s.cached(want) {
		t.Error("a corrupt store blob was followed by a build, or entered the cache")
	}
	if blobs, _ := s.Cache.List(); len(blobs) != 0 {
		t.Errorf("the cache holds %d blobs", len(blobs))
	}
}

// Export on one machine, import on another: the pinned image is there,
// with its description, and a lock's Obtain takes it from the cache.
func TestExportImport(t *testing.T) {
	meters := &recordedMeters{}
	ctx := task.WithMeters(context.Background(), meters.start)
	snapDir := snapshotArchive(t)
	origin, want := lockedStore(t, snapDir)
	tarball := filepath.Join(t.TempDir(), "images.tar")
	if err := origin.Export(ctx, tarball, []lock.Image{want}); err != nil {
		t.Fatal(err)
	}
	fake := newFake(snapDir)
	s := emptyStore(t, fake)
	ls, err := s.Import(ctx, tarball)
	if err != nil || len(ls) != 1 || ls[0].Disk != want.Digest || ls[0].Snapshot != want.Snapshot || !strings.HasPrefix(ls[0].From, "imported from ") {
		t.Fatalf("import %+v %v", ls, err)
	}
	ob, err := s.Obtain(ctx, want, Sources{SnapshotBase: "http://127.0.0.1:1/archive"})
	if err != nil || ob.From != FromCache || fake.builds != 0 {
		t.Errorf("obtain after import: %+v %v (%d builds)", ob, err, fake.builds)
	}
	// Export and import said how many bytes went, up to the total.
	if names := meters.names(); len(names) != 2 || !strings.HasPrefix(names[0], "export ") || !strings.HasSuffix(names[1], "images.tar") {
		t.Fatalf("meters %v, want export and import", names)
	}
	for _, m := range []*recordedMeter{meters.all[0], meters.all[1]} {
		if m.done == 0 || m.done != m.total || !m.ended {
			t.Errorf("meter %+v: not done to its total", m)
		}
	}
	// The imported build is its name's current one: a new lock pins it.
	if cur, err := s.Resolve("debian-12"); err != nil || cur.Digest != want.Digest || cur.Snapshot != want.Snapshot {
		t.Errorf("resolve after import: %+v %v", cur, err)
	}
}

// A fresh machine's first lock builds the image it has none of.
func TestResolveOrBuild(t *testing.T) {
	fake := newFake(snapshotArchive(t))
	s := emptyStore(t, fake)
	img, err := s.ResolveOrBuild(context.Background(), "debian-12", Sources{})
	if err != nil || fake.builds != 1 || img.Snapshot != "20261204T081651Z" || img.Packages["zlib1g"] != newPkgs["zlib1g"] {
		t.Fatalf("%+v %v (%d builds)", img, err, fake.builds)
	}
	if again, err := s.ResolveOrBuild(context.Background(), "debian-12", Sources{}); err != nil || again.Digest != img.Digest || fake.builds != 1 {
		t.Errorf("a second resolve built again: %v", err)
	}
	if _, err := s.ResolveOrBuild(context.Background(), "plan9", Sources{}); !fault.Is(err, fault.Input) {
		t.Errorf("unknown image: %v", err)
	}
}

// flipping serves every blob with one byte changed once on is set.
type flipping struct {
	registry.BlobHandler
	on bool
}

func (b *flipping) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	rc, err := b.BlobHandler.Get(ctx, repo, h)
	if err != nil || !b.on {
		return rc, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil || len(data) == 0 {
		return nil, fmt.Errorf("read: %v", err)
	}
	data[len(data)-1] ^= 1
	return io.NopCloser(strings.NewReader(string(data))), nil
}

func (b *flipping) Stat(ctx context.Context, repo string, h v1.Hash) (int64, error) {
	return b.BlobHandler.(registry.BlobStatHandler).Stat(ctx, repo, h)
}

func (b *flipping) Put(ctx context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	return b.BlobHandler.(registry.BlobPutHandler).Put(ctx, repo, h, rc)
}

// TestSecondDay: Debian re-dates its Release files every day, whether or
// not a package changed. A build on a later day from the same packages is
// the lock's image: Obtain takes it without a re-pin, the lock's archive
// state stands, and this cache learns it (the earliest state known to
// give that disk), so a lock made here later records the same state.
func TestSecondDay(t *testing.T) {
	ctx := context.Background()
	snapDir := snapshotArchive(t)
	_, want := lockedStore(t, snapDir) // day one: oldPkgs, read at oldDate
	fake := newFake(snapDir)
	// Day two: the live mirror has the very same packages, dated later.
	fake.states["http://deb.debian.org/debian"] = oldPkgs
	s := emptyStore(t, fake)
	ob, err := s.Obtain(ctx, want, Sources{SnapshotBase: "http://127.0.0.1:1/archive"})
	if err != nil {
		t.Fatal(err)
	}
	if ob.Repin != nil || ob.From != FromBuild || ob.Digest != want.Digest || ob.Snapshot != want.Snapshot || fake.builds != 1 {
		t.Fatalf("a second day's build: %+v (%d builds), want the lock's image and state %s", ob, fake.builds, want.Snapshot)
	}
	cur, ok := s.Current("debian-12")
	if !ok || cur.Snapshot != want.Snapshot {
		t.Errorf("the current build records archive state %q, want the earliest known %q", cur.Snapshot, want.Snapshot)
	}
	if img, err := s.Resolve("debian-12"); err != nil || !img.SameContent(want) || img.Snapshot != want.Snapshot {
		t.Errorf("a new lock here would pin %+v (%v)", img, err)
	}
	// From the cache now: nothing built, nothing changed.
	if ob, err := s.Obtain(ctx, want, Sources{}); err != nil || ob.From != FromCache || ob.Snapshot != want.Snapshot || fake.builds != 1 {
		t.Errorf("second obtain: %+v %v", ob, err)
	}
}

// TestRememberKeepsTheEarliestState: builds of one disk on several days,
// in any order, record the earliest archive state that gave it.
func TestRememberKeepsTheEarliestState(t *testing.T) {
	for _, order := range [][]string{{oldDate, newDate}, {newDate, oldDate}} {
		fake := newFake(snapshotArchive(t))
		fake.states["http://deb.debian.org/debian"] = oldPkgs
		s := emptyStore(t, fake)
		var last Local
		for _, date := range order {
			fake.dates["http://deb.debian.org/debian"] = date
			l, err := s.Build(context.Background(), "debian-12", archive.LiveSource("bookworm"), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			last = l
		}
		if last.Snapshot != "20261108T100000Z" {
			t.Errorf("built on %v: the build records %s, want the earliest 20261108T100000Z", order, last.Snapshot)
		}
		if cur, _ := s.Current("debian-12"); cur.Snapshot != last.Snapshot {
			t.Errorf("the registry records %s", cur.Snapshot)
		}
	}
}

// recordedMeters keeps what transfers reported (task.MeterFunc).
type recordedMeters struct {
	mu  sync.Mutex
	all []*recordedMeter
}

type recordedMeter struct {
	what        string
	done, total int64
	ended       bool
}

func (r *recordedMeters) start(what string) task.Meter {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := &recordedMeter{what: what}
	r.all = append(r.all, m)
	return meterOf{r, m}
}

func (r *recordedMeters) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.all {
		out = append(out, m.what)
	}
	return out
}

type meterOf struct {
	r *recordedMeters
	m *recordedMeter
}

func (x meterOf) Set(done, total int64) {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.m.done, x.m.total = done, total
}

func (x meterOf) Done(error) {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.m.ended = true
}
