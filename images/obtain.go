package images

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/images/ociartifact"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
	"github.com/envctl/envctl/profiles/lock"
)

// Origin says where the image a run used came from.
type Origin string

// The origins.
const (
	// FromCache: the locked image was in the cache.
	FromCache Origin = "cache"
	// FromStore: pulled by its digest from the image store.
	FromStore Origin = "store"
	// FromBuild: built here, reproducing the lock's pin or re-pinning it.
	FromBuild Origin = "build"
	// FromDownload: a catalog image, downloaded and checked.
	FromDownload Origin = "download"
)

// Sources are where Obtain may get a locked image besides the cache.
type Sources struct {
	// Store is the image store: a registry repository holding images by
	// their disk digest ("" for none).
	Store string
	// Mirror is the Debian mirror a rebuild reads ("" for Debian's own).
	Mirror string
	// SnapshotBase is the snapshot archive (default snapshot.debian.org).
	SnapshotBase string
	// Log receives build output; Step progress lines. Both may be nil.
	// Task, when set, takes each image build's output instead of Log
	// (the CLI shows a live line, and the output on failure).
	Log  io.Writer
	Step func(format string, args ...any)
	Task task.Func
}

// build runs one image build as a task.
func (s *Store) buildTask(ctx context.Context, name string, from archive.Source, src Sources, current bool) (Local, error) {
	w, done := task.Begin(src.Task, "image build "+name, src.Log)
	l, err := s.build(ctx, name, from, w, current)
	done(err)
	return l, err
}

func (s Sources) step(format string, args ...any) {
	if s.Step != nil {
		s.Step(format, args...)
	}
}

// Obtained is the image a run uses and how this machine got it.
type Obtained struct {
	Image lock.Image `json:"-"`
	Name  string     `json:"name"`
	// Digest is the disk digest of the image the run used.
	Digest   string `json:"digest"`
	Snapshot string `json:"snapshot,omitempty"`
	From     Origin `json:"from"`
	// Detail says more: the store reference, or what a build read.
	Detail string `json:"detail,omitempty"`
	// Repin is set when the lock's image could not be had and a build
	// here, with other packages, took its place.
	Repin *Repin `json:"repinned,omitempty"`
}

// Repin is a locked image replaced by a new build.
type Repin struct {
	// Was is the lock's pin.
	Was string `json:"was"`
	// Moved lists the packages whose versions moved ("zlib1g A → B").
	Moved []string `json:"moved"`
	// RecipeChanged: this envctl's image recipe is not the lock's.
	RecipeChanged bool `json:"recipe_changed,omitempty"`
	// Tried says why the pinned image could not be had.
	Tried []string `json:"tried"`
}

func obtained(img lock.Image, from Origin, detail string) Obtained {
	return Obtained{Image: img, Name: img.Name, Digest: img.Digest, Snapshot: img.Snapshot, From: from, Detail: detail}
}

// Obtain makes the image a lock pins present and says where it came
// from, in this order: the cache; the image store, by the lock's digest,
// every blob checked against the lock; a build here, from the snapshot
// archive at the lock's archive state when it answers, else from the
// mirror given, else this machine's current build (or a build from
// Debian's own mirrors). A build that reproduces the pin is used as it
// is. One with other packages, or from another recipe, comes back with
// Repin set: the caller re-pins the lock or refuses (--locked). One with
// the same recipe and packages but other digests is a reproducibility bug
// (*NotReproducedError): never re-pinned.
func (s *Store) Obtain(ctx context.Context, want lock.Image, src Sources) (Obtained, error) {
	if src.Store != "" {
		if _, err := ociartifact.ParseRepository(src.Store); err != nil {
			return Obtained{}, err
		}
	}
	if want.Kind == lock.ImageDownload {
		d, err := cache.ParseDigest(want.Digest)
		if err != nil {
			return Obtained{}, fault.Inputf("lock: image %s: %w", want.Name, err)
		}
		from := FromCache
		if _, ok := s.Cache.Has(d); !ok {
			if _, err := s.Cache.Fetch(ctx, want.URL, d); err != nil {
				return Obtained{}, err
			}
			from = FromDownload
		}
		return obtained(want, from, want.URL), nil
	}
	if want.Kind != lock.ImageLocal {
		return Obtained{}, fault.Inputf("lock: image %s: unknown kind %q; run `envctl lock` again", want.Name, want.Kind)
	}
	if err := checkPins(want); err != nil {
		return Obtained{}, err
	}
	if s.cached(want) {
		return obtained(want, FromCache, ""), s.learnState(ctx, want)
	}
	tried := []string{"it is not in the cache"}
	if src.Store == "" {
		tried = append(tried, "no image store is set (image_store in the config, ENVCTL_IMAGE_STORE)")
	} else {
		src.step("pulling image %s %s from the image store %s", want.Name, short(want.Digest), src.Store)
		ref, err := s.PullLocked(ctx, src.Store, want, false)
		var nf *ociartifact.NotFoundError
		var corrupt *ociartifact.CorruptError
		var large *ociartifact.TooLargeError
		switch {
		case err == nil:
			return obtained(want, FromStore, ref), nil
		case errors.As(err, &corrupt), errors.As(err, &large):
			return Obtained{}, err
		case errors.As(err, &nf):
			tried = append(tried, "the image store "+src.Store+" does not have it")
		default:
			tried = append(tried, fmt.Sprintf("the image store %s did not answer (%v)", src.Store, err))
		}
	}
	built, notes, err := s.rebuild(ctx, want, src)
	if err != nil {
		return Obtained{}, err
	}
	tried = append(tried, notes...)
	got := built.Pin()
	if got.Digest == want.Digest && got.Kernel == want.Kernel && got.Initrd == want.Initrd {
		// The same image, whatever archive state this build read: the
		// lock is left as it is, and this cache learns the lock's state.
		// Where the name has no current build, this one becomes it (it
		// never demotes another).
		if _, ok := s.Current(want.Name); !ok {
			if _, err := s.remember(ctx, built, true); err != nil {
				return Obtained{}, err
			}
		}
		return obtained(want, FromBuild, "rebuilt "+strings.TrimPrefix(built.From, "built ")), s.learnState(ctx, want)
	}
	moved := PackageChanges(want.Packages, got.Packages)
	recipeChanged := want.Recipe != "" && want.Recipe != got.Recipe
	if len(moved) == 0 && !recipeChanged {
		return Obtained{}, &NotReproducedError{Name: want.Name, Want: want, Got: got, From: built.From}
	}
	o := obtained(got, FromBuild, built.From)
	o.Repin = &Repin{Was: want.Digest, Moved: moved, RecipeChanged: recipeChanged, Tried: tried}
	return o, nil
}

// checkPins refuses a local image pin whose digests are not digests.
func checkPins(img lock.Image) error {
	for field, d := range map[string]string{"digest": img.Digest, "kernel": img.Kernel, "initrd": img.Initrd} {
		if d == "" && field != "digest" {
			continue
		}
		if _, err := cache.ParseDigest(d); err != nil {
			return fault.Inputf("lock: image.%s: %v; run `envctl lock` again", field, err)
		}
	}
	return nil
}

// cached reports whether every file of a local image is in the cache.
func (s *Store) cached(img lock.Image) bool {
	for _, d := range []string{img.Digest, img.Kernel, img.Initrd} {
		if d == "" {
			continue
		}
		pd, err := cache.ParseDigest(d)
		if err != nil {
			return false
		}
		if _, ok := s.Cache.Has(pd); !ok {
			return false
		}
	}
	return true
}

// snapshotProbe bounds the search of the snapshot archive.
const snapshotProbe = 2 * time.Minute

// rebuild builds the image a lock pins as faithfully as this machine can,
// and says what it tried first.
func (s *Store) rebuild(ctx context.Context, want lock.Image, src Sources) (Local, []string, error) {
	suite, err := s.Suite(want.Name)
	if err != nil {
		return Local{}, nil, err
	}
	var notes []string
	if want.Snapshot != "" {
		base := cmp.Or(src.SnapshotBase, archive.DefaultSnapshotBase)
		pctx, cancel := context.WithTimeout(ctx, snapshotProbe)
		snap, err := archive.FindSnapshot(pctx, base, want.Snapshot, suite)
		cancel()
		if err == nil {
			src.step("building image %s from the %s (the lock's archive state)", want.Name, snap)
			l, err := s.buildTask(ctx, want.Name, snap, src, false)
			return l, notes, err
		}
		notes = append(notes, fmt.Sprintf("the snapshot archive could not serve its state %s (%v)", want.Snapshot, err))
	} else {
		notes = append(notes, "the lock records no archive snapshot")
	}
	if src.Mirror != "" {
		m, err := archive.MirrorSource(ctx, src.Mirror, suite)
		if err != nil {
			return Local{}, notes, fault.Inputf("image %s: %v", want.Name, err)
		}
		src.step("building image %s from the %s", want.Name, m)
		l, err := s.buildTask(ctx, want.Name, m, src, false)
		return l, notes, err
	}
	if cur, ok := s.Current(want.Name); ok {
		return cur, notes, nil
	}
	src.step("building image %s from %s (takes a few minutes)", want.Name, archive.LiveSource(suite))
	l, err := s.buildTask(ctx, want.Name, archive.LiveSource(suite), src, true)
	return l, notes, err
}

// NotReproducedError is a build from the same recipe and the same
// packages as a lock's pin that gave other digests: a bug in the recipe,
// never a reason to re-pin.
type NotReproducedError struct {
	Name      string
	Want, Got lock.Image
	From      string
}

func (e *NotReproducedError) Error() string {
	return fmt.Sprintf("image %s: a build here (%s) from the same recipe %s and the same %d packages gave disk %s, kernel %s, initrd %s, where the lock pins %s, %s, %s: the image build did not reproduce, which is a bug in envctl's recipe; the lock was not changed: please report it with both sets of digests",
		e.Name, e.From, short(e.Want.Recipe), len(e.Want.Packages), e.Got.Digest, e.Got.Kernel, e.Got.Initrd, e.Want.Digest, e.Want.Kernel, e.Want.Initrd)
}

// FaultClass implements fault.Classed: the stack could not be had as
// locked, through no fault of the input.
func (e *NotReproducedError) FaultClass() fault.Class { return fault.Infra }

// MovedError is a locked image that cannot be had here, where re-pinning
// is not allowed (--locked).
type MovedError struct {
	Lock string
	Obtained
}

func (e *MovedError) Error() string {
	r := e.Repin
	var why []string
	if r.RecipeChanged {
		why = append(why, "this envctl's image recipe is not the lock's")
	}
	if len(r.Moved) > 0 {
		why = append(why, fmt.Sprintf("packages moved: %s", MovedList(r.Moved, 12)))
	}
	return fmt.Sprintf("%s: image %s: the lock pins %s, and %s; a build here (%s) differs: %s; get the pinned image with `envctl image pull` (from an image store that has it: image_store, ENVCTL_IMAGE_STORE) or `envctl image import FILE` (made by `envctl image export`), or re-pin it with `envctl lock` (or `envctl up` without --locked)",
		e.Lock, e.Name, r.Was, strings.Join(r.Tried, ", "), e.Detail, strings.Join(why, "; "))
}

// FaultClass implements fault.Classed: the lock cannot be honoured as
// written, which only a new input (an image, or a re-pin) can change.
func (e *MovedError) FaultClass() fault.Class { return fault.Input }

// MovedList prints at most n package moves, and how many more there are.
func MovedList(moved []string, n int) string {
	if len(moved) <= n {
		return strings.Join(moved, ", ")
	}
	return strings.Join(moved[:n], ", ") + fmt.Sprintf(" (and %d more)", len(moved)-n)
}

func short(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// ResolveOrBuild is Resolve for a new lock: the name's current local
// build, or its catalog download; an image that has a build recipe but no
// local build yet is built first (from the mirror given, else Debian's
// own), as `up` on a fresh machine needs.
func (s *Store) ResolveOrBuild(ctx context.Context, name string, src Sources) (lock.Image, error) {
	if _, err := s.Locals(); err != nil {
		return lock.Image{}, err
	}
	if _, ok := s.Current(name); ok {
		return s.Resolve(name)
	}
	if _, buildable := s.Catalog.Builds[name]; !buildable {
		return s.Resolve(name)
	}
	suite, err := s.Suite(name)
	if err != nil {
		return lock.Image{}, err
	}
	from := archive.LiveSource(suite)
	if src.Mirror != "" {
		if from, err = archive.MirrorSource(ctx, src.Mirror, suite); err != nil {
			return lock.Image{}, fault.Inputf("image %s: %v", name, err)
		}
	}
	src.step("building image %s from %s: this machine has no current build of it (takes a few minutes)", name, from)
	l, err := s.buildTask(ctx, name, from, src, true)
	if err != nil {
		return lock.Image{}, err
	}
	return l.Pin(), nil
}

// Describe says, without fetching or building anything, where Obtain
// would get a locked image from on this machine, and when the lock would
// be re-pinned: for a dry run (`envctl plan`).
func (s *Store) Describe(want lock.Image, src Sources) string {
	if want.Kind == lock.ImageDownload {
		if d, err := cache.ParseDigest(want.Digest); err == nil {
			if _, ok := s.Cache.Has(d); ok {
				return "in the cache (by digest)"
			}
		}
		return "downloaded from " + want.URL + ", checked against the lock's digest"
	}
	if s.cached(want) {
		return "in the cache (by digest)"
	}
	build := "built here from Debian's snapshot archive at the lock's archive state " + want.Snapshot +
		" (else the mirror); if packages moved since the lock, the lock is re-pinned to that build and says which (--locked refuses instead)"
	if src.Store != "" {
		return "pulled by digest from the image store " + src.Store + "; if it lacks it, " + build
	}
	return "not in the cache and no image store is set: " + build
}
