package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/fault"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/report"
)

func newMatrixCmd(a *app) *cobra.Command {
	var f runFlags
	var failFast bool
	var only []string
	cmd := &cobra.Command{
		Use:   "matrix PROFILE",
		Short: "Run every cell of a profile's matrix, each in its own throwaway VM",
		Long: `matrix runs every cell of the profile's matrix through the same pipeline
as ` + "`envctl up`" + ` and prints one line per cell, then a summary.
Exit status: 0 when every cell passed, 1 when a test failed, 3 when a cell
could not be tested.`,
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
			var names []string
			for _, c := range p.Cells() {
				if len(only) == 0 || matchesAny(c.Name, only) {
					names = append(names, c.Name)
				}
			}
			if len(names) == 0 {
				return fault.Inputf("%s: no cell matches --cell %s; `envctl show %s` lists them", p.Path, strings.Join(only, ","), args[0])
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			locker, err := a.locker()
			if err != nil {
				return err
			}
			res, err := cellrun.Resolve(ctx, p, a.arch(), f.lockMode(), locker, names...)
			if err != nil {
				return err
			}
			if res.Wrote {
				a.step("wrote %s on first use; commit it so every machine runs the same artifacts", p.LockPath())
			}
			var reports []*report.Report
			for _, cell := range res.Cells {
				if ctx.Err() != nil {
					break
				}
				a.step("cell %s", cell.Name)
				rep, _ := cellrun.Run(ctx, cell, opts)
				fmt.Fprintln(a.stderr, rep.Summary())
				reports = append(reports, rep)
				if failFast && rep.Verdict != report.VerdictPass && rep.Verdict != report.VerdictReady {
					break
				}
			}
			if f.junit != "" {
				if err := report.WriteJUnit(f.junit, reports...); err != nil {
					return err
				}
			}
			if err := a.emit(reports, func(w io.Writer) { matrixTable(w, reports) }); err != nil {
				return err
			}
			return matrixOutcome(reports)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&failFast, "fail-fast", false, "stop at the first cell that does not pass")
	cmd.Flags().StringSliceVar(&only, "cell", nil, "run only cells whose name contains this text (repeatable)")
	return cmd
}

// matrixOutcome turns the cells' verdicts into the command's outcome.
func matrixOutcome(reports []*report.Report) error {
	switch v, class := report.Worst(reports); v {
	case report.VerdictFail:
		return &shown{class: fault.TestFailed}
	case report.VerdictError:
		return &shown{class: class}
	}
	return nil
}

func matchesAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func matrixTable(w io.Writer, reports []*report.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tVERDICT\tPASSED\tTIME\tDIAGNOSIS")
	for _, r := range reports {
		diag := ""
		if len(r.Diagnosis) > 0 {
			diag = r.Diagnosis[0].Cause
		} else if r.Error != "" {
			diag = report.FirstLine(r.Error)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.0fs\t%s\n", r.Cell, strings.ToUpper(string(r.Verdict)), r.Passed(), len(r.Steps), r.Seconds, diag)
	}
	_ = tw.Flush()
}
