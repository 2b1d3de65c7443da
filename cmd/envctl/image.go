package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/catalog"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images: ls, pull, build, rm, prune"}
	complete := func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return catalog.Images().Names(), cobra.ShellCompDirectiveNoFileComp
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List catalog images and local builds, and whether they are cached",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.images()
			if err != nil {
				return err
			}
			rows, err := st.List()
			if err != nil {
				return err
			}
			return a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tCACHED\tDIGEST\tSOURCE")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", r.Name, r.Kind, r.Cached, shortDigest(r.Digest), r.Source)
				}
				_ = tw.Flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:               "pull NAME",
		Short:             "Download a catalog image into the cache, verifying its pinned digest",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.images()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			p, err := st.Pull(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %s\n", args[0], p)
			return nil
		},
	})
	var ifNeeded bool
	build := &cobra.Command{
		Use:               "build NAME",
		Short:             "Build an image locally (mmdebstrap) and register it under NAME",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.images()
			if err != nil {
				return err
			}
			if ifNeeded {
				if l, ok := st.Current(args[0]); ok {
					fmt.Fprintf(a.stdout, "image %s is up to date (built %s)\n", args[0], l.Built.Format(time.RFC3339))
					return nil
				}
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			a.step("building image %s (takes a few minutes)", args[0])
			start := time.Now()
			l, err := st.Build(ctx, args[0], a.stderr)
			if err != nil {
				return err
			}
			return a.emit(l, func(w io.Writer) {
				fmt.Fprintf(w, "built %s in %s: disk %s, kernel %s, %d packages\n", l.Name, time.Since(start).Round(time.Second), l.Disk, shortDigest(l.Kernel), len(l.Packages))
			})
		},
	}
	build.Flags().BoolVar(&ifNeeded, "if-needed", false, "build only when there is no current local build (none, or one made by other scripts)")
	cmd.AddCommand(build)
	cmd.AddCommand(&cobra.Command{
		Use:               "rm NAME",
		Short:             "Forget a local build (its files go with `image prune`)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.images()
			if err != nil {
				return err
			}
			if err := st.RemoveLocal(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "removed local image %s\n", args[0])
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "prune",
		Short: "Delete cached blobs no local build references (downloads, old builds)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.images()
			if err != nil {
				return err
			}
			p, err := st.Prune(cmd.Context())
			if err != nil {
				return err
			}
			return a.emit(p, func(w io.Writer) {
				fmt.Fprintf(w, "removed %d blobs, freed %.1f MiB\n", len(p.Removed), float64(p.Freed)/(1<<20))
			})
		},
	})
	return cmd
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
