package images

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/scripts"
)

// Local is an image built on this machine and stored in the cache.
type Local struct {
	Name     string            `json:"name"`
	Disk     string            `json:"disk"`   // digest of the raw root filesystem
	Kernel   string            `json:"kernel"` // digest of vmlinuz (direct boot)
	Initrd   string            `json:"initrd"` // digest of the initramfs
	Format   string            `json:"format"`
	Built    time.Time         `json:"built"`
	Packages map[string]string `json:"packages,omitempty"`
	// FastSeed says the image carries the envctl-seed unit, so it can boot
	// with cloud-init=disabled and still take keys from the seed.
	FastSeed bool `json:"fast_seed"`
	// Recipe is the hash of the scripts the image was built with.
	Recipe string `json:"recipe,omitempty"`
	// Snapshot is the Debian archive state the packages came from, as a
	// snapshot timestamp (the newest Release date the build read).
	Snapshot string `json:"snapshot,omitempty"`
	// From says where this machine got the image: the archive it was
	// built from, or the store or file it was pulled or imported from.
	From string `json:"from,omitempty"`
}

// Pin is the build as a lock pins it.
func (l Local) Pin() lock.Image {
	return lock.Image{Name: l.Name, Kind: lock.ImageLocal, Digest: l.Disk, Format: l.Format, Kernel: l.Kernel, Initrd: l.Initrd,
		Recipe: l.Recipe, Snapshot: l.Snapshot, Packages: l.Packages}
}

// recipeHash is the hash of an image's current build recipe: envctl's
// scripts and the recipe's arguments.
func (s *Store) recipeHash(name string) string {
	r, ok := s.Catalog.Builds[name]
	if !ok || r == nil {
		return "no recipe"
	}
	return scripts.RecipeHash(append([]string{r.Script}, r.Args...)...)
}

// stale reports whether a local build was made from another recipe than
// this envctl carries.
func (s *Store) stale(l Local) bool { return l.Recipe != s.recipeHash(l.Name) }

// Files are the on-disk files a VM boots from.
type Files struct {
	Disk, Format, Kernel, Initrd string
	FastSeed                     bool
	Packages                     map[string]string
}

// Store is the local image registry inside a cache.
type Store struct {
	Cache   *cache.Cache
	Catalog *catalog.ImageCatalog
	// RunRecipe builds an image; nil runs the recipe's script (RunScript).
	RunRecipe RecipeRunner
}

// NewStore opens the image store of a cache with the embedded catalog.
func NewStore(c *cache.Cache) *Store { return &Store{Cache: c, Catalog: catalog.Images()} }

func (s *Store) registryPath() string { return filepath.Join(s.Cache.Dir, "images", "local.json") }

// knownPath is the record of every build this cache has had, made here,
// pulled or imported, by disk digest: a lock may pin one that is no
// longer its name's current build.
func (s *Store) knownPath() string { return filepath.Join(s.Cache.Dir, "images", "known.json") }

// Locals reads the registry of local builds: each name's current build.
func (s *Store) Locals() (map[string]Local, error) { return readRegistry(s.registryPath()) }

func readRegistry(path string) (map[string]Local, error) {
	out := map[string]Local{}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, fault.Infraf("image registry %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fault.Infraf("image registry %s is corrupt (%v); delete it and run `envctl image build` again", path, err)
	}
	return out, nil
}

func (s *Store) saveLocal(ctx context.Context, mutate func(map[string]Local)) error {
	return s.saveRegistry(ctx, s.registryPath(), mutate)
}

// remember records a build in the known builds, by its disk digest, and,
// when current is set, as its name's current build. A build of a disk
// this cache already knows keeps the earliest archive state known to
// give it (lock.EarliestState): the same image read on a later day is
// the same image. It returns the build as recorded.
func (s *Store) remember(ctx context.Context, l Local, current bool) (Local, error) {
	err := s.saveRegistry(ctx, s.knownPath(), func(m map[string]Local) {
		if prev, ok := m[l.Disk]; ok {
			l.Snapshot = lock.EarliestState(prev.Snapshot, l.Snapshot)
		}
		m[l.Disk] = l
	})
	if err != nil || !current {
		return l, err
	}
	return l, s.saveLocal(ctx, func(m map[string]Local) { m[l.Name] = l })
}

// learnState records that the archive state a lock pins gives the disk it
// pins, when that is earlier than what this cache knew: the lock's image
// was just found here with the same content (cached, or built again).
func (s *Store) learnState(ctx context.Context, img lock.Image) error {
	if img.Snapshot == "" {
		return nil
	}
	earlier := func(l Local) bool {
		return l.Disk == img.Digest && lock.EarliestState(l.Snapshot, img.Snapshot) != l.Snapshot
	}
	locals, err := s.Locals()
	if err != nil {
		return err
	}
	known, err := readRegistry(s.knownPath())
	if err != nil {
		return err
	}
	cur, isCurrent := locals[img.Name]
	k, isKnown := known[img.Digest]
	if learns := isKnown && earlier(k) || isCurrent && earlier(cur); !learns {
		return nil
	}
	update := func(key string) func(map[string]Local) {
		return func(m map[string]Local) {
			if l, ok := m[key]; ok && earlier(l) {
				l.Snapshot = img.Snapshot
				m[key] = l
			}
		}
	}
	if err := s.saveRegistry(ctx, s.knownPath(), update(img.Digest)); err != nil {
		return err
	}
	return s.saveLocal(ctx, update(img.Name))
}

func (s *Store) saveRegistry(ctx context.Context, path string, mutate func(map[string]Local)) error {
	unlock, err := s.Cache.Lock(ctx, "image-registry")
	if err != nil {
		return err
	}
	defer unlock()
	all, err := readRegistry(path)
	if err != nil {
		return err
	}
	mutate(all)
	b, _ := json.MarshalIndent(all, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fault.Infraf("image registry: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return fault.Infraf("image registry %s: %w", path, err)
	}
	return nil
}

// Resolve picks the image a name stands for: a local build of that name
// when one exists, else the catalog's pinned download.
func (s *Store) Resolve(name string) (lock.Image, error) {
	locals, err := s.Locals()
	if err != nil {
		return lock.Image{}, err
	}
	if l, ok := locals[name]; ok {
		return l.Pin(), nil
	}
	if r, ok := s.Catalog.Images[name]; ok {
		return lock.Image{Name: name, Kind: lock.ImageDownload, URL: r.URL, Digest: r.Digest, Format: r.Format}, nil
	}
	if _, ok := s.Catalog.Builds[name]; ok {
		return lock.Image{}, fault.Inputf("image %q has no download and no local build yet; run `envctl image build %s`", name, name)
	}
	return lock.Image{}, fault.Inputf("unknown image %q; known: %s (see `envctl image ls`)", name, strings.Join(s.Catalog.Names(), ", "))
}

// Ensure makes the image's files present in the cache, downloading a
// download-kind image when needed, and returns their paths.
func (s *Store) Ensure(ctx context.Context, ref lock.Image) (Files, error) {
	d, err := cache.ParseDigest(ref.Digest)
	if err != nil {
		return Files{}, fault.Inputf("lock: image %s: %w", ref.Name, err)
	}
	switch ref.Kind {
	case lock.ImageDownload:
		p, err := s.Cache.Fetch(ctx, ref.URL, d)
		if err != nil {
			return Files{}, err
		}
		return Files{Disk: p, Format: ref.Format}, nil
	case lock.ImageLocal:
		f := Files{Format: ref.Format}
		for _, part := range []struct {
			digest string
			dst    *string
		}{{ref.Digest, &f.Disk}, {ref.Kernel, &f.Kernel}, {ref.Initrd, &f.Initrd}} {
			if part.digest == "" {
				continue
			}
			pd, err := cache.ParseDigest(part.digest)
			if err != nil {
				return Files{}, fault.Inputf("lock: image %s: %w", ref.Name, err)
			}
			p, ok := s.Cache.Has(pd)
			if !ok {
				return Files{}, s.notBuilt(ref, part.digest)
			}
			*part.dst = p
		}
		if l, ok := s.local(ref); ok {
			f.FastSeed, f.Packages = l.FastSeed, l.Packages
		}
		return f, nil
	}
	return Files{}, fault.Inputf("lock: image %s: unknown kind %q; run `envctl lock` again", ref.Name, ref.Kind)
}

// notBuilt explains why a locked local image is not on this machine: no
// build yet, or a build from another recipe or other packages (named).
func (s *Store) notBuilt(ref lock.Image, digest string) error {
	locals, _ := s.Locals()
	l, ok := locals[ref.Name]
	if !ok {
		return fault.Inputf("image %s: the lock pins the local build %s, and this machine has none; run `envctl image build %s` (a reproducible build from the same recipe and packages gives the same digest)", ref.Name, digest, ref.Name)
	}
	var why []string
	if ref.Recipe != "" && l.Recipe != ref.Recipe {
		why = append(why, "the build recipe differs (this envctl's scripts are not the ones the lock was made with)")
	}
	if d := PackageChanges(ref.Packages, l.Packages); len(d) > 0 {
		why = append(why, "packages differ: "+strings.Join(d, ", "))
	}
	if len(why) == 0 {
		why = append(why, "the recipe and packages match, so the build did not reproduce: please report this")
	}
	return fault.Inputf("image %s: the lock pins %s, this machine's build is %s: %s; rebuild with `envctl image build %s`, or take this build into the locks with `envctl image build %s --update`", ref.Name, digest, l.Disk, strings.Join(why, "; "), ref.Name, ref.Name)
}

// PackageChanges lists the packages whose versions differ between two
// package sets ("systemd 252.36-1 → 252.38-1", "vim (none) → 9.0").
func PackageChanges(was, now map[string]string) []string {
	names := slices.Collect(maps.Keys(was))
	for n := range now {
		if _, ok := was[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []string
	for _, n := range names {
		a, b := was[n], now[n]
		if a == b {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s → %s", n, cmp.Or(a, "(none)"), cmp.Or(b, "(none)")))
	}
	return out
}

// local finds the build a lock pins, among the current builds and every
// build this cache has had.
func (s *Store) local(ref lock.Image) (Local, bool) {
	locals, err := s.Locals()
	if err != nil {
		return Local{}, false
	}
	for _, l := range locals {
		if l.Disk == ref.Digest {
			return l, true
		}
	}
	known, err := readRegistry(s.knownPath())
	if err != nil {
		return Local{}, false
	}
	l, ok := known[ref.Digest]
	return l, ok
}

// Packages returns the package manifest (name → Debian version) of a
// locked local image, or nil when unknown.
func (s *Store) Packages(ref lock.Image) map[string]string {
	l, _ := s.local(ref)
	return l.Packages
}

// RemoveLocal forgets a local build (its blobs go with `envctl image prune`).
func (s *Store) RemoveLocal(ctx context.Context, name string) error {
	locals, err := s.Locals()
	if err != nil {
		return err
	}
	if _, ok := locals[name]; !ok {
		names := make([]string, 0, len(locals))
		for n := range locals {
			names = append(names, n)
		}
		slices.Sort(names)
		return fault.Inputf("image %q has no local build to remove; local builds: %s", name, strings.Join(names, ", "))
	}
	return s.saveLocal(ctx, func(m map[string]Local) { delete(m, name) })
}

// InUse lists the blob digests local builds reference.
func (s *Store) InUse() map[string]bool {
	used := map[string]bool{}
	locals, _ := s.Locals()
	for _, l := range locals {
		used[l.Disk], used[l.Kernel], used[l.Initrd] = true, true, true
	}
	return used
}

// Current reports whether a usable, current local build of name exists:
// registered, built by this envctl's scripts, and with its disk cached.
func (s *Store) Current(name string) (Local, bool) {
	locals, err := s.Locals()
	if err != nil {
		return Local{}, false
	}
	l, ok := locals[name]
	if !ok || s.stale(l) {
		return Local{}, false
	}
	d, err := cache.ParseDigest(l.Disk)
	if err != nil {
		return Local{}, false
	}
	_, ok = s.Cache.Has(d)
	return l, ok
}

// Pruned is what Prune removed.
type Pruned struct {
	Removed []string `json:"removed"`
	Freed   int64    `json:"freed_bytes"`
	// InUse are blobs a running envctl holds: kept.
	InUse []string `json:"in_use,omitempty"`
}

// Prune deletes cached blobs that no local build references and keep
// does not name (digest strings: what locks reference).
func (s *Store) Prune(ctx context.Context, keep map[string]bool) (Pruned, error) {
	var out Pruned
	used := s.InUse()
	for d := range keep {
		used[d] = true
	}
	blobs, err := s.Cache.List()
	if err != nil {
		return out, err
	}
	for _, b := range blobs {
		if used[b.Digest.String()] {
			continue
		}
		if err := s.Cache.Remove(ctx, b.Digest); err != nil {
			var inUse *cache.InUseError
			if errors.As(err, &inUse) {
				out.InUse = append(out.InUse, b.Digest.String())
				continue
			}
			return out, err
		}
		out.Freed += b.Size
		out.Removed = append(out.Removed, b.Digest.String())
	}
	return out, nil
}

// Listing is one row of `envctl image ls`.
type Listing struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Digest string `json:"digest"`
	Cached bool   `json:"cached"`
	// Current marks the build a new lock of the name pins.
	Current bool   `json:"current,omitempty"`
	Source  string `json:"source"`
}

// List describes every local build and catalog download, and whether its
// disk is cached.
func (s *Store) List() ([]Listing, error) {
	locals, err := s.Locals()
	if err != nil {
		return nil, err
	}
	known, err := readRegistry(s.knownPath())
	if err != nil {
		return nil, err
	}
	var rows []Listing
	cached := func(d string) bool {
		pd, err := cache.ParseDigest(d)
		if err != nil {
			return false
		}
		_, ok := s.Cache.Has(pd)
		return ok
	}
	describe := func(l Local) string {
		src := cmp.Or(l.From, "built") + ", " + l.Built.Format(time.RFC3339)
		if l.Snapshot != "" {
			src += ", archive state " + l.Snapshot
		}
		return src
	}
	for _, n := range slices.Sorted(maps.Keys(locals)) {
		l := locals[n]
		src := describe(l)
		if s.stale(l) {
			src += " (stale: rebuild with `envctl image build " + n + "`)"
		}
		rows = append(rows, Listing{Name: n, Kind: string(lock.ImageLocal), Digest: l.Disk, Cached: cached(l.Disk), Current: true, Source: src})
	}
	// Other builds this cache holds: older builds, and images pulled or
	// imported for a lock, which a lock may still pin by digest.
	for _, d := range slices.Sorted(maps.Keys(known)) {
		l := known[d]
		if cur, ok := locals[l.Name]; (ok && cur.Disk == d) || !cached(d) {
			continue
		}
		rows = append(rows, Listing{Name: l.Name, Kind: string(lock.ImageLocal), Digest: d, Cached: true, Source: describe(l)})
	}
	for _, n := range slices.Sorted(maps.Keys(s.Catalog.Images)) {
		im := s.Catalog.Images[n]
		rows = append(rows, Listing{Name: n, Kind: string(lock.ImageDownload), Digest: im.Digest, Cached: cached(im.Digest), Source: im.URL})
	}
	return rows, nil
}

// Pull downloads a catalog image into the cache, verifying its digest.
func (s *Store) Pull(ctx context.Context, name string) (string, error) {
	im, ok := s.Catalog.Images[name]
	if !ok {
		return "", fault.Inputf("image %q has no download in the catalog; `envctl image ls` lists them", name)
	}
	d, err := cache.ParseDigest(im.Digest)
	if err != nil {
		return "", fault.Infraf("image catalog: %s: %w", name, err)
	}
	return s.Cache.Fetch(ctx, im.URL, d)
}

// WriteListings prints `envctl image ls` for humans.
func WriteListings(w io.Writer, rows []Listing) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tCURRENT\tCACHED\tDIGEST\tSOURCE")
	for _, r := range rows {
		d := r.Digest
		if len(d) > 19 {
			d = d[:19]
		}
		cur := "-"
		if r.Kind == string(lock.ImageLocal) {
			cur = fmt.Sprint(r.Current)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", r.Name, r.Kind, cur, r.Cached, d, r.Source)
	}
	_ = tw.Flush()
}
