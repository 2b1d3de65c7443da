package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/fault"
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
unless --keep is given.

A profile without a lock file gets one on first use (and up says so);
--locked refuses that, and a stale lock is always refused.`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := profiles.Load(args[0])
			if err != nil {
				return err
			}
			opts, err := a.runOptions(cmd.Context(), &f)
			if err != nil {
				return err
			}
			if err := opts.Validate(p.Test); err != nil {
				return err
			}
			if cell == "" {
				cells := p.Cells()
				if len(cells) > 1 {
					return fault.Inputf("%s has a matrix of %d cells; run `envctl matrix %s`, or pick one with --cell (e.g. --cell '%s')", p.Path, len(cells), args[0], cells[0].Name)
				}
				cell = cells[0].Name
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			locker, err := a.locker()
			if err != nil {
				return err
			}
			res, err := cellrun.Resolve(ctx, p, a.arch(), f.lockMode(), locker, cell)
			if err != nil {
				return err
			}
			if res.Wrote {
				a.step("wrote %s on first use; commit it so every machine runs the same artifacts", p.LockPath())
			}
			rep, err := cellrun.Run(ctx, res.Cells[0], opts)
			if perr := a.emit(rep, rep.Table); perr != nil && err == nil {
				err = perr
			}
			if f.junit != "" {
				if jerr := report.WriteJUnit(f.junit, rep); jerr != nil && err == nil {
					err = jerr
				}
			}
			if err == nil && rep.Verdict == report.VerdictFail {
				err = &shown{class: fault.TestFailed}
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&f.keep, "keep", false, "leave the VM running afterwards (then `envctl ssh ENV`, `envctl down ENV`)")
	cmd.Flags().StringVar(&cell, "cell", "", "the matrix cell to run (see `envctl show PROFILE`)")
	return cmd
}

// signalContext cancels on Ctrl-C or SIGTERM, so teardown runs.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}
