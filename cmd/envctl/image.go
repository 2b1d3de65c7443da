package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
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
				return a.withImages(cmd, func(ctx context.Context, st *images.Store) error { return run(ctx, st, args) })
			}}
	}
	var ifNeeded, update bool
	build := &cobra.Command{Use: "build NAME [PROFILE...]", Short: "Build an image locally (mmdebstrap, reproducibly) and register it under NAME", Args: cobra.MinimumNArgs(1),
		Long: `build makes the image with its recipe, bit-reproducibly: the same recipe and
the same package versions give the same disk, kernel and initrd digests on
any machine. It says which packages changed since the previous build.

With --update, the locks that pin this image (of the PROFILEs given, or of
every profile in the search path) take the new build: its digests, recipe
and package set. Without it, a lock that pins another build keeps refusing
this one, naming the packages that differ.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withImages(cmd, func(ctx context.Context, st *images.Store) error {
				return a.buildImage(ctx, st, args, ifNeeded, update)
			})
		}}
	build.Flags().BoolVar(&ifNeeded, "if-needed", false, "build only when there is no current local build (none, or one made by other scripts)")
	build.Flags().BoolVar(&update, "update", false, "write the new build into the locks that pin this image")
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

// updateImageLocks writes the image's current build into the locks (of the
// named profiles, or all) that pin it.
func (a *app) updateImageLocks(st *images.Store, name string, profileNames []string) ([]string, error) {
	img, err := st.Resolve(name)
	if err != nil {
		return nil, err
	}
	paths, err := lockPathsOf(profileNames)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range paths {
		f, err := lock.Read(p)
		if err != nil || f.Image.Name != name {
			continue
		}
		f.Image = img
		if err := lock.Write(p, f); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
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
	return run(ctx, st)
}

// buildImage is `image build NAME [PROFILE...]`.
func (a *app) buildImage(ctx context.Context, st *images.Store, args []string, ifNeeded, update bool) error {
	name := args[0]
	prev, err := st.Locals()
	if err != nil {
		return err
	}
	if l, ok := st.Current(name); ifNeeded && ok && !update {
		fmt.Fprintf(a.stdout, "image %s is up to date (built %s)\n", name, l.Built.Format(time.RFC3339))
		return nil
	}
	a.step("building image %s (takes a few minutes)", name)
	start := time.Now()
	l, err := st.Build(ctx, name, a.stderr)
	if err != nil {
		return err
	}
	if old, ok := prev[name]; ok {
		if d := images.PackageChanges(old.Packages, l.Packages); len(d) > 0 {
			a.step("packages changed since the previous build: %s", strings.Join(d, ", "))
		}
		if old.Disk != l.Disk {
			a.step("the disk digest changed: %s → %s", old.Disk, l.Disk)
		}
	}
	var updated []string
	if update {
		if updated, err = a.updateImageLocks(st, name, args[1:]); err != nil {
			return err
		}
	}
	return a.emit(l, func(w io.Writer) {
		fmt.Fprintf(w, "built %s in %s: disk %s, kernel %s, initrd %s, %d packages\n", l.Name, time.Since(start).Round(time.Second), l.Disk, l.Kernel, l.Initrd, len(l.Packages))
		for _, p := range updated {
			fmt.Fprintf(w, "updated %s\n", p)
		}
	})
}
