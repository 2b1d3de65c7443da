package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/cellrun"
)

func newFetchCmd(a *app) *cobra.Command {
	var locked, skipImage bool
	var store string
	cmd := &cobra.Command{
		Use:               "fetch PROFILE",
		Short:             "Download or build every locked artifact of a profile into the cache (no VM)",
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.profiles().Load(args[0])
			if err != nil {
				return err
			}
			ctx, stop := a.signalContext(cmd)
			defer stop()
			resolve := a.resolve
			if skipImage {
				resolve = a.resolveCells
			}
			res, err := resolve(ctx, p, lockMode(locked), false, store)
			if err != nil {
				return err
			}
			fetcher, err := a.fetcher()
			if err != nil {
				return err
			}
			start := time.Now()
			rows, err := cellrun.FetchAll(ctx, res.Cells, fetcher)
			if err != nil {
				return err
			}
			return a.emit(rows, func(w io.Writer) {
				if res.Image != nil {
					fmt.Fprintf(w, "image %s %s from %s\n", res.Image.Name, res.Image.Digest, res.Image.From)
				} else {
					fmt.Fprintf(w, "image %s %s not fetched (--skip-image)\n", res.File.Image.Name, res.File.Image.Digest)
				}
				cellrun.WriteFetched(w, rows)
				fmt.Fprintf(w, "all artifacts present (%s)\n", time.Since(start).Round(time.Second))
			})
		},
	}
	cmd.Flags().BoolVar(&locked, "locked", false, "refuse a missing or stale lock instead of writing one")
	cmd.Flags().BoolVar(&skipImage, "skip-image", false, "fetch the locked components only, not the image: to prefetch them while the image builds or is pulled elsewhere")
	registerImageStore(cmd, &store)
	return cmd
}
