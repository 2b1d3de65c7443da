package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/task"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/artifacts"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images: ls, build, push, pull, export, import, rm, prune"}
	cmd.AddCommand(
		a.imageVerb("ls", "List catalog images and local builds, and whether they are cached", cobra.NoArgs, func(_ context.Context, st *images.Store, _ []string) error {
			rows, err := st.List()
			if err != nil {
				return err
			}
			return a.emit(rows, func(w io.Writer) { images.WriteListings(w, rows) })
		}),
		newImageBuildCmd(a), newImagePushCmd(a), newImagePullCmd(a),
		a.imageVerb("export FILE [NAME|PROFILE...]", "Write local images (by name, or the ones the profiles' locks pin; default: every lock's) as one OCI image layout tarball", cobra.MinimumNArgs(1),
			func(ctx context.Context, st *images.Store, args []string) error {
				return a.exportImages(ctx, st, args[0], args[1:])
			}),
		a.imageVerb("import FILE", "Read images from an OCI image layout tarball (from `envctl image export`), checking every blob", cobra.ExactArgs(1),
			func(ctx context.Context, st *images.Store, args []string) error {
				return a.importImages(ctx, st, args[0])
			}),
		a.imageVerb("rm NAME", "Forget a local build (its files go with `image prune`)", cobra.ExactArgs(1), func(ctx context.Context, st *images.Store, args []string) error {
			err := st.RemoveLocal(ctx, args[0])
			if err == nil {
				fmt.Fprintf(a.stdout, "removed local image %s\n", args[0])
			}
			return err
		}),
		a.imageVerb("prune", "Delete cached blobs that no local build and no profile's lock references (downloads, old builds)", cobra.NoArgs, a.pruneImages),
	)
	return cmd
}

// imageVerb is an image subcommand that runs with the image store and a
// context that ends on Ctrl-C or SIGTERM.
func (a *app) imageVerb(use, short string, args cobra.PositionalArgs, run func(ctx context.Context, st *images.Store, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return catalog.Images().Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withImages(cmd, func(ctx context.Context, st *images.Store) error { return run(ctx, st, args) })
		}}
}

func (a *app) pruneImages(ctx context.Context, st *images.Store, _ []string) error {
	locks, err := a.locksOf(nil)
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
}

// withImages runs an image verb with the image store and a context that
// ends on Ctrl-C or SIGTERM.
func (a *app) withImages(cmd *cobra.Command, run func(ctx context.Context, st *images.Store) error) error {
	st, err := a.images()
	if err != nil {
		return err
	}
	ctx, stop := a.signalContext(cmd)
	defer stop()
	// Push, pull, import and export say how many bytes have gone.
	return run(task.WithMeters(ctx, a.meter), st)
}
