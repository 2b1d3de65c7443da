package env

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/base/fault"
)

// Leases. A kept environment normally outlives its envctl until `envctl
// down`. One kept only for the work of a longer-lived process (the probe
// of `envctl bisect run`, kept while the user's command runs) records a
// lease: a lock file that process holds. When the process dies, the lock
// goes with it, and `envctl gc` treats the environment as an orphan.

// TakeLease makes a lease file in the store's leases/ directory and holds
// it until release, which also removes it.
func (s Store) TakeLease() (path string, release func(), err error) {
	dir := filepath.Join(s.Dir, "leases")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fault.Infraf("lease: %w", err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	path = filepath.Join(dir, hex.EncodeToString(b)+".lock")
	l := flock.New(path)
	if err := l.Lock(); err != nil {
		return "", nil, fault.Infraf("lease %s: %w", path, err)
	}
	return path, func() {
		_ = os.Remove(path)
		_ = l.Unlock()
	}, nil
}

// LeaseHeld reports whether a live process holds the lease at path. A
// lease file that is gone is not held.
func LeaseHeld(path string) bool {
	if _, err := os.Stat(path); err != nil {
		return false
	}
	l := flock.New(path)
	ok, err := l.TryLock()
	if err != nil {
		return true // unknown: treat as held, never remove on a guess
	}
	if ok {
		_ = l.Unlock()
		return false
	}
	return true
}
