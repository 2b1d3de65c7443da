package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/matrix"
	"github.com/envctl/envctl/provision/report"
)

func newMatrixCmd(a *app) *cobra.Command {
	var f runFlags
	var failFast bool
	var only []string
	var jobs int
	var summary, emit string
	cmd := &cobra.Command{
		Use:   "matrix PROFILE",
		Short: "Run every cell of a profile's matrix in its own VM, several at once, and summarise them as a grid",
		Long: `matrix runs the cells of the profile's matrix through the same pipeline as
` + "`envctl up`" + `, -j at a time (default: what the hosts' free CPUs and memory
hold), spread over every --connect host. Artifacts the cells share are built
or downloaded once. It shows one live line per cell, then a summary and, for
two or more axes, a grid of verdicts (also as Markdown to --summary and to
$GITHUB_STEP_SUMMARY). --emit github prints a GitHub Actions strategy.matrix
instead of running, for fanning out with ` + "`envctl up PROFILE --cell NAME`" + `.

Exit status: 0 when every cell passed, 1 when a test failed or every test
of a cell was skipped ("not tested"), 3 when a cell
could not be tested; finished cells are always reported.`,
		Example: `  envctl matrix crictl-matrix -j 2
  envctl matrix crictl-matrix --cells 'cri-tools=1.30.0,*' --keep=on-failure
  envctl matrix crictl-matrix --emit github > matrix.json`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			if emit != "" {
				return a.emitMatrix(args[0], emit, only)
			}
			if jobs < 0 {
				return fault.Inputf("-j %d: use a positive number of cells at once, or 0 for what the hosts hold", jobs)
			}
			pick := func(p *profiles.Profile) ([]string, error) { return p.CellsMatching(only) }
			return a.runCells(cmd, &f, args[0], pick, func(ctx context.Context, res *cellrun.Resolution, opts cellrun.Options) ([]*report.Report, error) {
				live := false
				if file, ok := a.stderr.(*os.File); ok {
					live = term.IsTerminal(int(file.Fd())) && a.output == "table"
				}
				var names []string
				for _, c := range res.Cells {
					names = append(names, c.Name)
				}
				progressTo := a.stderr
				if a.quiet {
					progressTo, live = io.Discard, false
				}
				pr := matrix.NewProgress(progressTo, names, live)
				opts.Progress = pr.Event
				opts.Step, opts.VM.Step = nil, nil // the lines per cell replace the step messages
				out := matrix.Run(ctx, res.Cells, matrix.Options{Run: opts, Hosts: f.vm.connect, Jobs: jobs, FailFast: failFast, Done: pr.Finish, Log: a.log})
				pr.Wait()
				grids := matrix.Grids(out.Reports)
				err := a.emit(out, func(w io.Writer) {
					matrix.WriteSummary(w, out)
					fmt.Fprintln(w)
					matrix.WriteGrids(w, grids)
				})
				for _, path := range []string{summary, os.Getenv("GITHUB_STEP_SUMMARY")} {
					if path != "" {
						err = errors.Join(err, appendMarkdown(path, res.File.Profile, grids, out))
					}
				}
				return out.Reports, err
			})
		},
	}
	f.register(cmd)
	registerKeep(cmd, &f.keep, "leave the cells' VMs running afterwards")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "cells at once (0: what the hosts' free CPUs and memory hold)")
	cmd.Flags().BoolVar(&failFast, "fail-fast", false, "start no more cells after the first that does not pass")
	cmd.Flags().StringSliceVar(&only, "cells", nil, "run only the cells matching this glob or text (repeatable)")
	cmd.Flags().StringVar(&summary, "summary", "", "also write the verdict grid as Markdown to this file")
	cmd.Flags().StringVar(&emit, "emit", "", "print the matrix for a CI system instead of running it: github")
	return cmd
}

func appendMarkdown(path, profile string, grids []*matrix.Grid, res matrix.Result) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fault.Infraf("summary %s: %w", path, err)
	}
	matrix.WriteGridsMarkdown(f, profile, grids, res)
	return f.Close()
}

func (a *app) emitMatrix(profile, system string, only []string) error {
	if system != "github" {
		return fault.Inputf("--emit %q: envctl emits github (a GitHub Actions strategy.matrix)", system)
	}
	p, err := a.profiles().Load(profile)
	if err != nil {
		return err
	}
	names, err := p.CellsMatching(only)
	if err != nil {
		return err
	}
	var cells []profiles.Cell
	for _, c := range p.Cells() {
		for _, n := range names {
			if c.Name == n {
				cells = append(cells, c)
			}
		}
	}
	b, err := matrix.GitHubMatrix(cells)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.stdout, string(b))
	return err
}
