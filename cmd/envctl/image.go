package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/artifacts"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images: ls, pull, build, rm, prune"}
	verb := func(use, short string, nargs int, run func(ctx context.Context, st *images.Store, args []string) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(nargs),
			ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return catalog.Images().Names(), cobra.ShellCompDirectiveNoFileComp
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				st, err := a.images()
				if err != nil {
					return err
				}
				ctx, stop := a.signalContext(cmd)
				defer stop()
				return run(ctx, st, args)
			}}
	}
	var ifNeeded bool
	build := verb("build NAME", "Build an image locally (mmdebstrap) and register it under NAME", 1, func(ctx context.Context, st *images.Store, args []string) error {
		if l, ok := st.Current(args[0]); ifNeeded && ok {
			fmt.Fprintf(a.stdout, "image %s is up to date (built %s)\n", args[0], l.Built.Format(time.RFC3339))
			return nil
		}
		a.step("building image %s (takes a few minutes)", args[0])
		start := time.Now()
		l, err := st.Build(ctx, args[0], a.stderr)
		if err != nil {
			return err
		}
		return a.emit(l, func(w io.Writer) {
			fmt.Fprintf(w, "built %s in %s: disk %s, kernel %s, %d packages\n", l.Name, time.Since(start).Round(time.Second), l.Disk, l.Kernel, len(l.Packages))
		})
	})
	build.Flags().BoolVar(&ifNeeded, "if-needed", false, "build only when there is no current local build (none, or one made by other scripts)")
	cmd.AddCommand(
		verb("ls", "List catalog images and local builds, and whether they are cached", 0, func(_ context.Context, st *images.Store, _ []string) error {
			rows, err := st.List()
			if err != nil {
				return err
			}
			return a.emit(rows, func(w io.Writer) { images.WriteListings(w, rows) })
		}),
		verb("pull NAME", "Download a catalog image into the cache, verifying its pinned digest", 1, func(ctx context.Context, st *images.Store, args []string) error {
			p, err := st.Pull(ctx, args[0])
			if err == nil {
				fmt.Fprintf(a.stdout, "%s %s\n", args[0], p)
			}
			return err
		}),
		build,
		verb("rm NAME", "Forget a local build (its files go with `image prune`)", 1, func(ctx context.Context, st *images.Store, args []string) error {
			err := st.RemoveLocal(ctx, args[0])
			if err == nil {
				fmt.Fprintf(a.stdout, "removed local image %s\n", args[0])
			}
			return err
		}),
		verb("prune", "Delete cached blobs that no local build and no profile's lock references (downloads, old builds)", 0, func(ctx context.Context, st *images.Store, _ []string) error {
			locks, err := locksOf(nil)
			if err != nil {
				return err
			}
			p, err := st.Prune(ctx, artifacts.Referenced(locks...)[cache.EntryBlob])
			if err != nil {
				return err
			}
			return a.emit(p, func(w io.Writer) {
				fmt.Fprintf(w, "removed %d blobs, freed %.1f MiB\n", len(p.Removed), float64(p.Freed)/(1<<20))
			})
		}),
	)
	return cmd
}
