package main

import (
	"cmp"
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/report"
)

func newUpCmd(a *app) *cobra.Command {
	var f runFlags
	var cell string
	cmd := &cobra.Command{
		Use:   "up PROFILE",
		Short: "Boot a throwaway VM, install the locked components, run the test, tear down",
		Long: `up boots a throwaway libvirt/QEMU VM from the profile's locked image,
installs exactly the locked artifacts, checks the installed versions against
the lock, runs the profile's test and reports every step. The VM, its volumes
and its directory are removed afterwards, also on failure, Ctrl-C or SIGTERM,
unless --keep is given; --keep=on-failure keeps only the VM of a failed run,
and the report says how to get in.

A profile without a lock file gets one on first use (and up says so);
--locked refuses that, and a stale lock is always refused.`,
		Example: `  envctl up crio-1.34-runc
  envctl up seed-crictl-1.30 --keep=on-failure   # look into the failing guest
  envctl up crictl-matrix --cell 'cri-tools=1.34.0,runtime=runc@1.3.6'
  envctl up ./profiles/my-stack.yaml --locked --junit out.xml`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			pick := func(p *profiles.Profile) ([]string, error) {
				name, err := p.CellNamed(cell)
				return []string{name}, err
			}
			return a.runCells(cmd, &f, args[0], pick, func(ctx context.Context, res *cellrun.Resolution, opts cellrun.Options) ([]*report.Report, error) {
				rep, err := cellrun.Run(ctx, res.Cells[0], opts)
				table := rep.Table
				if a.quiet {
					table = func(w io.Writer) { fmt.Fprintln(w, rep.Summary()) }
				}
				if perr := a.emit(rep, table); perr != nil && err == nil {
					err = perr
				}
				return []*report.Report{rep}, err
			})
		},
	}
	f.register(cmd)
	registerKeep(cmd, &f.keep, "leave the VM running afterwards")
	cmd.Flags().StringVar(&cell, "cell", "", "the matrix cell to run (see `envctl show PROFILE`)")
	return cmd
}

// runCells is what up and matrix share: load the profile, check every
// option before any work, resolve the cells (locking on first use), run,
// write JUnit, and turn the verdicts into the outcome.
func (a *app) runCells(cmd *cobra.Command, f *runFlags, profile string, pick func(*profiles.Profile) ([]string, error),
	run func(context.Context, *cellrun.Resolution, cellrun.Options) ([]*report.Report, error)) error {
	p, err := a.profiles().Load(profile)
	if err != nil {
		return err
	}
	names, err := pick(p)
	if err != nil {
		return err
	}
	opts, err := a.runOptions(cmd.Context(), f)
	if err != nil {
		return err
	}
	test := cmp.Or(f.test, p.Test)
	if err := opts.Validate(test); err != nil {
		return err
	}
	ctx, stop := a.signalContext(cmd)
	defer stop()
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, f.timeout, fmt.Errorf("--timeout %s reached", f.timeout))
		defer cancel()
	}
	res, err := a.resolve(ctx, p, lockMode(f.locked), f.allowMoved, f.imageStore, names...)
	if err != nil {
		return err
	}
	opts.Image = res.Image
	for i := range res.Cells {
		res.Cells[i] = res.Cells[i].WithTest(test)
	}
	reports, err := run(ctx, res, opts)
	if f.junit != "" {
		if jerr := report.WriteJUnit(f.junit, reports...); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	switch v, class := report.Worst(reports); v {
	case report.VerdictFail, report.VerdictNotTested:
		// A run whose every test was skipped did not show the stack works.
		return &shown{class: fault.TestFailed}
	case report.VerdictError:
		return &shown{class: class}
	}
	return nil
}
