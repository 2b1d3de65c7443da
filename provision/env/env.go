package env

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/privatedir"
)

// State is where an environment is in its life.
type State string

// The states, in order.
const (
	StateCreating    State = "creating"
	StateBooting     State = "booting"
	StateReady       State = "ready"
	StateKept        State = "kept"
	StateTearingDown State = "tearing-down"
)

// VolumeKind is a kind of libvirt volume an environment owns.
type VolumeKind string

// The volume kinds.
const (
	VolumeDisk      VolumeKind = "disk"
	VolumeSeed      VolumeKind = "seed"
	VolumeArtifacts VolumeKind = "artifacts"
	// VolumeConsole is the serial console log of a VM on a remote host: it
	// sits in the pool's directory, so it can be read back as a volume.
	VolumeConsole VolumeKind = "console"
	// VolumeDiskTop is the disk a run goes on writing to after a live
	// snapshot froze its first disk for a warm state.
	VolumeDiskTop VolumeKind = "disk-top"
	// VolumeDiskBoot is the disk a run goes on writing to after a live
	// snapshot froze its first disk for a post-boot state.
	VolumeDiskBoot VolumeKind = "disk-boot"
)

// volumeSuffix is the one table of volume names: an environment's volume
// of a kind is named ID + suffix.
var volumeSuffix = map[VolumeKind]string{
	VolumeDisk:      "-disk.qcow2",
	VolumeSeed:      "-seed.iso",
	VolumeArtifacts: "-artifacts.iso",
	VolumeConsole:   "-console.log",
	VolumeDiskTop:   "-disk-top.qcow2",
	VolumeDiskBoot:  "-disk-boot.qcow2",
}

// VolumeName names an environment's volume of a kind.
func VolumeName(id string, k VolumeKind) string { return id + volumeSuffix[k] }

// ParseVolumeName reads the environment ID and kind back from a volume
// name; ok is false for a volume that is not an envctl environment's.
func ParseVolumeName(name string) (id string, k VolumeKind, ok bool) {
	for kind, suffix := range volumeSuffix {
		if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
			return strings.TrimSuffix(name, suffix), kind, true
		}
	}
	return "", "", false
}

// Env is one environment's record.
type Env struct {
	ID      string    `json:"id"`
	Profile string    `json:"profile"`
	Cell    string    `json:"cell,omitempty"`
	Domain  string    `json:"domain"`
	URI     string    `json:"uri"`
	Pool    string    `json:"pool"`
	Volumes []string  `json:"volumes"`
	SSHHost string    `json:"ssh_host"`
	SSHPort int       `json:"ssh_port"`
	User    string    `json:"user"`
	HostKey string    `json:"host_key"` // authorized_keys form
	Accel   string    `json:"accel"`
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`
	State   State     `json:"state"`
	Kept    bool      `json:"kept"`
	// Lease is the lock file a kept environment lives for (env.TakeLease):
	// once no process holds it, the environment is an orphan.
	Lease string `json:"lease,omitempty"`
	Dir   string `json:"dir"`
	// Corrupt is set (never saved) when the record could not be read.
	Corrupt string `json:"-"`
}

// Store is a state directory: one directory per environment under envs/,
// the libvirt pool's directory, and kept results.
type Store struct{ Dir string }

// DefaultDir is $ENVCTL_STATE_DIR, else $XDG_STATE_HOME/envctl, else
// ~/.local/state/envctl, else (no home) a private per-user directory
// under the temporary directory (privatedir).
func DefaultDir() (string, error) {
	if d := os.Getenv("ENVCTL_STATE_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "envctl"), nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "envctl"), nil
	}
	d, err := privatedir.Fallback("state")
	if err != nil {
		return "", fault.Infraf("state directory: %w", err)
	}
	return d, nil
}

// EnvsDir holds one directory per environment.
func (s Store) EnvsDir() string { return filepath.Join(s.Dir, "envs") }

// PoolDir is the libvirt storage pool's directory.
func (s Store) PoolDir() string { return filepath.Join(s.Dir, "pool") }

// ResultsDir holds the kept results of failed runs.
func (s Store) ResultsDir() string { return filepath.Join(s.Dir, "results") }

// New creates a fresh environment with a unique ID derived from the
// profile name, and returns it locked by this process. The directory is
// made under a hidden name, locked and given its record before it is
// renamed into place, so no other envctl ever sees an environment without
// a record or an unlocked one that is still being made.
func (s Store) New(profile string) (*Env, func(), error) {
	// envs/ holds keys and consoles: this user's only.
	if err := os.MkdirAll(s.EnvsDir(), 0o700); err != nil {
		return nil, nil, fault.Infraf("state directory %s: %w; set ENVCTL_STATE_DIR", s.EnvsDir(), err)
	}
	_ = os.Chmod(s.EnvsDir(), 0o700)
	// Making holds the store's making lock (shared) until the new
	// directory is locked: RemoveUnfinished (exclusive) never sees one
	// between its creation and its lock.
	making := flock.New(s.makingLockPath())
	if err := making.RLock(); err != nil {
		return nil, nil, fault.Infraf("state directory %s: %w", s.EnvsDir(), err)
	}
	defer func() { _ = making.Unlock() }()
	base := sanitize(profile)
	if len(base) > 40 {
		base = base[:40]
	}
	base = cmp.Or(base, "env")
	for range 10 {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		id := base + "-" + hex.EncodeToString(b)
		dir := filepath.Join(s.EnvsDir(), id)
		if _, err := os.Lstat(dir); err == nil {
			continue
		}
		tmp, err := os.MkdirTemp(s.EnvsDir(), NewPrefix+id+"-")
		if err != nil {
			return nil, nil, fault.Infraf("environment directory under %s: %w", s.EnvsDir(), err)
		}
		if afterMkdir != nil {
			afterMkdir()
		}
		e := &Env{ID: id, Profile: profile, Domain: "envctl-" + id, Dir: tmp, PID: os.Getpid(), Created: time.Now().UTC(), State: StateCreating, User: "root", SSHHost: "127.0.0.1"}
		unlock, err := e.Lock(context.Background(), 0)
		if err != nil {
			_ = os.RemoveAll(tmp)
			return nil, nil, err
		}
		e.Dir = dir
		if err := e.saveIn(tmp); err != nil {
			unlock()
			_ = os.RemoveAll(tmp)
			return nil, nil, err
		}
		// rename(2) refuses to replace a non-empty directory, so a
		// concurrent New that picked the same ID loses here.
		if err := os.Rename(tmp, dir); err != nil {
			unlock()
			_ = os.RemoveAll(tmp)
			if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
				continue
			}
			return nil, nil, fault.Infraf("environment directory %s: %w", dir, err)
		}
		return e, unlock, nil
	}
	return nil, nil, fault.Infraf("could not allocate an environment ID under %s", s.EnvsDir())
}

// NewPrefix starts the hidden name of an environment directory still
// being made; `envctl gc` removes stale ones.
const NewPrefix = ".new-"

// afterMkdir runs between making a new directory and locking it (tests).
var afterMkdir func()

func (s Store) makingLockPath() string { return filepath.Join(s.Dir, "envs.lock") }

// RemoveUnfinished removes the hidden directories of environments whose
// maker died before it finished making them (their lock is free). It
// holds the store's making lock, so no directory is seen between its
// creation and its lock.
func (s Store) RemoveUnfinished() ([]string, error) {
	entries, err := os.ReadDir(s.EnvsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.Infraf("read %s: %w", s.EnvsDir(), err)
	}
	making := flock.New(s.makingLockPath())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := making.TryLockContext(ctx, 50*time.Millisecond); err != nil || !ok {
		return nil, fault.Infraf("state directory %s: environments are being made for 30s: %v", s.EnvsDir(), err)
	}
	defer func() { _ = making.Unlock() }()
	var removed []string
	var errs []error
	for _, ent := range entries {
		if !ent.IsDir() || !strings.HasPrefix(ent.Name(), NewPrefix) {
			continue
		}
		dir := filepath.Join(s.EnvsDir(), ent.Name())
		fl := flock.New(filepath.Join(dir, "lock"))
		if ok, err := fl.TryLock(); err != nil || !ok {
			continue // still being made
		}
		err := os.RemoveAll(dir)
		_ = fl.Unlock()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// Path returns a file inside the environment directory.
func (e *Env) Path(name string) string { return filepath.Join(e.Dir, name) }

// ConsoleLog is the serial console's log file.
func (e *Env) ConsoleLog() string { return e.Path("console.log") }

// KeyPath is the user's private key.
func (e *Env) KeyPath() string { return e.Path("id_ed25519") }

// AddVolume records a volume before it is created, so that teardown and
// gc find it even when creation fails half way.
func (e *Env) AddVolume(k VolumeKind) (string, error) {
	name := VolumeName(e.ID, k)
	if !slices.Contains(e.Volumes, name) {
		e.Volumes = append(e.Volumes, name)
	}
	return name, e.Save()
}

// DropVolume forgets a volume that is gone already.
func (e *Env) DropVolume(name string) error {
	e.Volumes = slices.DeleteFunc(e.Volumes, func(v string) bool { return v == name })
	return e.Save()
}

// Save writes env.json atomically: written, synced, then renamed.
func (e *Env) Save() error { return e.saveIn(e.Dir) }

func (e *Env) saveIn(dir string) error {
	b, _ := json.MarshalIndent(e, "", "  ")
	if err := atomicfile.Write(filepath.Join(dir, "env.json"), b, 0o600); err != nil {
		return fault.Infraf("save environment %s: %w", e.ID, err)
	}
	return nil
}

// BusyError is an environment another envctl holds.
type BusyError struct{ ID, Lock string }

func (e *BusyError) Error() string {
	return fmt.Sprintf("environment %s is busy: another envctl holds %s; wait for it, or stop it", e.ID, e.Lock)
}

// FaultClass implements fault.Classed.
func (e *BusyError) FaultClass() fault.Class { return fault.Infra }

// Lock serialises operations on one environment. wait bounds how long to
// wait for another holder; 0 tries once.
func (e *Env) Lock(ctx context.Context, wait time.Duration) (func(), error) {
	fl := flock.New(e.Path("lock"))
	if wait <= 0 {
		ok, err := fl.TryLock()
		if err != nil {
			return nil, fault.Infraf("environment %s: lock %s: %w", e.ID, e.Path("lock"), err)
		}
		if !ok {
			return nil, &BusyError{ID: e.ID, Lock: e.Path("lock")}
		}
		return func() { _ = fl.Unlock() }, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ok, err := fl.TryLockContext(wctx, 100*time.Millisecond)
	if !ok || err != nil {
		if ctx.Err() != nil {
			return nil, fault.Infraf("environment %s: %w", e.ID, ctx.Err())
		}
		return nil, &BusyError{ID: e.ID, Lock: e.Path("lock")}
	}
	return func() { _ = fl.Unlock() }, nil
}

// Share takes the environment's lock shared, at once or not at all: any
// number of sessions (ssh, cp, logs, verify) may use a kept environment
// together, while down, gc and a run, which take it alone, wait for them.
func (e *Env) Share() (func(), error) {
	fl := flock.New(e.Path("lock"))
	ok, err := fl.TryRLock()
	if err != nil {
		return nil, fault.Infraf("environment %s: lock %s: %w", e.ID, e.Path("lock"), err)
	}
	if !ok {
		return nil, &BusyError{ID: e.ID, Lock: e.Path("lock")}
	}
	return func() { _ = fl.Unlock() }, nil
}

// Load reads an environment by ID (a unique prefix is enough).
func (s Store) Load(id string) (*Env, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var match []*Env
	for _, e := range all {
		if e.ID == id {
			return e, nil
		}
		if strings.HasPrefix(e.ID, id) {
			match = append(match, e)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return nil, fault.Inputf("no environment %q in %s; `envctl status` lists them", id, s.EnvsDir())
	}
	ids := make([]string, len(match))
	for i, e := range match {
		ids[i] = e.ID
	}
	return nil, fault.Inputf("environment %q is ambiguous: %s", id, strings.Join(ids, ", "))
}

// List reads every environment record, oldest first. A directory whose
// record cannot be read is returned with ID, Dir and Corrupt set.
func (s Store) List() ([]*Env, error) {
	entries, err := os.ReadDir(s.EnvsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.Infraf("read %s: %w", s.EnvsDir(), err)
	}
	var out []*Env
	for _, ent := range entries {
		if !ent.IsDir() || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		dir := filepath.Join(s.EnvsDir(), ent.Name())
		e := &Env{ID: ent.Name(), Dir: dir, Domain: "envctl-" + ent.Name()}
		b, err := os.ReadFile(filepath.Join(dir, "env.json"))
		switch {
		case err != nil:
			e.Corrupt = "no readable env.json: " + err.Error()
		case json.Unmarshal(b, e) != nil:
			e.Corrupt = "env.json is not valid JSON"
		}
		e.Dir = dir
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Env) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Remove deletes the environment directory.
func (e *Env) Remove() error {
	if err := os.RemoveAll(e.Dir); err != nil {
		return fault.Infraf("remove %s: %w", e.Dir, err)
	}
	return nil
}

// Age is how long ago the environment was created.
func (e *Env) Age() time.Duration { return time.Since(e.Created).Truncate(time.Second) }
