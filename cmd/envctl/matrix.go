package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
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
			pick := func(p *profiles.Profile) ([]string, error) { return p.CellsMatching(only) }
			return a.runCells(cmd, &f, args[0], pick, func(ctx context.Context, res *cellrun.Resolution, opts cellrun.Options) ([]*report.Report, error) {
				reports := cellrun.RunAll(ctx, res.Cells, opts, failFast, func(r *report.Report) { fmt.Fprintln(a.stderr, r.Summary()) })
				return reports, a.emit(reports, func(w io.Writer) { report.WriteMatrix(w, reports) })
			})
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&failFast, "fail-fast", false, "stop at the first cell that does not pass")
	cmd.Flags().StringSliceVar(&only, "cell", nil, "run only cells whose name contains this text (repeatable)")
	return cmd
}
