package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/report"
)

func init() { extraCommands = append(extraCommands, newMatrixCmd) }

func newMatrixCmd(a *app) *cobra.Command {
	f := &upFlags{}
	var failFast bool
	var only []string
	cmd := &cobra.Command{
		Use:   "matrix PROFILE",
		Short: "Run every cell of a profile's matrix, each in its own throwaway VM",
		Long: `matrix runs ` + "`envctl up`" + ` for each cell of the profile's matrix in turn and
prints one line per cell. Exit code 1 when any cell fails its test, 3 when
one could not run.`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, lf, err := a.loadLocked(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			var reports []*report.Report
			worst := 0
			for _, cell := range p.Cells() {
				if len(only) > 0 && !matchesAny(cell.Name, only) {
					continue
				}
				if ctx.Err() != nil {
					break
				}
				a.step("cell %s", cell.Name)
				rep, err := a.runCell(ctx, p, lf, cell.Name, f)
				if rep == nil {
					rep = &report.Report{Profile: p.Name, Cell: cell.Name, Test: p.Test, Verdict: report.VerdictError}
					if err != nil {
						rep.Error = err.Error()
					}
				}
				if code := fault.Code(err); code > worst || (worst == 1 && code == 3) {
					worst = code
				}
				if err != nil && fault.Code(err) == int(fault.Input) {
					return err
				}
				fmt.Fprintln(a.stderr, rep.Summary())
				reports = append(reports, rep)
				if failFast && err != nil {
					break
				}
			}
			if len(reports) == 0 {
				return fault.Inputf("%s: no cell matched --cell %s", p.Path, strings.Join(only, ","))
			}
			if f.junit != "" {
				if err := report.WriteJUnit(f.junit, reports...); err != nil {
					return fault.AsInfra(err)
				}
			}
			if err := a.emit(reports, func(w io.Writer) { matrixTable(w, reports) }); err != nil {
				return err
			}
			switch worst {
			case 0:
				return nil
			case 1:
				return &fault.Error{Kind: fault.TestFailed, Err: fmt.Errorf("-matrix: a cell failed")}
			}
			return fault.Infraf("matrix %s: a cell could not run (see above)", p.Name)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&failFast, "fail-fast", false, "stop at the first cell that does not pass")
	cmd.Flags().StringSliceVar(&only, "cell", nil, "run only cells whose name contains this text (repeatable)")
	cmd.Flags().StringVar(&f.junit, "junit", "", "write a JUnit XML report of every cell to this file")
	cmd.Flags().StringVar(&f.testImage, "test-images", "local", "test images: local or upstream")
	return cmd
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
		pass := 0
		for _, s := range r.Steps {
			if s.Status == report.Pass {
				pass++
			}
		}
		diag := ""
		if len(r.Diagnosis) > 0 {
			diag = r.Diagnosis[0].Cause
		} else if r.Error != "" {
			diag = strings.SplitN(r.Error, "\n", 2)[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.0fs\t%s\n", r.Cell, strings.ToUpper(r.Verdict), pass, len(r.Steps), r.Seconds, diag)
	}
	tw.Flush()
}
