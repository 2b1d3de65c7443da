package start

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/warm"
)

// How says how a guest came up.
type How string

// The ways a guest comes up.
const (
	// Warm: restored from a warm state, the stack installed and verified
	// and CRI-O running: nothing to install.
	Warm How = "warm"
	// PostBoot: restored from the post-boot state of its image and VM
	// shape, its artifact disk hot-plugged; the stack is to install.
	PostBoot How = "post-boot"
	// Cold: booted from the image.
	Cold How = "cold"
)

// Spec is what Start needs: how to boot the image, what determines the
// guest, where saved guests are kept, and what the run is for.
type Spec struct {
	VM vm.Options
	// Boot boots the image; Start sets its source.
	Boot  vm.BootSpec
	Guest Guest
	// Warm keeps warm states and Shared post-boot states (nil: none).
	Warm, Shared *warm.Store
	// Cold never restores; Keep makes a persistent domain (a restored
	// one cannot be); Tests says the run tests (warm states are of
	// tested stacks).
	Cold, Keep, Tests bool
	Log               *slog.Logger
	// Step prints a progress line for humans; may be nil.
	Step func(format string, args ...any)
}

// NoSavedGuests says why a start may not use saved guests, or "" when it
// may.
func (sp Spec) NoSavedGuests() string {
	switch {
	case sp.Warm == nil:
		return "warm starts are off"
	case sp.Cold:
		return "--cold"
	case sp.Keep:
		return "--keep or --keep=on-failure (a kept VM is a persistent domain; a restored one cannot be)"
	case !sp.Tests:
		return "no test runs"
	case sp.VM.Network != "" && sp.VM.Network != vm.NetworkUser:
		return "warm states need user-mode networking"
	case vm.IsRemote(sp.VM.URI):
		return "warm states are kept for a local hypervisor only"
	}
	return ""
}

// Timing is one measured step of a start.
type Timing struct {
	Name string
	Took time.Duration
}

// Started is how a guest came up.
type Started struct {
	Machine *vm.Machine
	How     How
	// Why is the report's start line: "warm: …", "post-boot: …" or
	// "cold: …", with the reason.
	Why string
	// WarmKey is the key a warm state of this guest is saved under ("":
	// the run may not keep one).
	WarmKey string
	Notes   []string
	Timings []Timing
	// Env and Accel name the environment and accelerator, also of a boot
	// that failed.
	Env, Accel string
	// Uses are the saved-state directories the guest was restored from:
	// a kept guest needs them for as long as its domain exists.
	Uses []string
	// Verified is the drift check that a restored warm state passed before
	// it was saved (warm.State.Verified), sealed with it.
	Verified json.RawMessage
	holds    []func()
	log      *slog.Logger
}

// Release gives back the domain names held for the guest; call it once
// its domain is gone.
func (s *Started) Release() {
	for _, release := range s.holds {
		release()
	}
	s.holds = nil
}

// starter is one Start in progress.
type starter struct {
	sp Spec
	st *Started
}

func (s *starter) step(format string, args ...any) {
	if s.sp.Step != nil {
		s.sp.Step(format, args...)
	}
}

func (s *starter) log() *slog.Logger { return s.st.log }

func (s *starter) note(format string, args ...any) {
	s.st.Notes = append(s.st.Notes, fmt.Sprintf(format, args...))
}

// Start brings the guest up, in this order: its warm state, when it has
// one that restores; else a post-boot state of its image and VM shape in
// a free slot (or a boot into that slot that saves one for the next
// cells); else, with every slot taken, or when saved guests may not be
// used (NoSavedGuests), a boot of the image. A saved guest that does not
// restore is removed and the next way is taken: never a wrong guest. The
// Started value is returned also with an error (its Env names the
// environment that failed), and must be released once the domain is gone.
func Start(ctx context.Context, sp Spec) (*Started, error) {
	s := &starter{sp: sp, st: &Started{How: Cold, log: cmp.Or(sp.Log, slog.Default())}}
	if why := sp.NoSavedGuests(); why != "" {
		s.st.Why = "cold: " + why
		return s.st, s.boot(ctx, vm.ImageSource())
	}
	// A saved guest is bound to the QEMU that saved it and to the host
	// CPU it saw: both are in its keys, so that after a host upgrade a
	// state misses instead of failing to restore.
	host, err := identify(ctx, sp.VM)
	if err != nil {
		s.st.Why = "cold: saved guests are off: the hypervisor could not be identified (" + firstLine(err.Error()) + ")"
		return s.st, s.boot(ctx, vm.ImageSource())
	}
	s.sp.Guest.Host = host
	s.st.WarmKey = s.sp.Guest.WarmKey()
	done, err := s.warmStart(ctx)
	if done || err != nil {
		return s.st, err
	}
	if sp.Shared != nil {
		return s.st, s.sharedStart(ctx)
	}
	return s.st, s.boot(ctx, vm.ImageSource())
}

// hold takes a domain name for as long as the guest lives (every name is
// free when no store keeps the names).
func (s *starter) hold(domain string) bool {
	release, ok := func() {}, true
	if s.sp.Shared != nil {
		var err error
		if release, ok, err = s.sp.Shared.Hold(domain); err != nil {
			s.log().Warn("hold domain name", "domain", domain, "err", err)
		}
	}
	if ok {
		s.st.holds = append(s.st.holds, release)
	}
	return ok
}

// unhold gives back the name taken last, when no domain got it.
func (s *starter) unhold() {
	if n := len(s.st.holds); n > 0 {
		s.st.holds[n-1]()
		s.st.holds = s.st.holds[:n-1]
	}
}

// warmStart restores this guest's warm state, when there is one that
// restores; done is false when the start is to go on.
func (s *starter) warmStart(ctx context.Context) (done bool, err error) {
	key := s.st.WarmKey
	st, ok := s.sp.Warm.Lookup(key)
	if !ok {
		s.st.Why = "cold: no saved state for this key yet; this run saves one"
		return false, nil
	}
	if !s.hold(st.Domain) {
		s.st.Why = "cold: the saved state is in use by another run (domain " + st.Domain + ")"
		s.step("warning: %s", s.st.Why)
		return false, nil
	}
	err = s.restoreFrom(ctx, s.sp.Warm, st, vm.WarmSource(st.WarmState))
	if err == nil {
		s.st.How = Warm
		s.st.Verified = st.Verified
		s.st.Why = fmt.Sprintf("warm: restored the state saved %s (key %s)", st.Created.Format(time.RFC3339), key[:12])
		s.step("warm start: %s", strings.TrimPrefix(s.st.Why, "warm: "))
		return true, nil
	}
	if ctx.Err() != nil {
		return true, err
	}
	_, why := s.restoreFailed("the saved state", err, func() error { return s.sp.Warm.Remove(key) })
	s.st.Why = "cold: " + why
	s.step("warning: %s", s.st.Why)
	return false, nil
}

// restoreFailed is what every saved guest that did not restore comes to:
// the name it is held under goes back; a name that another program's
// domain has leaves the save alone (it is not damaged), any other failure
// removes it, since it is never tried again. It says which, for the
// report.
func (s *starter) restoreFailed(what string, err error, remove func() error) (taken bool, why string) {
	s.unhold()
	first := firstLine(err.Error())
	if nameTaken(err) {
		return true, what + " is in use by another run (" + first + ")"
	}
	if unsettled(err) {
		// libvirtd may still be reading it: left as it is.
		return false, what + " did not restore in time (" + first + "); it was left alone"
	}
	if rerr := remove(); rerr != nil {
		s.log().Warn("remove a saved guest that did not restore", "err", rerr)
	}
	s.log().Warn("restore failed", "what", what, "err", err)
	return false, what + " did not restore (" + first + "); it was removed"
}

// restoreFrom starts from a saved state: held, then checked against the digests
// sealed when it was saved (a state that fails is handled as one that did
// not restore), and held, with the states it needs, for as long as the
// guest runs on them.
func (s *starter) restoreFrom(ctx context.Context, store *warm.Store, st warm.State, from vm.Source) error {
	// Held before it is checked: a remover claims first, so what the
	// check proves stays true while the guest runs on it.
	release, err := store.Use(st.Dir, st.Needs...)
	if err != nil {
		return err
	}
	checked := time.Now()
	if err := store.Check(st); err != nil {
		release()
		return err
	}
	s.st.Timings = append(s.st.Timings, Timing{"boot.check", time.Since(checked)})
	if err := s.restore(ctx, from); err != nil {
		release()
		return err
	}
	// After the domain name's hold: restoreFailed gives that one back.
	s.st.holds = append(s.st.holds, release)
	s.st.Uses = append(s.st.Uses, st.Dir)
	for _, p := range st.Needs {
		s.st.Uses = append(s.st.Uses, filepath.Dir(p))
	}
	return nil
}

// restore starts from a saved guest; a name that a dead run of this
// state directory still holds is reaped once, and the restore tried
// again.
func (s *starter) restore(ctx context.Context, from vm.Source) error {
	err := s.boot1(ctx, from)
	if s.reapedFor(ctx, err) {
		err = s.boot1(ctx, from)
	}
	return err
}

// reapedFor reports whether a start that failed because its domain name
// was taken is worth trying again: reap removed a dead run's domain.
func (s *starter) reapedFor(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && nameTaken(err) && s.reap(ctx)
}

// reap removes what dead runs of this state directory left behind, as
// `envctl gc` does (never a live run's domain), and reports whether a
// domain went. A restored domain is not AUTODESTROY, so one whose envctl
// was killed outright keeps running under the saved name.
func (s *starter) reap(ctx context.Context) bool {
	done, _, err := vm.GC(ctx, s.sp.VM)
	reaped := false
	for _, a := range done {
		reaped = reaped || a.Kind == vm.KindDomain
	}
	if !reaped {
		if err != nil {
			s.log().Warn("gc for a taken domain name", "err", err)
		}
		return false
	}
	s.note("the saved guest's domain name was taken by a run that died; removed what dead runs left behind first (%d domains, volumes and directories, as `envctl gc` does)", len(done))
	s.step("removed what dead runs of this state directory left behind (%d things)", len(done))
	return true
}

func unsettled(err error) bool {
	var ue *vm.UnsettledError
	return errors.As(err, &ue)
}

func nameTaken(err error) bool {
	var nt *vm.NameTakenError
	return errors.As(err, &nt)
}

// sharedStart starts from a post-boot state of this image and VM shape,
// or boots into a free slot and saves one for the cells after it; either
// way the artifact disk is hot-plugged after. With every slot in use it
// boots as usual.
func (s *starter) sharedStart(ctx context.Context) error {
	key := s.sp.Guest.PostBootKey()
	why := strings.TrimPrefix(s.st.Why, "cold: ")
	for i := range warm.BootSlots {
		name := warm.SlotDomain(key, i)
		if !s.hold(name) {
			continue
		}
		if st, ok := s.sp.Shared.Find(key, name); ok {
			err := s.restoreFrom(ctx, s.sp.Shared, st, vm.PostBootSource(st.WarmState))
			if err == nil {
				s.st.How = PostBoot
				s.st.Why = fmt.Sprintf("post-boot: %s; restored the post-boot state of this image and VM shape saved %s (key %s, slot %d)", why, st.Created.Format(time.RFC3339), key[:12], i)
				s.step("shared boot: restored the post-boot state saved %s (slot %d)", st.Created.Format(time.RFC3339), i)
				return s.attach(ctx)
			}
			if ctx.Err() != nil {
				return err
			}
			taken, what := s.restoreFailed("the post-boot state", err, func() error { return s.sp.Shared.RemoveDir(st.Dir) })
			if taken {
				continue // a program that does not hold the name has it
			}
			s.note("%s", what)
			s.step("warning: %s", what)
			if !s.hold(name) {
				continue
			}
		}
		if done, err := s.bootToShare(ctx, key, name, i); done || err != nil {
			return err
		}
	}
	s.st.Why += "; every post-boot state of this image is in use"
	return s.boot(ctx, vm.ImageSource())
}

// bootToShare boots the image into slot i (held) and saves its post-boot
// state; done is false when another program's domain has the slot's name.
func (s *starter) bootToShare(ctx context.Context, key, name string, i int) (done bool, err error) {
	from := vm.ShareSource(name)
	err = s.boot(ctx, from)
	if s.reapedFor(ctx, err) {
		err = s.boot(ctx, from)
	}
	if err != nil {
		if nameTaken(err) && ctx.Err() == nil {
			s.unhold()
			return false, nil
		}
		return true, err
	}
	s.st.Why += fmt.Sprintf("; saved a post-boot state for the cells after it (slot %d)", i)
	s.saveShared(ctx, key)
	return true, s.attach(ctx)
}

// saveShared keeps the guest as a post-boot state; a failure only means
// the next cell boots too.
func (s *starter) saveShared(ctx context.Context, key string) {
	m := s.st.Machine
	err := func() error {
		dir, commit, abort, err := s.sp.Shared.BeginIn(key)
		if err != nil {
			return err
		}
		// The guest's disk is backed by the disk kept there from now on.
		release, err := s.sp.Shared.Use(dir)
		if err != nil {
			abort()
			return err
		}
		s.st.holds = append(s.st.holds, release)
		ws, err := m.SaveBoot(ctx, dir)
		if err == nil {
			err = commit(warm.State{WarmState: ws, Profile: s.sp.Boot.Profile, Cell: s.sp.Boot.Cell})
		}
		if err != nil {
			if !unsettled(err) { // libvirtd may still be writing there
				abort()
			}
			return err
		}
		if gone, err := s.sp.Shared.Prune(warm.MaxBootStates); err != nil || len(gone) > 0 {
			s.log().Info("post-boot states pruned", "removed", gone, "err", err)
		}
		return nil
	}()
	if err != nil {
		s.note("no post-boot state saved: %s", firstLine(err.Error()))
		s.log().Warn("post-boot state not saved", "err", err)
		return
	}
	s.st.Timings = append(s.st.Timings, Timing{"boot.save", m.Timings["save.boot"]})
}

// attach hot-plugs the artifact disk a shared guest came up without.
func (s *starter) attach(ctx context.Context) error {
	m := s.st.Machine
	if err := m.AttachArtifactDisk(ctx); err != nil {
		return err
	}
	if d, ok := m.Timings["attach"]; ok {
		s.st.Timings = append(s.st.Timings, Timing{"boot.attach", d})
	}
	return nil
}

// boot boots the image. Software emulation now and then hangs a boot for
// good; a fresh VM almost always comes up, so a hung boot gets one more
// try.
func (s *starter) boot(ctx context.Context, from vm.Source) error {
	err := s.boot1(ctx, from)
	var be *vm.BootError
	if errors.As(err, &be) && be.Hung && ctx.Err() == nil {
		s.note("the first VM (%s) hung: %s; a fresh one was booted (its console: %s)", be.Env, be.Reason, be.LogPath)
		s.step("warning: %s hung while booting; booting a fresh VM once more", be.Env)
		err = s.boot1(ctx, from)
	}
	return err
}

// boot1 is one vm.Boot; the machine, and its environment and
// accelerator, are kept also when it fails.
func (s *starter) boot1(ctx context.Context, from vm.Source) error {
	spec := s.sp.Boot
	spec.From = from
	m, err := vm.Boot(ctx, s.sp.VM, spec)
	if m != nil {
		s.st.Env, s.st.Accel = m.Env.ID, string(m.Type)
	}
	if err != nil {
		return err
	}
	s.st.Machine = m
	// Where the boot's time went: defining and starting (or restoring)
	// the domain, then the wait for SSH.
	s.st.Timings = append(s.st.Timings, Timing{"boot.start", m.Timings["start"]}, Timing{"boot.answer", m.Timings["answer"]})
	return nil
}

// SaveWarm keeps the verified guest as this key's warm state for the next
// run, with the drift check it passed (verified); the run goes on. A
// failed save comes back as a note: the run still tests, and the next run
// starts another way.
func (s *Started) SaveWarm(ctx context.Context, store *warm.Store, profile, cell string, verified json.RawMessage) (note string, took time.Duration) {
	err := func() error {
		dir, commit, abort, err := store.Begin(s.WarmKey)
		if err != nil {
			return err
		}
		ws, err := s.Machine.SaveWarm(ctx, dir)
		if err == nil {
			err = commit(warm.State{WarmState: ws, Profile: profile, Cell: cell, Verified: verified})
		}
		if err != nil {
			if !unsettled(err) { // libvirtd may still be writing there
				abort()
			}
			return err
		}
		if gone, err := store.Prune(warm.MaxStates); err != nil || len(gone) > 0 {
			s.log.Info("warm states pruned", "removed", gone, "err", err)
		}
		return nil
	}()
	if err != nil {
		s.log.Warn("warm state not saved", "err", err)
		return "no warm state saved: " + firstLine(err.Error()), 0
	}
	return "", s.Machine.Timings["save"]
}

// identify asks the hypervisor what a saved guest is bound to.
func identify(ctx context.Context, o vm.Options) (vm.HostIdentity, error) {
	if o.Connect == nil {
		return vm.HostIdentity{}, errors.New("no hypervisor connector")
	}
	d, err := o.Connect(ctx, o.URI)
	if err != nil {
		return vm.HostIdentity{}, err
	}
	defer d.Close()
	return d.Identity(ctx)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
