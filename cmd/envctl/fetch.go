package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/cellrun"
)

func newFetchCmd(a *app) *cobra.Command {
	var locked bool
	cmd := &cobra.Command{
		Use:               "fetch PROFILE",
		Short:             "Download or build every locked artifact of a profile into the cache (no VM)",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := profiles.Load(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			locker, err := a.locker()
			if err != nil {
				return err
			}
			mode := cellrun.LockOnFirstUse
			if locked {
				mode = cellrun.Locked
			}
			res, err := cellrun.Resolve(ctx, p, a.arch(), mode, locker)
			if err != nil {
				return err
			}
			fetcher, err := a.fetcher()
			if err != nil {
				return err
			}
			type row struct {
				Cell      string            `json:"cell"`
				Component string            `json:"component"`
				Version   string            `json:"version"`
				Source    profiles.Source   `json:"source"`
				Files     map[string]string `json:"files,omitempty"`
				CRIAPI    string            `json:"cri_api,omitempty"`
			}
			var rows []row
			start := time.Now()
			for _, c := range res.Cells {
				parts, _, err := cellrun.Fetch(ctx, c, fetcher)
				if err != nil {
					return err
				}
				for _, part := range parts {
					rows = append(rows, row{Cell: c.Name, Component: part.Component, Version: part.Version, Source: part.Source,
						Files: part.Files.Binaries, CRIAPI: artifacts.CRIAPI(artifacts.Builds(part.Part, part.Files))})
				}
			}
			return a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CELL\tCOMPONENT\tVERSION\tSOURCE\tCRI-API\tFILES")
				for _, r := range rows {
					cri := r.CRIAPI
					if cri == "" {
						cri = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", r.Cell, r.Component, r.Version, r.Source, cri, slices.Sorted(maps.Keys(r.Files)))
				}
				_ = tw.Flush()
				fmt.Fprintf(w, "all artifacts present (%s)\n", time.Since(start).Round(time.Second))
			})
		},
	}
	cmd.Flags().BoolVar(&locked, "locked", false, "refuse a missing or stale lock instead of writing one")
	return cmd
}
