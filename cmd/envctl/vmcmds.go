package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/report"
)

func init() {
	extraCommands = append(extraCommands, newUpCmd, newStatusCmd, newSSHCmd, newDownCmd, newGCCmd)
}

// vmFlags are the flags of every command that makes VMs.
type vmFlags struct {
	connect     string
	accel       string
	network     string
	bootTimeout time.Duration
	cloudInit   string
	kernelArgs  string
}

func (f *vmFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.connect, "connect", envOr("ENVCTL_CONNECT", "qemu:///system"), "libvirt URI: qemu:///system, qemu:///session or qemu+ssh://host/system")
	cmd.Flags().StringVar(&f.accel, "accel", envOr("ENVCTL_ACCEL", "auto"), "accelerator: kvm, tcg or auto (KVM only where it really works)")
	cmd.Flags().StringVar(&f.network, "network", "user", "network: user (QEMU user-mode, SSH on 127.0.0.1) or nat (libvirt's default network)")
	cmd.Flags().DurationVar(&f.bootTimeout, "boot-timeout", 5*time.Minute, "how long to wait for SSH after boot (TCG needs minutes)")
	cmd.Flags().StringVar(&f.cloudInit, "cloud-init", "auto", "seed handling: auto (fast path when the image has it), full (run cloud-init) or fast")
	cmd.Flags().StringVar(&f.kernelArgs, "kernel-args", os.Getenv("ENVCTL_KERNEL_ARGS"), "extra kernel command line for images booted directly (e.g. mitigations=off)")
	_ = cmd.RegisterFlagCompletionFunc("accel", fixedCompletion("auto", "kvm", "tcg"))
	_ = cmd.RegisterFlagCompletionFunc("network", fixedCompletion("user", "nat"))
	_ = cmd.RegisterFlagCompletionFunc("cloud-init", fixedCompletion("auto", "full", "fast"))
}

func (f *vmFlags) options(a *app) (provision.Options, error) {
	switch f.cloudInit {
	case "auto", "full", "fast":
	default:
		return provision.Options{}, fault.Inputf("--cloud-init %q: use auto, full or fast", f.cloudInit)
	}
	switch f.network {
	case "user", "nat":
	default:
		return provision.Options{}, fault.Inputf("--network %q: use user or nat", f.network)
	}
	switch f.accel {
	case "auto", "kvm", "tcg":
	default:
		return provision.Options{}, fault.Inputf("--accel %q: use kvm, tcg or auto", f.accel)
	}
	if f.bootTimeout <= 0 {
		return provision.Options{}, fault.Inputf("--boot-timeout must be positive")
	}
	return provision.Options{URI: f.connect, Accel: f.accel, Network: f.network, BootTimeout: f.bootTimeout, CloudInit: f.cloudInit, KernelArgs: f.kernelArgs, Log: a.log, Step: a.step}, nil
}

func fixedCompletion(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// step prints a progress line for humans on stderr.
func (a *app) step(format string, args ...any) {
	fmt.Fprintf(a.stderr, "==> "+format+"\n", args...)
}

// signalContext cancels on Ctrl-C or SIGTERM, so teardown runs.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// upFlags are the flags of `up`.
type upFlags struct {
	vmFlags
	keep      bool
	noTest    bool
	noInstall bool
	cell      string
	junit     string
	results   string
	testImage string
}

func newUpCmd(a *app) *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up PROFILE",
		Short: "Boot a throwaway VM, install the locked components, run the test, tear down",
		Long: `up boots a throwaway libvirt/QEMU VM from the profile's locked image,
installs exactly the locked artifacts, checks the installed versions against
the lock, runs the profile's test and reports every step. The VM, its volumes
and its directory are removed afterwards, also on failure, Ctrl-C or SIGTERM,
unless --keep is given.`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, lf, err := a.loadLocked(args[0])
			if err != nil {
				return err
			}
			cells := p.Cells()
			cell := cells[0].Name
			if len(cells) > 1 {
				if f.cell == "" {
					return fault.Inputf("%s has a matrix of %d cells; run `envctl matrix %s`, or pick one with --cell (e.g. --cell '%s')", p.Path, len(cells), args[0], cells[0].Name)
				}
				cell = f.cell
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			switch f.testImage {
			case "local", "upstream":
			default:
				return fault.Inputf("--test-images %q: use local or upstream", f.testImage)
			}
			rep, err := a.runCell(ctx, p, lf, cell, f)
			if rep != nil {
				if perr := a.printReport(rep); perr != nil && err == nil {
					err = perr
				}
				if f.junit != "" {
					if jerr := report.WriteJUnit(f.junit, rep); jerr != nil && err == nil {
						err = fault.AsInfra(jerr)
					}
				}
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&f.keep, "keep", false, "leave the VM running afterwards (then `envctl ssh ENV`, `envctl down ENV`)")
	cmd.Flags().BoolVar(&f.noTest, "no-test", false, "boot and install, but skip the test")
	cmd.Flags().BoolVar(&f.noInstall, "no-install", false, "only boot the VM (no components, no test)")
	cmd.Flags().StringVar(&f.cell, "cell", "", "the matrix cell to run (see `envctl show PROFILE`)")
	cmd.Flags().StringVar(&f.junit, "junit", "", "write a JUnit XML report to this file")
	cmd.Flags().StringVar(&f.results, "results-dir", "", "where to keep logs of a failed run (default: a new directory under the state dir)")
	cmd.Flags().StringVar(&f.testImage, "test-images", "local", "test images: local (built in-process, served from host loopback) or upstream (quay.io)")
	return cmd
}

// loadLocked loads a profile and its lock, refusing drift.
func (a *app) loadLocked(nameOrPath string) (*profiles.Profile, *lock.File, error) {
	p, err := profiles.Load(nameOrPath)
	if err != nil {
		return nil, nil, err
	}
	lf, err := lock.ForProfile(p, a.arch())
	if err != nil {
		return nil, nil, err
	}
	return p, lf, nil
}

// bootCell boots a VM for one cell of a locked profile.
func (a *app) bootCell(ctx context.Context, p *profiles.Profile, lf *lock.File, cell string, f *vmFlags, online bool) (*provision.Machine, error) {
	opts, err := f.options(a)
	if err != nil {
		return nil, err
	}
	opts.Online = online
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	files, err := images.Ensure(ctx, c, lf.Image)
	if err != nil {
		return nil, err
	}
	return provision.Boot(ctx, opts, provision.BootSpec{
		Profile: p.Name, Cell: cell, CPUs: p.VM.CPUs, Memory: uint64(p.VM.Memory), Disk: uint64(p.VM.Disk), Image: files,
	})
}

// finish keeps or tears down a machine after a run.
func (a *app) finish(m *provision.Machine, keep bool) error {
	if keep {
		if err := m.Keep(); err != nil {
			return err
		}
		a.step("kept %s: `envctl ssh %s` to log in, `envctl down %s` to remove it", m.Env.ID, m.Env.ID, m.Env.ID)
		return nil
	}
	a.step("tearing down %s", m.Env.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return m.Teardown(ctx)
}

func newStatusCmd(a *app) *cobra.Command {
	f := &vmFlags{}
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"ps", "ls"},
		Short:   "List environments with state, age, SSH port and profile",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(a)
			if err != nil {
				return err
			}
			list, err := provision.List(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.emit(list, func(w io.Writer) {
				if len(list) == 0 {
					fmt.Fprintln(w, "no environments")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tPROFILE\tSTATE\tAGE\tSSH\tACCEL")
				for _, s := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Profile, s.State, s.Age, s.SSH, s.Accel)
				}
				tw.Flush()
			})
		},
	}
	f.register(cmd)
	return cmd
}

func completeEnvs(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	list, _ := provision.List(context.Background(), provision.Options{})
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

func newSSHCmd(a *app) *cobra.Command {
	f := &vmFlags{}
	cmd := &cobra.Command{
		Use:               "ssh ENV [-- COMMAND...]",
		Short:             "Log into a kept environment, or run a command there (pinned host key)",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(a)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			m, err := provision.Attach(ctx, opts, args[0])
			if err != nil {
				return err
			}
			defer m.Release()
			command := strings.Join(args[1:], " ")
			term := ""
			if command == "" && isTerminal(os.Stdin) {
				term = envOr("TERM", "xterm")
				restore, err := makeRaw(os.Stdin)
				if err == nil {
					defer restore()
				}
			}
			err = m.SSH.Shell(ctx, command, os.Stdin, a.stdout, a.stderr, term, 80, 24)
			var ee *guest.ExitError
			if errors.As(err, &ee) {
				return &fault.Error{Kind: fault.TestFailed, Err: fmt.Errorf("-remote command exited with status %d", ee.Status)}
			}
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func newDownCmd(a *app) *cobra.Command {
	f := &vmFlags{}
	cmd := &cobra.Command{
		Use:               "down ENV...",
		Short:             "Tear down environments: domain, volumes and directory",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(a)
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				if err := provision.Down(cmd.Context(), opts, id); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(a.stdout, "removed %s\n", id)
			}
			return errors.Join(errs...)
		},
	}
	f.register(cmd)
	return cmd
}

func newGCCmd(a *app) *cobra.Command {
	f := &vmFlags{}
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove envctl domains, volumes and directories whose envctl process is gone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(a)
			if err != nil {
				return err
			}
			removed, err := provision.GC(cmd.Context(), opts)
			if perr := a.emit(removed, func(w io.Writer) {
				if len(removed) == 0 {
					fmt.Fprintln(w, "nothing to collect")
				}
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s %s (%s)\n", r.Kind, r.Name, r.Why)
				}
			}); perr != nil {
				return perr
			}
			return err
		},
	}
	f.register(cmd)
	return cmd
}
