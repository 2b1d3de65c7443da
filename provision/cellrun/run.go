package cellrun

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artdisk"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/bats"
	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/imagevolume"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/start"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
)

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
	started  *start.Started    // how the guest came up (nil before boot)
	releases []func()          // cache entries held while the run lives
	held     []string          // the paths held: a kept VM pins them
	deadman  time.Time         // when the restored guest's dead-man timer was last set
	names    *testimages.Names // upstream's image names, read once
	warnings []compat.Finding
	machine  *vm.Machine
	verified []crio.Installed
	proof    crio.Proof // how verify knew the files (once it ran)
	testCPU  *report.CPUUse
	// own and upstream are each suite's result; tested is set once a
	// suite ran.
	own      imagevolume.Result
	upstream bats.Outcome
	tested   bool
	said     time.Duration // when the verdict was said, from the start (0: not yet)
	results  string
	kept     bool
	keepIt   bool            // decided when the run ends: Keep, or KeepOnFailure and it failed
	arming   chan error      // the dead-man timer being set (nil: not now)
	runCtx   context.Context //nolint:containedctx // the run's context, for work that outlives a phase
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
	if r.started != nil {
		r.started.Release()
	}
	for _, release := range r.releases {
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

func (r *run) all(ctx context.Context) (err error) {
	r.runCtx = ctx
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
		err = r.end(ctx, err)
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
	if err := r.awaitDeadman(); err != nil {
		return err
	}
	if r.started.WarmKey != "" && r.started.How != start.Warm {
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

// end closes a booted run: its logs collected on failure, its verdict
// said, the dead-man timer's setting awaited, and the VM kept or torn
// down. It returns the run's error.
func (r *run) end(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = stopped(ctx, err)
	}
	if (err != nil || r.failed()) && !vm.Urgent(ctx) {
		_ = r.phase(ctx, PhaseCollect, func(context.Context) error { r.collect(ctx); return nil })
	}
	if err == nil && r.tested {
		// The verdict is known before the VM is gone: say it now. The
		// run still ends only once the teardown is done.
		r.said = time.Since(r.start)
		r.opts.step("verdict: %s", r.report().Summary())
	}
	if aerr := r.awaitDeadman(); aerr != nil && err == nil {
		err = aerr
	}
	r.keepIt = r.opts.Keep || r.opts.KeepOnFailure && (err != nil || r.failed())
	if terr := r.phase(ctx, PhaseTeardown, func(context.Context) error { return r.finish(ctx) }); terr != nil {
		if err == nil {
			err = terr
		} else {
			r.log().Warn("teardown", "env", r.started.Env, "err", terr)
		}
	}
	return err
}

func (r *run) log() *slog.Logger { return cmp.Or(r.opts.Log, slog.Default()) }

func (r *run) fetch(ctx context.Context, img *images.Files) error {
	if r.opts.Stop != AfterBoot {
		got, err := Fetch(ctx, r.cell, r.opts.Fetch, r.hold)
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
	if err != nil {
		return err
	}
	return r.hold(f.Disk, f.Kernel, f.Initrd)
}

// hold keeps what the run uses from cache gc for as long as the run
// lives (images/cache holds), and checks it again under the hold: what
// was found before may have been removed or changed since, and nothing
// unchecked is used. Run gives the holds back at its end.
func (r *run) hold(paths ...string) error {
	if r.opts.Cache == nil {
		return nil
	}
	release, err := r.opts.Cache.HoldChecked(paths...) // "" and paths outside the cache are ignored
	if err != nil {
		return err
	}
	r.releases = append(r.releases, release)
	r.held = append(r.held, paths...)
	return nil
}

// pin keeps what a kept VM boots from (the files this run held, and the
// saved states it was restored from) for as long as its environment
// exists: cache gc and image prune leave them to it, and `envctl down` or
// `envctl gc` (once its domain is gone) lets them go.
func (r *run) pin(envDir string) {
	if r.opts.Cache == nil {
		return
	}
	paths := append(slices.Clone(r.held), r.started.Uses...)
	if err := r.opts.Cache.Pin(envDir, paths...); err != nil {
		r.log().Warn("pin what the kept VM boots from", "env", envDir, "err", err)
		r.opts.step("warning: %v: cache gc may remove what the kept VM boots from", err)
	}
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
	if err := r.hold(d.Path); err != nil {
		return err
	}
	r.sub("fetch.artifact-disk", time.Since(start))
	r.log().Debug("artifact disk", "path", d.Path, "bytes", d.Size, "built", d.Built, "files", len(uploads))
	return nil
}

// boot brings the guest up the fastest way that gives the right guest
// (provision/start): a warm state, a shared post-boot state, or the image.
func (r *run) boot(ctx context.Context, img images.Files) error {
	host, pause, _, _ := r.testRefs()
	st, err := start.Start(ctx, start.Spec{
		VM: r.opts.VM,
		Boot: vm.BootSpec{
			Profile: r.cell.Profile, Cell: r.cell.Name, CPUs: r.cell.VM.CPUs,
			Memory: uint64(r.cell.VM.Memory), Disk: uint64(r.cell.VM.Disk), Image: img,
			Keep: r.keepable(), ArtifactDisk: r.disk.Path, ArtifactSerial: artdisk.Serial,
		},
		Guest: start.Guest{Image: r.cell.Image, CPUs: r.cell.VM.CPUs, Memory: uint64(r.cell.VM.Memory), Disk: uint64(r.cell.VM.Disk),
			VM: r.opts.VM, Cell: r.cell.Hash, Artifacts: r.disk.Digest.String(), Registry: host, Pause: pause},
		Warm: r.opts.Warm, Shared: r.opts.Boot, Cold: r.opts.Cold, Keep: r.keepable(), Tests: r.opts.Stop == Full,
		Log: r.opts.Log, Step: r.opts.Step,
	})
	r.started, r.machine = st, st.Machine
	r.notes = append(r.notes, st.Notes...)
	for _, t := range st.Timings {
		r.sub(t.Name, t.Took)
	}
	if err != nil || st.How == start.Cold {
		return err // a booted domain is AUTODESTROY: it dies with this process
	}
	// A restored domain is not AUTODESTROY: its dead-man timer is set
	// beside the install and the drift check (one SSH session each, at
	// once), and waited for before anything is saved or tested.
	armed := make(chan error, 1)
	r.arming = armed
	actx := r.runCtx // the run's, not this phase's: the phase ends first
	go func() {
		ctx, cancel := context.WithTimeout(actx, time.Minute)
		defer cancel()
		armed <- r.armDeadman(ctx)
	}()
	return nil
}

// awaitDeadman waits for the dead-man timer that boot began to set.
func (r *run) awaitDeadman() error {
	if r.arming == nil {
		return nil
	}
	err := <-r.arming
	r.arming = nil
	return err
}

// deadmanPeriod is how long a restored guest lives without a renewal.
func (r *run) deadmanPeriod() time.Duration { return cmp.Or(r.opts.Deadman, DefaultDeadman) }

// armDeadman sets a restored guest's dead-man timer (vm.Machine): killed
// outright, this envctl leaves the guest running for at most the period.
func (r *run) armDeadman(ctx context.Context) error {
	if err := r.machine.ArmDeadman(ctx, r.deadmanPeriod()); err != nil {
		return err
	}
	r.deadman = time.Now()
	return nil
}

// renewDeadman sets the timer again once a third of its period has gone:
// a live run renews it long before it expires.
func (r *run) renewDeadman(ctx context.Context) {
	if r.arming != nil {
		return // being set right now
	}
	if r.deadman.IsZero() || time.Since(r.deadman) < r.deadmanPeriod()/3 {
		return
	}
	if err := r.armDeadman(ctx); err != nil {
		r.log().Warn("renew the dead-man timer", "err", err)
	}
}

// saveWarm keeps the verified guest for the next run with the same key;
// a failed save is a note: the run still tests, and the next run starts
// another way.
func (r *run) saveWarm(ctx context.Context) error {
	if !r.deadman.IsZero() {
		// No saved guest carries a timer: the next run sets its own.
		if err := r.machine.DisarmDeadman(ctx); err != nil {
			return err
		}
		defer func() {
			if err := r.armDeadman(ctx); err != nil {
				r.log().Warn("set the dead-man timer again", "err", err)
			}
		}()
	}
	verified, _ := json.Marshal(r.verified) // plain fields: it cannot fail
	note, took := r.started.SaveWarm(ctx, r.opts.Warm, r.cell.Profile, r.cell.Name, verified)
	if note != "" {
		r.notes = append(r.notes, note)
		return nil
	}
	r.sub("save.warm", took)
	r.opts.step("saved a warm state for the next run with this lock (key %s)", r.started.WarmKey[:12])
	return nil
}

func (r *run) install(ctx context.Context) error {
	if r.started.How == start.Warm {
		r.opts.step("warm start: %s is installed and CRI-O is running in the restored guest", r.cell.VersionList())
		return nil
	}
	host, pause, _, _ := r.testRefs()
	r.opts.step("installing %s", r.cell.VersionList())
	stack := crio.Stack{Parts: r.parts, RegistryHost: host, PauseImage: pause, FromDisk: r.disk.Path != ""}
	if r.started.Accel == string(vm.DomainKVM) {
		stack.Poll = 200 * time.Millisecond // a crictl costs little under KVM
	}
	t, err := crio.Install(ctx, r.machine.SSH, stack)
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
		r.log().Warn("save the installed stack", "env", r.started.Env, "err", err)
	}
	// A warm guest is the saved one bit for bit (its seal was checked
	// before the restore), and its files were hashed, and its versions
	// asked, before it was saved: the state's sealed record says what
	// they gave.
	r.proof = crio.ProofDigests
	var recorded []crio.Installed
	if r.started.How == start.Warm {
		r.proof = crio.ProofSeal
		if len(r.started.Verified) > 0 && json.Unmarshal(r.started.Verified, &recorded) == nil && len(recorded) > 0 {
			r.proof = crio.ProofSealRecord
		}
	}
	installed, err := crio.Verify(ctx, r.machine.SSH, crio.Stack{Parts: r.parts}, r.proof, recorded...)
	r.verified = installed
	if err == nil {
		r.opts.step("versions verified against the lock: %s (%s)", r.cell.VersionList(), r.proof.Describe())
	}
	return err
}

// keepable reports whether the VM may be kept: its domain must outlive
// this process from the boot on.
func (r *run) keepable() bool { return r.opts.Keep || r.opts.KeepOnFailure }

// finish keeps the machine or tears it down.
func (r *run) finish(ctx context.Context) error {
	m := r.machine
	if r.keepIt && ctx.Err() == nil {
		m.Env.Lease = r.opts.Lease
		if err := m.Keep(); err != nil {
			return err
		}
		r.pin(m.Env.Dir)
		r.kept = true
		how := fmt.Sprintf("`envctl ssh %s` to log in, `envctl logs %s` for its logs, `envctl down %s` to remove it", m.Env.ID, m.Env.ID, m.Env.ID)
		if !r.opts.Keep {
			r.notes = append(r.notes, fmt.Sprintf("the failed run's VM %s was kept (--keep=on-failure): %s", m.Env.ID, how))
		}
		r.opts.step("kept %s: %s", m.Env.ID, how)
		return nil
	}
	r.opts.step("tearing down %s", m.Env.ID)
	tctx, cancel := vm.TeardownContext(ctx, 2*time.Minute)
	defer cancel()
	return m.Teardown(tctx)
}
