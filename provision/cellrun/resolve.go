package cellrun

import (
	"context"
	"errors"
	"time"

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
