package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
)

func init() { extraCommands = append(extraCommands, newFetchCmd) }

func (a *app) fetcher() (*artifacts.Fetcher, error) {
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	f := &artifacts.Fetcher{Cache: c, Log: a.log, Step: a.step}
	if a.verbose {
		f.Output = a.stderr
	}
	return f, nil
}

// fetchCell gets every artifact of a cell, by role.
func (a *app) fetchCell(ctx context.Context, lf *lock.File, cell string) (map[string]lock.Artifact, map[string]artifacts.Files, error) {
	arts, err := lf.CellArtifacts(cell)
	if err != nil {
		return nil, nil, err
	}
	f, err := a.fetcher()
	if err != nil {
		return nil, nil, err
	}
	files := map[string]artifacts.Files{}
	for _, role := range profiles.Roles {
		art, ok := arts[role]
		if !ok {
			continue
		}
		fl, err := f.Fetch(ctx, lf, art)
		if err != nil {
			return nil, nil, err
		}
		files[role] = fl
	}
	return arts, files, nil
}

func newFetchCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "fetch PROFILE",
		Short:             "Download or build every locked artifact of a profile into the cache (no VM)",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, lf, err := a.loadLocked(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			type row struct {
				Cell      string            `json:"cell"`
				Component string            `json:"component"`
				Version   string            `json:"version"`
				Source    string            `json:"source"`
				Files     map[string]string `json:"files,omitempty"`
				CRIAPI    string            `json:"cri_api,omitempty"`
			}
			var rows []row
			start := time.Now()
			for _, c := range p.Cells() {
				arts, files, err := a.fetchCell(ctx, lf, c.Name)
				if err != nil {
					return err
				}
				for _, role := range profiles.Roles {
					art, ok := arts[role]
					if !ok {
						continue
					}
					r := row{Cell: c.Name, Component: art.Component, Version: art.Version, Source: art.Source, Files: files[role].Binaries}
					for _, path := range files[role].Binaries {
						if v, err := artifacts.CRIAPIVersion(path); err == nil && v != "" {
							r.CRIAPI = v
						}
					}
					rows = append(rows, r)
				}
			}
			return a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CELL\tCOMPONENT\tVERSION\tSOURCE\tCRI-API\tFILES")
				for _, r := range rows {
					var names []string
					for n := range r.Files {
						names = append(names, n)
					}
					sort.Strings(names)
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", r.Cell, r.Component, r.Version, r.Source, dash(r.CRIAPI), names)
				}
				tw.Flush()
				fmt.Fprintf(w, "all artifacts present (%s)\n", time.Since(start).Round(time.Second))
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
