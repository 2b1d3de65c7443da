package cellrun

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
)

// LockMode says what Resolve may do about a missing lock.
type LockMode int

// The lock modes.
const (
	// LockOnFirstUse writes a missing lock, as `terraform init` and cargo do.
	LockOnFirstUse LockMode = iota
	// Locked refuses a missing or stale lock: the CI mode (--locked).
	Locked
)

// Locker makes a lock for a profile (provision/pin's Resolver.Lock).
type Locker func(ctx context.Context, p *profiles.Profile) (*lock.File, error)

// Resolution is a profile resolved to locked cells.
type Resolution struct {
	File  *lock.File
	Cells []lock.LockedCell
	// Wrote is set when Resolve wrote the lock file.
	Wrote bool
	Took  time.Duration
	// Image is the image the cells use and where it came from, once
	// ObtainImage has run.
	Image *images.Obtained
	// Adopt, when set, runs before a re-pinned lock is written: a
	// profile the binary carries is copied to a file the user owns first
	// (profiles.Loader.Adopt), and Adopted says where.
	Adopt   func(*profiles.Profile) (string, error)
	Adopted string
	names   []string
}

// ImageObtainer makes the image a lock pins present: images.Store's
// Obtain with this machine's sources (cache, image store, build).
type ImageObtainer func(ctx context.Context, want lock.Image) (images.Obtained, error)

// ObtainImage makes the lock's image present before anything else runs.
// When the pinned image cannot be had and a build here with other
// packages takes its place, the lock is re-pinned to that build and
// written, as a missing lock is written on first use (the caller says so
// with RepinNotice), and the cells are resolved again; with Locked, it is
// refused instead (*images.MovedError, exit 2), naming the packages that
// moved and the ways to get the pinned image.
func (res *Resolution) ObtainImage(ctx context.Context, p *profiles.Profile, mode LockMode, obtain ImageObtainer) error {
	ob, err := obtain(ctx, res.File.Image)
	if err != nil {
		return err
	}
	res.Image = &ob
	if ob.Repin == nil {
		return nil
	}
	if mode == Locked {
		return &images.MovedError{Lock: p.LockPath(), Obtained: ob}
	}
	res.File.Image = ob.Image
	if res.Adopt != nil {
		if res.Adopted, err = res.Adopt(p); err != nil {
			return err
		}
	}
	if err := lock.Write(p.LockPath(), res.File); err != nil {
		return err
	}
	res.Cells = res.Cells[:0]
	for _, n := range res.names {
		c, err := res.File.Cell(p, n)
		if err != nil {
			return err
		}
		res.Cells = append(res.Cells, c)
	}
	return nil
}

// RepinNotice is the block that says a lock's image was re-pinned: the
// packages that moved, that the runtime stack is unchanged, and that the
// lock needs a review and a commit.
func (res *Resolution) RepinNotice(lockPath string) []string {
	if res.Image == nil || res.Image.Repin == nil {
		return nil
	}
	ob, r := res.Image, res.Image.Repin
	out := []string{fmt.Sprintf("the lock's image %s %s cannot be had here: %s", ob.Name, r.Was, strings.Join(r.Tried, "; "))}
	if r.RecipeChanged {
		out = append(out, "this envctl's image recipe is not the one the lock was made with")
	}
	if len(r.Moved) > 0 {
		out = append(out, fmt.Sprintf("%s moved since the lock was written:", plural(len(r.Moved), "package")))
		for _, m := range r.Moved {
			out = append(out, "  "+m)
		}
	}
	out = append(out,
		fmt.Sprintf("re-pinned image %s to %s (%s, archive state %s)", ob.Name, ob.Digest, ob.Detail, ob.Snapshot),
		"the runtime stack is unchanged: "+res.stack(),
		"lock updated: review and commit it ("+lockPath+")")
	if res.Adopted != "" {
		out = append(out, "the built-in profile was copied there first ("+res.Adopted+"): it is yours now, and it wins over the built-in one")
	}
	return out
}

// stack lists every locked component and tool with its pin.
func (res *Resolution) stack() string {
	var parts []string
	for _, a := range res.File.Artifacts {
		parts = append(parts, a.Component+" "+a.Version+" ("+a.Pin()+")")
	}
	return strings.Join(parts, ", ")
}

// Resolve loads the profile's lock, or writes one on first use, and
// returns the named cells (every cell when names is empty). A stale lock
// is always refused, naming the field that changed.
func Resolve(ctx context.Context, p *profiles.Profile, arch string, mode LockMode, makeLock Locker, names ...string) (*Resolution, error) {
	start := time.Now()
	res := &Resolution{}
	f, err := lock.ForProfile(p, arch)
	var missing *lock.MissingError
	switch {
	case errors.As(err, &missing) && mode == LockOnFirstUse:
		if f, err = makeLock(ctx, p); err != nil {
			return nil, err
		}
		if err := lock.Write(p.LockPath(), f); err != nil {
			return nil, err
		}
		res.Wrote = true
	case err != nil:
		return nil, err
	}
	res.File = f
	if len(names) == 0 {
		names = f.CellNames()
	}
	res.names = names
	for _, n := range names {
		c, err := f.Cell(p, n)
		if err != nil {
			return nil, err
		}
		res.Cells = append(res.Cells, c)
	}
	res.Took = time.Since(start)
	return res, nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
