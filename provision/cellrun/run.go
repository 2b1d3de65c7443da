package cellrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artdisk"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/bats"
	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/imagevolume"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/warm"
)

// The phases of a run, in order.
const (
	PhaseFetch    = "fetch"
	PhaseBoot     = "boot"
	PhaseInstall  = "install"
	PhaseVerify   = "verify"
	PhaseSave     = "save" // a cold run saves a warm state for the next
	PhaseTest     = "test"
	PhaseCollect  = "collect"
	PhaseTeardown = "teardown"
)

// Stop says how far a run goes.
type Stop int

// How far a run goes.
const (
	Full         Stop = iota // fetch, boot, install, verify, test
	AfterBoot                // boot only (--no-install)
	AfterInstall             // boot, install and verify (--no-test)
)

// TestImages says where the test's images come from.
type TestImages string

// The test image sources.
const (
	// LocalImages are built in-process and served from host loopback
	// through an SSH remote forward: the guest needs no network.
	LocalImages TestImages = "local"
	// UpstreamImages are upstream's test images (quay.io, registry.k8s.io),
	// pulled by the host and served like the local ones: the guest still
	// has no network and never sees the host's loopback.
	UpstreamImages TestImages = "upstream"
)

func (t TestImages) String() string { return string(t) }

// Set implements pflag.Value.
func (t *TestImages) Set(s string) error {
	switch TestImages(s) {
	case LocalImages, UpstreamImages:
		*t = TestImages(s)
		return nil
	}
	return fmt.Errorf("%q is not a test image source: use local or upstream", s)
}

// Type implements pflag.Value.
func (t *TestImages) Type() string { return "local|upstream" }

// Upload says how a cell's files reach the guest.
type Upload string

// The ways files reach the guest.
const (
	// UploadDisk attaches one read-only artifact disk (a tar, built once
	// per set of files and cached) and unpacks it in the guest.
	UploadDisk Upload = "disk"
	// UploadSFTP copies every file over SSH, checked in the guest.
	UploadSFTP Upload = "sftp"
)

func (u Upload) String() string { return string(u) }

// Set implements pflag.Value.
func (u *Upload) Set(s string) error {
	switch Upload(s) {
	case UploadDisk, UploadSFTP:
		*u = Upload(s)
		return nil
	}
	return fmt.Errorf("%q is not an upload method: use disk or sftp", s)
}

// Type implements pflag.Value.
func (u *Upload) Type() string { return "disk|sftp" }

// Fetcher gets a locked component's files onto the host
// (*artifacts.Fetcher).
type Fetcher interface {
	Fetch(ctx context.Context, cell lock.LockedCell, c lock.Part) (artifacts.Files, error)
	FetchTool(ctx context.Context, t lock.Artifact) (artifacts.Files, error)
}

// ImageSource makes a locked image's files present (*images.Store).
type ImageSource interface {
	Ensure(ctx context.Context, ref lock.Image) (images.Files, error)
}

// Event reports a phase starting or ending, for live progress.
type Event struct {
	Cell  string
	Phase string
	Done  bool
	Took  time.Duration
	Err   error
}

// Options are everything a run needs besides the cell.
type Options struct {
	VM     vm.Options
	Fetch  Fetcher
	Images ImageSource
	// Workload is the static binary the local test images run as sleep,
	// cat and pause (testimages.WorkloadBinary).
	Workload   string
	TestImages TestImages
	// Upload is how files reach the guest; the artifact disk (the
	// default) needs Cache, where disks are kept.
	Upload Upload
	Cache  *cache.Cache
	// Warm keeps warm starts (nil: none); Boot keeps post-boot states
	// shared by the cells of one image and VM shape (nil: none); Cold
	// never restores either.
	Warm *warm.Store
	Boot *warm.Store
	Cold bool
	Stop Stop
	// Keep leaves the VM running afterwards (unless the run was cancelled).
	Keep bool
	// ResultsDir receives the logs of a failed run; default: a new
	// directory under the state directory's results/.
	ResultsDir string
	// Progress receives phase events; may be nil.
	Progress func(Event)
	// Timeouts override DefaultTimeouts by phase name.
	Timeouts map[string]time.Duration
	// Ledger records each tested cell's verdict by lock hash; may be nil.
	Ledger *Ledger
	Log    *slog.Logger
	// Step prints a progress line for humans; may be nil.
	Step func(format string, args ...any)
	// Image says where the cell's image came from, for the report
	// (Resolution.Image); may be nil.
	Image *images.Obtained
}

func (o Options) step(format string, args ...any) {
	if o.Step != nil {
		o.Step(format, args...)
	}
}

// Validate checks the options for a profile's test before any work:
// nothing is fetched, built or booted when this fails.
func (o Options) Validate(test profiles.TestName) error {
	if err := o.VM.Validate(); err != nil {
		return err
	}
	if o.Fetch == nil || o.Images == nil {
		return fault.Inputf("cellrun: no artifact or image source configured")
	}
	switch cmp.Or(o.TestImages, LocalImages) {
	case LocalImages:
		if o.Stop == Full && test.Runs() {
			if err := testimages.CheckStatic(o.Workload); err != nil {
				return fault.Infraf("test images: %w", err)
			}
		}
	case UpstreamImages:
		if _, upstream := test.UpstreamFile(); upstream && o.Stop == Full {
			return fault.Inputf("--test-images upstream pulls the images of envctl's own test; upstream's suite (test %s) is served envctl's hermetic images under upstream's names: drop --test-images", test)
		}
	default:
		return fault.Inputf("--test-images %q: use local or upstream", o.TestImages)
	}
	return nil
}

// run is one run's state: what each phase produced. The report is
// assembled from it in one place, by report().
type run struct {
	cell     lock.LockedCell
	opts     Options
	start    time.Time
	phases   []report.Phase
	parts    []crio.Part
	builds   []compat.Build
	tools    map[string]artifacts.Files
	disk     artdisk.Disk
	warmKey  string
	came     string            // how the guest came up: warm or cold, and why
	holds    []func()          // domain names held while the domain lives
	names    *testimages.Names // upstream's image names, read once
	warnings []compat.Finding
	machine  *vm.Machine
	accel    string
	env      string
	verified []crio.Installed
	tested   bool
	test     imagevolume.Result
	upstream bats.Outcome
	results  string
	kept     bool
	notes    []string
	err      error
}

// Run runs one locked cell end to end and returns its report. The error is
// nil unless the run could not test (verdict "error"); a failed test is a
// verdict, not an error.
func Run(ctx context.Context, cell lock.LockedCell, opts Options) (*report.Report, error) {
	r := &run{cell: cell, opts: opts, start: time.Now()}
	err := opts.Validate(cell.Test)
	if err == nil && len(cell.Components) == 0 {
		err = fault.Inputf("%s: cell %s pins no components; run `envctl lock`", cell.Profile, cell.Name)
	}
	if err != nil {
		r.err = err
		return r.report(), err
	}
	func() {
		// A bug in a phase before the VM exists: no stack at the user.
		defer func() {
			if p := recover(); p != nil {
				r.err = fault.Infraf("internal error: %v (please report this)", p)
				r.log().Error("panic during a run", "panic", p, "stack", string(debug.Stack()))
			}
		}()
		r.err = r.all(ctx)
	}()
	for _, release := range r.holds {
		release()
	}
	rep := r.report()
	if r.tested {
		if lerr := opts.Ledger.Record(LedgerKey(cell, ""), rep); lerr != nil {
			r.log().Warn("ledger", "err", lerr)
		}
	}
	if rep.Verdict == report.VerdictError {
		return rep, r.err
	}
	return rep, nil
}

// DefaultTimeouts bound each phase. Boot is also bounded by the VM
// options' BootTimeout (until SSH answers); fetch covers cold builds.
var DefaultTimeouts = map[string]time.Duration{
	PhaseFetch:   45 * time.Minute,
	PhaseBoot:    20 * time.Minute,
	PhaseInstall: 10 * time.Minute,
	PhaseVerify:  3 * time.Minute,
	PhaseTest:    15 * time.Minute,
}

// PhaseTimeoutError is a phase that did not end within its limit.
type PhaseTimeoutError struct {
	Phase string
	Limit time.Duration
}

func (e *PhaseTimeoutError) Error() string {
	return fmt.Sprintf("the %s phase did not finish within its limit of %s", e.Phase, e.Limit)
}

// FaultClass implements fault.Classed: a phase that hangs could not test.
func (e *PhaseTimeoutError) FaultClass() fault.Class { return fault.Infra }

func (r *run) timeout(name string) time.Duration {
	if d, ok := r.opts.Timeouts[name]; ok && d > 0 {
		return d
	}
	return DefaultTimeouts[name]
}

// phase runs one phase within its time limit, timing it and reporting
// progress. A phase that overruns its limit ends with a PhaseTimeoutError.
func (r *run) phase(ctx context.Context, name string, f func(context.Context) error) error {
	if r.opts.Progress != nil {
		r.opts.Progress(Event{Cell: r.cell.Name, Phase: name})
	}
	start := time.Now()
	pctx, cancel := ctx, context.CancelFunc(func() {})
	limit := r.timeout(name)
	if limit > 0 {
		pctx, cancel = context.WithTimeoutCause(ctx, limit, &PhaseTimeoutError{Phase: name, Limit: limit})
	}
	err := f(pctx)
	var pt *PhaseTimeoutError
	if cause := context.Cause(pctx); ctx.Err() == nil && errors.As(cause, &pt) && (err != nil || pctx.Err() != nil) {
		err = fmt.Errorf("%w (last error: %v)", cause, err)
	}
	cancel()
	took := time.Since(start)
	r.phases = append(r.phases, report.Phase{Name: name, Seconds: took.Round(10 * time.Millisecond).Seconds()})
	if r.opts.Progress != nil {
		r.opts.Progress(Event{Cell: r.cell.Name, Phase: name, Done: true, Took: took, Err: err})
	}
	return err
}

func (r *run) sub(name string, d time.Duration) {
	r.phases = append(r.phases, report.Phase{Name: name, Seconds: d.Round(10 * time.Millisecond).Seconds()})
}

func (r *run) all(ctx context.Context) (err error) {
	var imgFiles images.Files
	if err := r.phase(ctx, PhaseFetch, func(ctx context.Context) error { return r.fetch(ctx, &imgFiles) }); err != nil {
		return stopped(ctx, err)
	}
	if err := r.phase(ctx, PhaseBoot, func(ctx context.Context) error { return r.boot(ctx, imgFiles) }); err != nil {
		return stopped(ctx, err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fault.Infraf("internal error: %v (the VM was torn down; please report this)", p)
			r.log().Error("panic during a run", "panic", p, "stack", string(debug.Stack()))
		}
		if ctx.Err() != nil {
			err = stopped(ctx, err)
		}
		if (err != nil || r.failed()) && !vm.Urgent(ctx) {
			_ = r.phase(ctx, PhaseCollect, func(context.Context) error { r.collect(ctx); return nil })
		}
		if terr := r.phase(ctx, PhaseTeardown, func(context.Context) error { return r.finish(ctx) }); terr != nil {
			if err == nil {
				err = terr
			} else {
				r.log().Warn("teardown", "env", r.env, "err", terr)
			}
		}
	}()
	if r.opts.Stop == AfterBoot {
		return nil
	}
	testing := r.opts.Stop == Full && r.cell.Test.Runs()
	if err := r.phase(ctx, PhaseInstall, r.install); err != nil {
		return err
	}
	if err := r.phase(ctx, PhaseVerify, r.verify); err != nil {
		return err
	}
	if r.warmKey != "" && !r.machine.Warm() {
		if err := r.phase(ctx, PhaseSave, r.saveWarm); err != nil {
			return err
		}
	}
	if !testing {
		return nil
	}
	// The registry's forward opens only now, after a warm state was
	// saved: a saved guest must not hold a listener of this run's SSH
	// session, or a restored one could not open its own.
	closeRegistry, err := r.registry(ctx)
	if err != nil {
		return err
	}
	defer closeRegistry()
	return r.phase(ctx, PhaseTest, r.runTest)
}

// stopped says why a run stopped early when ctx ended: an interrupt or
// --timeout (the context's cause), rather than whatever error the phase
// in flight returned.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	why := cause.Error()
	if cause == context.Canceled {
		why = "interrupted"
	}
	what := "the VM was torn down"
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		what += "; the phase in flight said: " + err.Error()
	}
	return fault.Infraf("stopped: %s (%s)", why, what)
}

func (r *run) log() *slog.Logger { return cmp.Or(r.opts.Log, slog.Default()) }

func (r *run) fetch(ctx context.Context, img *images.Files) error {
	if r.opts.Stop != AfterBoot {
		got, err := Fetch(ctx, r.cell, r.opts.Fetch)
		if err != nil {
			return err
		}
		r.parts, r.builds, r.tools = got.Parts, got.Builds, got.Tools
		r.notes = append(r.notes, got.Notes...)
		if err := r.checkUpstreamFile(); err != nil {
			return err
		}
		r.warnings = compat.Predict(r.cell.Test, r.cell.Versions(), r.builds)
		for _, w := range r.warnings {
			r.opts.step("warning: predicted failure: %s", w)
		}
		if err := r.artifactDisk(ctx); err != nil {
			return err
		}
	}
	f, err := r.opts.Images.Ensure(ctx, r.cell.Image)
	*img = f
	return err
}

// warmKeyFor is the key of this run's warm state, or "" when the run
// cannot use one (see noWarmReason).
func (r *run) warmKeyFor() string {
	if r.noWarmReason() != "" {
		return ""
	}
	host, pause, _, _ := r.testRefs()
	vmo := r.opts.VM
	return warm.Key(
		"cell="+r.cell.Hash,
		fmt.Sprintf("vm=%d cpus %d memory %d disk", r.cell.VM.CPUs, r.cell.VM.Memory, r.cell.VM.Disk),
		"uri="+vmo.URI, "accel="+string(vmo.Accel), "network="+string(vmo.Network), "kernel-args="+vmo.KernelArgs,
		"seed="+string(vmo.Seed), "artifacts="+r.disk.Digest.String(), "registry="+host, "pause="+pause)
}

// noWarmReason says why a run cannot use a warm state ("" when it can).
func (r *run) noWarmReason() string {
	switch {
	case r.opts.Warm == nil:
		return "warm starts are off"
	case r.opts.Cold:
		return "--cold"
	case r.opts.Keep:
		return "--keep (a kept VM is a persistent domain; a restored one cannot be)"
	case r.opts.Stop != Full:
		return "no test runs"
	case r.opts.VM.Network != "" && r.opts.VM.Network != vm.NetworkUser:
		return "warm states need user-mode networking"
	case vm.IsRemote(r.opts.VM.URI):
		return "warm states are kept for a local hypervisor only"
	}
	return ""
}

// saveWarm keeps the verified guest for the next run with the same key;
// the run goes on. A failed save is a note: the run still tests, and the
// next run boots cold.
func (r *run) saveWarm(ctx context.Context) error {
	if err := r.keepWarm(ctx); err != nil {
		r.notes = append(r.notes, "no warm state saved: "+report.FirstLine(err.Error()))
		r.log().Warn("warm state not saved", "err", err)
	}
	return nil
}

func (r *run) keepWarm(ctx context.Context) error {
	dir, commit, abort, err := r.opts.Warm.Begin(r.warmKey)
	if err != nil {
		return err
	}
	ws, err := r.machine.SaveWarm(ctx, dir)
	if err == nil {
		err = commit(warm.State{WarmState: ws, Profile: r.cell.Profile, Cell: r.cell.Name})
	}
	if err != nil {
		abort()
		return err
	}
	if gone, err := r.opts.Warm.Prune(warm.MaxStates); err != nil || len(gone) > 0 {
		r.log().Info("warm states pruned", "removed", gone, "err", err)
	}
	r.sub("save.warm", r.machine.Timings["save"])
	r.opts.step("saved a warm state for the next run with this lock (key %s)", r.warmKey[:12])
	return nil
}

// artifactDisk builds (or finds in the cache) the disk that carries the
// cell's files into the guest.
func (r *run) artifactDisk(ctx context.Context) error {
	if r.opts.Upload == UploadSFTP || r.opts.Cache == nil {
		return nil
	}
	start := time.Now()
	uploads, err := crio.Stack{Parts: r.parts}.Uploads()
	if err != nil {
		return err
	}
	if len(uploads) == 0 {
		return nil
	}
	d, err := artdisk.Ensure(ctx, r.opts.Cache, uploads)
	if err != nil {
		return err
	}
	r.disk = d
	r.sub("fetch.artifact-disk", time.Since(start))
	r.log().Debug("artifact disk", "path", d.Path, "bytes", d.Size, "built", d.Built, "files", len(uploads))
	return nil
}

func (r *run) boot(ctx context.Context, img images.Files) error {
	spec := vm.BootSpec{
		Profile: r.cell.Profile, Cell: r.cell.Name, CPUs: r.cell.VM.CPUs,
		Memory: uint64(r.cell.VM.Memory), Disk: uint64(r.cell.VM.Disk), Image: img,
		Keep: r.opts.Keep, ArtifactDisk: r.disk.Path, ArtifactSerial: artdisk.Serial,
	}
	r.warmKey = r.warmKeyFor()
	if r.warmKey == "" {
		r.came = "cold: " + r.noWarmReason()
		return r.coldBoot(ctx, spec)
	}
	if done, err := r.warmStart(ctx, spec); done || err != nil {
		return err
	}
	if r.opts.Boot != nil {
		return r.sharedBoot(ctx, spec)
	}
	return r.coldBoot(ctx, spec)
}

// hold takes a domain name for as long as this run's domain lives (every
// name is free when no store keeps the names).
func (r *run) hold(domain string) bool {
	release, ok := func() {}, true
	if r.opts.Boot != nil {
		var err error
		if release, ok, err = r.opts.Boot.Hold(domain); err != nil {
			r.log().Warn("hold domain name", "domain", domain, "err", err)
		}
	}
	if ok {
		r.holds = append(r.holds, release)
	}
	return ok
}

// unhold gives back the name taken last, when no domain got it.
func (r *run) unhold() {
	if n := len(r.holds); n > 0 {
		r.holds[n-1]()
		r.holds = r.holds[:n-1]
	}
}

// warmStart restores the warm state of this run's key, when there is one
// that restores; done is false when the run is to boot.
func (r *run) warmStart(ctx context.Context, spec vm.BootSpec) (done bool, err error) {
	st, ok := r.opts.Warm.Lookup(r.warmKey)
	if !ok {
		r.came = "cold: no saved state for this key yet; this run saves one"
		return false, nil
	}
	if !r.hold(st.Domain) {
		r.came = "cold: the saved state is in use by another run (domain " + st.Domain + ")"
		r.opts.step("warning: %s", r.came)
		return false, nil
	}
	ws := st.WarmState
	spec.Warm = &ws
	m, err := r.restore(ctx, spec)
	if err == nil {
		r.machine, r.env, r.accel = m, m.Env.ID, string(m.Type)
		r.came = fmt.Sprintf("warm: restored the state saved %s (key %s)", st.Created.Format(time.RFC3339), r.warmKey[:12])
		r.opts.step("warm start: %s", strings.TrimPrefix(r.came, "warm: "))
		return true, nil
	}
	if ctx.Err() != nil {
		return true, err
	}
	r.unhold()
	// Never a wrong environment: a state that does not restore is
	// dropped, and this run boots cold (and saves a fresh one).
	if nameTaken(err) {
		// Another program holds its domain name.
		r.came = "cold: the saved state is in use by another run (" + report.FirstLine(err.Error()) + ")"
	} else {
		r.came = "cold: the saved state did not restore (" + report.FirstLine(err.Error()) + "); it was removed"
		_ = r.opts.Warm.Remove(r.warmKey)
	}
	r.opts.step("warning: %s", r.came)
	r.log().Warn("warm restore failed", "key", r.warmKey, "err", err)
	return false, nil
}

// restore boots from a saved guest; see reap for a name that is taken.
func (r *run) restore(ctx context.Context, spec vm.BootSpec) (*vm.Machine, error) {
	m, err := vm.Boot(ctx, r.opts.VM, spec)
	if r.reapedFor(ctx, err) {
		return vm.Boot(ctx, r.opts.VM, spec)
	}
	return m, err
}

// reapedFor reports whether a boot that failed because its domain name
// was taken is worth trying again: reap removed a dead run's domain.
func (r *run) reapedFor(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && nameTaken(err) && r.reap(ctx)
}

// reap removes what dead runs of this state directory left behind, as
// `envctl gc` does (it never touches a live run's domain), and reports
// whether a domain went. A restored domain is not AUTODESTROY, so one whose
// envctl was killed outright keeps running under the saved name.
func (r *run) reap(ctx context.Context) bool {
	done, _, err := vm.GC(ctx, r.opts.VM)
	if !slices.ContainsFunc(done, func(a vm.Action) bool { return a.Kind == vm.KindDomain }) {
		if err != nil {
			r.log().Warn("gc for a taken domain name", "err", err)
		}
		return false
	}
	r.notes = append(r.notes, fmt.Sprintf("the saved guest's domain name was taken by a run that died; removed what dead runs left behind first (%d domains, volumes and directories, as `envctl gc` does)", len(done)))
	r.opts.step("removed what dead runs of this state directory left behind (%d things)", len(done))
	return true
}

func nameTaken(err error) bool {
	var nt *vm.NameTakenError
	return errors.As(err, &nt)
}

// bootKey is the key of the post-boot states this run can share: what
// determines the guest up to the moment SSH first answers.
func (r *run) bootKey() string {
	vmo, im := r.opts.VM, r.cell.Image
	return warm.Key("post-boot",
		"image="+im.Digest+" kernel="+im.Kernel+" initrd="+im.Initrd,
		fmt.Sprintf("vm=%d cpus %d memory %d disk", r.cell.VM.CPUs, r.cell.VM.Memory, r.cell.VM.Disk),
		"uri="+vmo.URI, "accel="+string(vmo.Accel), "network="+string(vmo.Network), "kernel-args="+vmo.KernelArgs,
		"seed="+string(vmo.Seed))
}

// sharedBoot starts from a post-boot state of this image and VM shape,
// or boots and saves one for the cells after it; either way the artifact
// disk is hot-plugged after. With every slot in use it boots as usual.
func (r *run) sharedBoot(ctx context.Context, spec vm.BootSpec) error {
	key := r.bootKey()
	why := strings.TrimPrefix(r.came, "cold: ")
	for i := range warm.BootSlots {
		name := warm.SlotDomain(key, i)
		if !r.hold(name) {
			continue
		}
		if st, ok := r.opts.Boot.Find(key, name); ok {
			ws := st.WarmState
			s := spec
			s.FromBoot = &ws
			m, err := r.restore(ctx, s)
			if err == nil {
				r.machine, r.env, r.accel = m, m.Env.ID, string(m.Type)
				r.came = fmt.Sprintf("post-boot: %s; restored the post-boot state of this image and VM shape saved %s (key %s, slot %d)", why, st.Created.Format(time.RFC3339), key[:12], i)
				r.opts.step("shared boot: restored the post-boot state saved %s (slot %d)", st.Created.Format(time.RFC3339), i)
				return r.attachArtifacts(ctx)
			}
			if ctx.Err() != nil {
				return err
			}
			if nameTaken(err) {
				r.unhold()
				continue // a program that does not hold the name has it
			}
			_ = r.opts.Boot.RemoveDir(st.Dir)
			r.notes = append(r.notes, "the post-boot state did not restore ("+report.FirstLine(err.Error())+"); it was removed")
			r.opts.step("warning: the post-boot state did not restore (%s); it was removed", report.FirstLine(err.Error()))
			r.log().Warn("post-boot restore failed", "dir", st.Dir, "err", err)
		}
		s := spec
		s.Domain, s.LateArtifactDisk = name, true
		err := r.coldBoot(ctx, s)
		if r.reapedFor(ctx, err) {
			err = r.coldBoot(ctx, s)
		}
		if err != nil {
			if nameTaken(err) && ctx.Err() == nil {
				r.unhold()
				continue
			}
			return err
		}
		r.came += "; saved a post-boot state for the cells after it (slot " + strconv.Itoa(i) + ")"
		r.saveBoot(ctx, key)
		return r.attachArtifacts(ctx)
	}
	r.came += "; every post-boot state of this image is in use"
	return r.coldBoot(ctx, spec)
}

// saveBoot keeps the guest as a post-boot state; a failure only means
// the next cell boots too.
func (r *run) saveBoot(ctx context.Context, key string) {
	err := func() error {
		dir, commit, abort, err := r.opts.Boot.BeginIn(key)
		if err != nil {
			return err
		}
		ws, err := r.machine.SaveBoot(ctx, dir)
		if err == nil {
			err = commit(warm.State{WarmState: ws, Profile: r.cell.Profile, Cell: r.cell.Name})
		}
		if err != nil {
			abort()
			return err
		}
		if gone, err := r.opts.Boot.Prune(warm.MaxBootStates); err != nil || len(gone) > 0 {
			r.log().Info("post-boot states pruned", "removed", gone, "err", err)
		}
		return nil
	}()
	if err != nil {
		r.notes = append(r.notes, "no post-boot state saved: "+report.FirstLine(err.Error()))
		r.log().Warn("post-boot state not saved", "err", err)
		return
	}
	r.sub("boot.save", r.machine.Timings["save.boot"])
}

func (r *run) attachArtifacts(ctx context.Context) error {
	if err := r.machine.AttachArtifactDisk(ctx); err != nil {
		return err
	}
	if d, ok := r.machine.Timings["attach"]; ok {
		r.sub("boot.attach", d)
	}
	return nil
}

// coldBoot boots the image.
func (r *run) coldBoot(ctx context.Context, spec vm.BootSpec) error {
	vmo := r.opts.VM
	m, err := vm.Boot(ctx, vmo, spec)
	// Software emulation now and then hangs a boot for good; a fresh VM
	// almost always comes up, so a hung boot gets one more try.
	var be *vm.BootError
	if errors.As(err, &be) && be.Hung && ctx.Err() == nil {
		r.notes = append(r.notes, fmt.Sprintf("the first VM (%s) hung: %s; a fresh one was booted (its console: %s)", be.Env, be.Reason, be.LogPath))
		r.opts.step("warning: %s hung while booting; booting a fresh VM once more", be.Env)
		m, err = vm.Boot(ctx, vmo, spec)
	}
	if m != nil {
		r.env = m.Env.ID
		r.accel = string(m.Type)
	}
	if err != nil {
		return err
	}
	r.machine = m
	return nil
}

// testRefs are the image names the guest uses: always from the host's
// registry, reached through an SSH remote forward on the guest's
// loopback, so the guest needs no network.
func (r *run) testRefs() (registryHost, pause, volume, workload string) {
	host := fmt.Sprintf("localhost:%d", testimages.GuestPort)
	if r.opts.TestImages == UpstreamImages {
		up := testimages.Upstream
		ref := func(s string) string { repo, _ := testimages.UpstreamRepo(s); return testimages.GuestRef(repo) }
		return host, ref(up.Pause), ref(up.Artifact), ref(up.Workload)
	}
	return host, testimages.GuestRef(testimages.PauseRepo),
		testimages.GuestRef(testimages.ArtifactRepo), testimages.GuestRef(testimages.WorkloadRepo)
}

// registry serves the test images on the guest's loopback: built
// in-process (local), or pulled by the host from upstream (upstream).
func (r *run) registry(ctx context.Context) (func(), error) {
	start := time.Now()
	var reg *testimages.Registry
	var err error
	if r.opts.TestImages == UpstreamImages {
		up := testimages.Upstream
		reg, err = testimages.ServeUpstream(ctx, up.Artifact, up.Workload, up.Pause)
	} else {
		reg, err = testimages.Serve(ctx, r.opts.Workload)
	}
	if _, upstream := r.cell.Test.UpstreamFile(); upstream && err == nil {
		if err = reg.PushNamed(ctx, r.opts.Workload, r.upstreamNames()); err != nil {
			_ = reg.Close()
		}
	}
	if err != nil {
		return nil, fault.Infraf("test registry: %w", err)
	}
	fwd, err := r.machine.SSH.ForwardRemote(fmt.Sprintf("127.0.0.1:%d", testimages.GuestPort), reg.Addr)
	if err != nil {
		_ = reg.Close()
		return nil, fault.AsInfra(err)
	}
	r.sub("test.registry", time.Since(start))
	return func() { _ = fwd.Close(); _ = reg.Close() }, nil
}

func (r *run) install(ctx context.Context) error {
	if r.machine.Warm() {
		r.opts.step("warm start: %s is installed and CRI-O is running in the restored guest", r.cell.VersionList())
		return nil
	}
	host, pause, _, _ := r.testRefs()
	r.opts.step("installing %s", r.cell.VersionList())
	t, err := crio.Install(ctx, r.machine.SSH, crio.Stack{Parts: r.parts, RegistryHost: host, PauseImage: pause, FromDisk: r.disk.Path != ""})
	r.sub("install.upload", t.Upload)
	if r.disk.Path != "" && t.Via != crio.ViaDisk && t.Via != "" {
		r.notes = append(r.notes, "files went in over "+t.Via)
		r.opts.step("warning: files went in over %s", t.Via)
	}
	r.sub("install.configure", t.Configure)
	r.sub("install.crio-start", t.Start)
	return err
}

func (r *run) verify(ctx context.Context) error {
	if err := saveStack(r.machine.Env, r.parts); err != nil {
		r.log().Warn("save the installed stack", "env", r.env, "err", err)
	}
	installed, err := crio.Verify(ctx, r.machine.SSH, crio.Stack{Parts: r.parts})
	r.verified = installed
	if err == nil {
		r.opts.step("versions verified against the lock: %s", r.cell.VersionList())
	}
	return err
}

func (r *run) runTest(ctx context.Context) error {
	if r.cell.Test.Own() {
		_, _, volume, workload := r.testRefs()
		r.opts.step("running %s", profiles.TestImageVolume)
		start := time.Now()
		res, err := imagevolume.Run(ctx, r.machine.SSH, imagevolume.Config{VolumeImage: volume, WorkloadImage: workload, Dir: "/root/envctl-test"})
		r.sub("test.envctl", time.Since(start))
		r.test, r.tested = res, true
		if err != nil {
			return fault.AsInfra(err)
		}
	}
	if file, ok := r.cell.Test.UpstreamFile(); ok {
		r.opts.step("running upstream's test/%s from CRI-O %s's own tree", file, r.cell.Versions()["cri-o"])
		start := time.Now()
		out, err := bats.Run(ctx, r.machine.SSH, r.upstreamConfig(file))
		r.sub("test.upstream", time.Since(start))
		r.upstream = out
		if out.Output != "" {
			if r.test.Artifacts == nil {
				r.test.Artifacts = map[string]string{}
			}
			r.test.Artifacts["upstream-bats.txt"] = out.Output
		}
		if err != nil {
			return fault.AsInfra(err)
		}
		r.test.Steps = append(r.test.Steps, out.Steps...)
		r.tested = true
	}
	return nil
}

// checkUpstreamFile refuses, before any VM, a bats file that the locked
// CRI-O test tree does not have.
func (r *run) checkUpstreamFile() error {
	file, ok := r.cell.Test.UpstreamFile()
	if !ok {
		return nil
	}
	tree, ok := r.tools[lock.ToolCRIOTests].Binaries[artifacts.CRIOTestTar]
	if !ok {
		return nil
	}
	names, err := artifacts.TarNames(tree, ".bats")
	if err != nil {
		return fault.Infraf("--test upstream:%s: read CRI-O's test tree: %w", file, err)
	}
	if slices.Contains(names, file) {
		return nil
	}
	slices.Sort(names)
	return fault.Inputf("--test upstream:%s: CRI-O %s's test tree has no %s; its bats files are %s", file, r.cell.Versions()["cri-o"], file, strings.Join(names, ", "))
}

// upstreamNames are the image names the locked CRI-O tree's helpers
// import (common.sh's IMAGES) and the artifact oci_volumes.bats pulls.
func (r *run) upstreamNames() testimages.Names {
	if r.names == nil {
		n := r.readUpstreamNames()
		r.names = &n
	}
	return *r.names
}

func (r *run) readUpstreamNames() testimages.Names {
	n := testimages.UpstreamNames
	if tree, ok := r.tools[lock.ToolCRIOTests].Binaries[artifacts.CRIOTestTar]; ok {
		if common, err := artifacts.ReadTarFile(tree, "common.sh"); err == nil {
			if imgs := testimages.ParseImagesArray(string(common)); len(imgs) > 0 {
				n.Workloads = nil
				for _, img := range imgs {
					if strings.Contains(img, "/pause:") {
						n.Pause = img
					} else {
						n.Workloads = append(n.Workloads, img)
					}
				}
			}
		}
	}
	return n
}

func (r *run) upstreamConfig(file string) bats.Config {
	stack := crio.Stack{Parts: r.parts}
	tool := func(name, file string) guest.Upload {
		fl := r.tools[name]
		p := fl.Binaries[file]
		return guest.Upload{Local: p, SHA256: fl.Digests[p]}
	}
	return bats.Config{
		File: file, Dir: "/root/envctl-upstream",
		Tree: tool(lock.ToolCRIOTests, artifacts.CRIOTestTar), Copyimg: tool(lock.ToolCRIOTests, artifacts.Copyimg), Bats: tool(lock.ToolBats, artifacts.BatsDeb),
		MirrorConf: r.upstreamNames().MirrorConf(),
		CRIO:       crio.BinDir + "/crio", Pinns: crio.BinDir + "/pinns", Crictl: crio.BinDir + "/crictl",
		Conmon: stack.ConmonPath(), Runtime: stack.Runtime(), RuntimePath: stack.RuntimePath(), CNIPluginDir: stack.CNIPluginDir(),
	}
}

// suites are the suites that ran, each tallied.
func (r *run) suites() []report.SuiteResult {
	var out []report.SuiteResult
	if r.cell.Test.Own() {
		out = append(out, report.Tally(report.SuiteEnvctl, "", r.test.Steps))
	}
	if file, ok := r.cell.Test.UpstreamFile(); ok && r.upstream.Steps != nil {
		out = append(out, report.Tally(report.SuiteUpstream, file, r.test.Steps))
	}
	return out
}

func (r *run) failed() bool {
	for _, s := range r.test.Steps {
		if s.Status == report.Fail {
			return true
		}
	}
	return false
}

// collect keeps what explains a failure: CRI-O's journal, crictl's view,
// the CRI-O configuration, the test's own files and the serial console.
func (r *run) collect(ctx context.Context) {
	if r.machine == nil {
		return
	}
	dir := r.opts.ResultsDir
	if dir == "" {
		dir = filepath.Join(r.opts.VM.Store.ResultsDir(), r.env+"-"+time.Now().UTC().Format("20060102T150405"))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		r.log().Warn("results directory", "dir", dir, "err", err)
		return
	}
	r.results = dir
	files := map[string]string{}
	for k, v := range r.test.Artifacts {
		files[k] = v
	}
	if g := r.machine.SSH; g != nil {
		cctx, cancel := vm.TeardownContext(ctx, 30*time.Second)
		defer cancel()
		for name, cmd := range map[string]string{
			"crio-journal.log": "journalctl -u crio --no-pager -o short-precise",
			"crictl-ps.txt":    "crictl ps -a; crictl pods; crictl images",
			"crio-config.txt":  "cat " + crio.ConfigPath,
		} {
			if out, err := g.Output(cctx, cmd); err == nil || out != "" {
				files[name] = out
			}
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			r.log().Warn("results", "file", name, "err", err)
		}
	}
	if err := r.machine.SaveConsole(ctx, filepath.Join(dir, "console.log")); err != nil {
		r.log().Debug("results: console", "err", err)
	}
}

// finish keeps the machine or tears it down.
func (r *run) finish(ctx context.Context) error {
	m := r.machine
	if r.opts.Keep && ctx.Err() == nil {
		if err := m.Keep(); err != nil {
			return err
		}
		r.kept = true
		r.opts.step("kept %s: `envctl ssh %s` to log in, `envctl down %s` to remove it", m.Env.ID, m.Env.ID, m.Env.ID)
		return nil
	}
	r.opts.step("tearing down %s", m.Env.ID)
	tctx, cancel := vm.TeardownContext(ctx, 2*time.Minute)
	defer cancel()
	return m.Teardown(tctx)
}

// report assembles the report from what the phases produced.
func (r *run) report() *report.Report {
	rep := &report.Report{
		Profile: r.cell.Profile, Cell: r.cell.Name, Test: r.cell.Test, Env: r.env, Accel: r.accel, Host: r.opts.VM.URI,
		Started: r.start.UTC(), Warnings: r.warnings, Phases: r.phases, Results: r.results, Kept: r.kept,
		Steps: r.test.Steps, Notes: r.notes, Start: r.came, Image: r.opts.Image,
	}
	for _, c := range r.cell.Components {
		rc := report.Component{Role: c.Role, Name: c.Component, Locked: c.Version, Source: c.Source, Label: c.Label()}
		for _, b := range r.builds {
			if b.Component == c.Component && b.CRIAPI != "" && rc.CRIAPI == "" {
				rc.CRIAPI = strings.Fields(b.CRIAPI)[0]
			}
		}
		for _, it := range r.verified {
			if it.Role == c.Role {
				rc.Actual, rc.Verified, rc.Commit = it.Actual, it.OK, it.Commit
			}
		}
		rep.Components = append(rep.Components, rc)
	}
	switch {
	case r.err != nil:
		rep.Verdict, rep.Error, rep.ErrorClass = report.VerdictError, r.err.Error(), fault.ClassOf(r.err)
		if rep.ErrorClass == fault.Unclassified {
			rep.ErrorClass = fault.Infra
		}
	case !r.tested:
		rep.Verdict = report.VerdictReady
	default:
		rep.Suites = r.suites()
		rep.Verdict, rep.Disagreement = report.Overall(rep.Suites), report.Disagree(rep.Suites)
		rep.Diagnosis = r.diagnose(rep.Verdict)
	}
	rep.Seconds = time.Since(r.start).Round(100 * time.Millisecond).Seconds()
	return rep
}

// diagnose explains a run that did not pass: the predicted findings whose
// symptom the failed steps show, and, when every test was skipped, the
// stack's own predicted incompatibilities next to upstream's reason.
func (r *run) diagnose(v report.Verdict) []compat.Finding {
	switch v {
	case report.VerdictFail:
		var outs []string
		for _, s := range r.test.Steps {
			if s.Status == report.Fail {
				outs = append(outs, s.Output, s.Message)
			}
		}
		return compat.Diagnose(strings.Join(outs, "\n"), r.warnings)
	case report.VerdictNotTested:
		var out []compat.Finding
		for _, w := range r.warnings {
			if !w.Skips {
				out = append(out, w)
			}
		}
		return out
	}
	return nil
}

// RunAll runs cells one after another, handing each report to done as it
// finishes. With failFast it stops after the first cell that does not
// pass; it always stops when ctx ends. Every report of a cell that ran is
// returned.
func RunAll(ctx context.Context, cells []lock.LockedCell, opts Options, failFast bool, done func(*report.Report)) []*report.Report {
	var out []*report.Report
	for _, c := range cells {
		if ctx.Err() != nil {
			break
		}
		opts.step("cell %s", c.Name)
		rep, _ := Run(ctx, c, opts)
		out = append(out, rep)
		if done != nil {
			done(rep)
		}
		if failFast && rep.Verdict != report.VerdictPass && rep.Verdict != report.VerdictReady {
			break
		}
	}
	return out
}

// ErrorReport is the report of a cell that could not run at all.
func ErrorReport(cell lock.LockedCell, err error) *report.Report {
	r := &run{cell: cell, start: time.Now(), err: err}
	return r.report()
}
