package main

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/libvirt"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/warm"
)

// vmFlags are the flags of every command that makes or finds VMs.
type vmFlags struct {
	connect     []string
	accel       vm.Accel
	network     vm.Network
	bootTimeout time.Duration
	seed        vm.SeedMode
	kernelArgs  string
}

func (f *vmFlags) register(cmd *cobra.Command, boots bool) {
	f.accel, f.network, f.seed = vm.AccelAuto, vm.NetworkUser, vm.SeedAuto
	cmd.Flags().StringSliceVar(&f.connect, "connect", nil, "libvirt URI: qemu:///system, qemu:///session or qemu+ssh://user@host[:port]/system[?keyfile=F&known_hosts=F]; repeat it to spread matrix cells over hosts (default: qemu:///system as root or for a user it accepts, else qemu:///session, started when it does not run)")
	if !boots {
		return
	}
	cmd.Flags().Var(&f.accel, "accel", "accelerator: kvm, tcg or auto (KVM only where it really works)")
	cmd.Flags().Var(&f.network, "network", "network: user (QEMU user-mode, SSH on 127.0.0.1) or nat (libvirt's default network)")
	cmd.Flags().DurationVar(&f.bootTimeout, "boot-timeout", 5*time.Minute, "how long to wait for SSH after boot (TCG needs minutes)")
	cmd.Flags().Var(&f.seed, "cloud-init", "seed handling: auto (fast path when the image has it), full (run cloud-init) or fast")
	cmd.Flags().StringVar(&f.kernelArgs, "kernel-args", "", "extra kernel command line for images booted directly (e.g. mitigations=off)")
	_ = cmd.RegisterFlagCompletionFunc("accel", fixedCompletion("auto", "kvm", "tcg"))
	_ = cmd.RegisterFlagCompletionFunc("network", fixedCompletion("user", "nat"))
	_ = cmd.RegisterFlagCompletionFunc("cloud-init", fixedCompletion("auto", "full", "fast"))
}

func (a *app) vmOptions(f *vmFlags) vm.Options {
	return vm.Options{
		URI: f.connect[0], Accel: f.accel, Network: f.network, BootTimeout: f.bootTimeout, Seed: f.seed,
		KernelArgs: f.kernelArgs, Store: a.store(), Connect: libvirt.Connect, Log: a.log, Step: a.step,
	}
}

// runFlags are the flags of the commands that run cells (up, matrix).
type runFlags struct {
	vm         vmFlags
	keep       keepMode
	noTest     bool
	noInstall  bool
	locked     bool
	junit      string
	results    string
	testImages cellrun.TestImages
	serial     bool
	timeout    time.Duration
	allowMoved bool
	imageStore string
	test       profiles.TestName
	upload     cellrun.Upload
	cold       bool
}

func (f *runFlags) register(cmd *cobra.Command) {
	f.vm.register(cmd, true)
	cmd.Flags().BoolVar(&f.cold, "cold", false, "boot and install from scratch even when a warm state (a saved guest with this lock's stack installed) exists")
	cmd.Flags().Var(newEnum(&f.upload, cellrun.UploadDisk, cellrun.Uploads, "an upload method"), "upload", "how the locked files reach the guest: disk (one read-only artifact disk, built once per set of files and cached) or sftp (file by file over SSH)")
	cmd.Flags().BoolVar(&f.noTest, "no-test", false, "boot and install, but skip the test")
	cmd.Flags().Var(&f.test, "test", "the test suites to run instead of the profile's test: image-volume-lifecycle (envctl's own), upstream (CRI-O's own test/oci_volumes.bats from the locked CRI-O tree), upstream:FILE.bats, both, or none")
	cmd.Flags().BoolVar(&f.noInstall, "no-install", false, "only boot the VM (no components, no test)")
	cmd.Flags().BoolVar(&f.locked, "locked", false, "refuse a missing or stale lock instead of writing one (CI mode)")
	cmd.Flags().StringVar(&f.junit, "junit", "", "write a JUnit XML report to this file")
	cmd.Flags().StringVar(&f.results, "results-dir", "", "where to keep logs of a failed run (default: a new directory under the state dir)")
	cmd.Flags().Var(newEnum(&f.testImages, cellrun.LocalImages, cellrun.TestImageSources, "a test image source"), "test-images", "test images: local (built in-process) or upstream (quay.io and registry.k8s.io images pulled by the host); either way the guest pulls them from the host through SSH and has no network")
	cmd.Flags().BoolVar(&f.serial, "serial-cases", false, "run the image-volume test's four cases one after another instead of side by side (slower; to compare, or to rule concurrency out)")
	cmd.Flags().BoolVar(&f.allowMoved, "allow-moved-tags", false, "when writing a lock on first use, accept Go module versions whose tag moved upstream (see `envctl lock --help`)")
	registerImageStore(cmd, &f.imageStore)
	cmd.Flags().DurationVar(&f.timeout, "timeout", 0, "bound the whole run (e.g. 30m); on expiry the VMs are torn down and the exit is 3 (each phase also has its own limit)")
}

// runOptions turns flags into pipeline options and checks them, before
// anything is fetched, built or booted.
func (a *app) runOptions(ctx context.Context, f *runFlags) (cellrun.Options, error) {
	fetch, err := a.fetcher()
	if err != nil {
		return cellrun.Options{}, err
	}
	imgs, err := a.images()
	if err != nil {
		return cellrun.Options{}, err
	}
	c, err := a.cache()
	if err != nil {
		return cellrun.Options{}, err
	}
	o := cellrun.Options{
		Cache: c, Warm: &warm.Store{Dir: filepath.Join(c.Dir, cache.TreeDirs[cache.EntryWarm]), Cache: c},
		Boot: &warm.Store{Dir: filepath.Join(c.Dir, cache.TreeDirs[cache.EntryBoot]), Cache: c}, Cold: f.cold,
		VM: a.vmOptions(&f.vm), Fetch: fetch, Images: imgs, TestImages: f.testImages, SerialCases: f.serial, Upload: f.upload,
		Keep: f.keep == keepAlways, KeepOnFailure: f.keep == keepOnFailure, ResultsDir: f.results, Log: a.log, Step: a.step, Ledger: a.ledger(), Deadman: f.timeout,
	}
	switch {
	case f.noInstall:
		o.Stop = cellrun.AfterBoot
	case f.noTest:
		o.Stop = cellrun.AfterInstall
	case f.testImages == cellrun.LocalImages:
		self, err := os.Executable()
		if err != nil {
			return o, err
		}
		if o.Workload, err = testimages.WorkloadBinary(ctx, fetch.Cache.Dir, self); err != nil {
			return o, fault.Infraf("test images: %w", err)
		}
	}
	return o, nil
}

// registerImageStore adds --image-store, the registry repository that
// holds base images by their disk digest (image_store in the config,
// ENVCTL_IMAGE_STORE).
func registerImageStore(cmd *cobra.Command, store *string) {
	cmd.Flags().StringVar(store, "image-store", "", "registry repository (HOST[:PORT]/PATH) to pull the locked base image from, by its digest, when it is not in the cache (image_store in the config, ENVCTL_IMAGE_STORE)")
}

func lockMode(locked bool) cellrun.LockMode {
	if locked {
		return cellrun.Locked
	}
	return cellrun.LockOnFirstUse
}

// resolve turns a profile into locked cells, writing the lock on first
// use and saying so.
func (a *app) resolve(ctx context.Context, p *profiles.Profile, mode cellrun.LockMode, allowMoved bool, store string, cells ...string) (*cellrun.Resolution, error) {
	res, err := a.resolveCells(ctx, p, mode, allowMoved, store, cells...)
	if err != nil {
		return nil, err
	}
	src := a.imageSources(store)
	st, err := a.images()
	if err != nil {
		return nil, err
	}
	res.Adopt = a.profiles().Adopt
	err = res.ObtainImage(ctx, p, mode, func(ctx context.Context, want lock.Image) (images.Obtained, error) {
		return st.Obtain(ctx, want, src)
	})
	if err != nil {
		return nil, err
	}
	if notice := res.RepinNotice(p.LockPath()); notice != nil {
		a.step("%s", strings.Join(notice, "\n    "))
	}
	return res, nil
}

// resolveCells reads the profile's lock (writing it on first use) and
// resolves its cells, without making the image present: resolve's first
// half, and all of `fetch --skip-image`.
func (a *app) resolveCells(ctx context.Context, p *profiles.Profile, mode cellrun.LockMode, allowMoved bool, store string, cells ...string) (*cellrun.Resolution, error) {
	locker, err := a.locker(allowMoved, a.newImage(a.imageSources(store)))
	if err != nil {
		return nil, err
	}
	res, err := cellrun.Resolve(ctx, p, a.arch(), mode, locker, cells...)
	if err != nil {
		return nil, err
	}
	if res.Wrote {
		a.step("wrote %s on first use; commit it so every machine runs the same artifacts", p.LockPath())
	}
	return res, nil
}

// keepMode is --keep's value: never (the default), always (a bare --keep)
// or on-failure (only the VM of a failed run stays, to look into).
type keepMode string

const (
	keepNever     keepMode = "never"
	keepAlways    keepMode = "always"
	keepOnFailure keepMode = "on-failure"
)

func (k *keepMode) String() string { return string(cmp.Or(*k, keepNever)) }

func (k *keepMode) Set(s string) error {
	switch strings.ToLower(s) {
	case "always", "true", "1", "yes":
		*k = keepAlways
	case "never", "false", "0", "no", "":
		*k = keepNever
	case "on-failure", "onfailure", "failure":
		*k = keepOnFailure
	default:
		return fault.Inputf("%q is not a keep mode; use always (a bare --keep), on-failure or never", s)
	}
	return nil
}

func (k *keepMode) Type() string { return "mode" }

// registerKeep adds --keep to a command that runs cells.
func registerKeep(cmd *cobra.Command, k *keepMode, what string) {
	cmd.Flags().Var(k, "keep", what+": a bare --keep keeps it always, --keep=on-failure only when the run failed (a failed test or an error after the boot); then 'envctl ssh ENV', 'envctl logs ENV', 'envctl down ENV'")
	cmd.Flags().Lookup("keep").NoOptDefVal = string(keepAlways)
	_ = cmd.RegisterFlagCompletionFunc("keep", fixedCompletion("always", "on-failure", "never"))
}
