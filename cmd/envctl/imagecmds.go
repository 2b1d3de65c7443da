package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/provision/fault"
)

func init() { extraCommands = append(extraCommands, newImageCmd) }

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images: ls, pull, build, rm, prune"}
	complete := func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return a.images().Names(), cobra.ShellCompDirectiveNoFileComp
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List catalog images and local builds, and whether they are cached",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			type row struct {
				Name   string `json:"name"`
				Kind   string `json:"kind"`
				Digest string `json:"digest"`
				Cached bool   `json:"cached"`
				Source string `json:"source"`
			}
			var rows []row
			locals, err := images.LocalImages(c)
			if err != nil {
				return err
			}
			for _, n := range sortedKeys(locals) {
				l := locals[n]
				d, _ := cache.ParseDigest(l.Disk)
				_, ok := c.Has(d)
				src := "built " + l.Built.Format(time.RFC3339)
				if l.Stale() {
					src += " (stale: rebuild with `envctl image build " + n + "`)"
				}
				rows = append(rows, row{n, "local", l.Disk, ok, src})
			}
			cat := a.images()
			for _, n := range sortedKeys(cat.Images) {
				im := cat.Images[n]
				d, _ := cache.ParseDigest(im.Digest)
				_, ok := c.Has(d)
				rows = append(rows, row{n, "download", im.Digest, ok, im.URL})
			}
			return a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tCACHED\tDIGEST\tSOURCE")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", r.Name, r.Kind, r.Cached, shortDigest(r.Digest), r.Source)
				}
				tw.Flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:               "pull NAME",
		Short:             "Download a catalog image into the cache, verifying its pinned digest",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: complete,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			im, ok := a.images().Images[args[0]]
			if !ok {
				return fault.Inputf("image %q has no download in the catalog; `envctl image ls` lists them", args[0])
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			d, err := cache.ParseDigest(im.Digest)
			if err != nil {
				return fault.AsInput(err)
			}
			p, err := c.Fetch(ctx, im.URL, d)
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
			c, err := a.cache()
			if err != nil {
				return err
			}
			if ifNeeded {
				locals, err := images.LocalImages(c)
				if err != nil {
					return err
				}
				if l, ok := locals[args[0]]; ok && !l.Stale() {
					if d, err := cache.ParseDigest(l.Disk); err == nil {
						if _, ok := c.Has(d); ok {
							fmt.Fprintf(a.stdout, "image %s is up to date (built %s)\n", args[0], l.Built.Format(time.RFC3339))
							return nil
						}
					}
				}
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			a.step("building image %s (takes a few minutes)", args[0])
			start := time.Now()
			l, err := images.Build(ctx, c, a.images(), args[0], a.stderr)
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
			c, err := a.cache()
			if err != nil {
				return err
			}
			if err := images.RemoveLocal(cmd.Context(), c, args[0]); err != nil {
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
			c, err := a.cache()
			if err != nil {
				return err
			}
			used := images.InUse(c)
			blobs, err := c.List()
			if err != nil {
				return err
			}
			var freed int64
			var removed []string
			for _, b := range blobs {
				if used[b.Digest] {
					continue
				}
				d, err := cache.ParseDigest(b.Digest)
				if err != nil {
					continue
				}
				if err := c.Remove(cmd.Context(), d); err != nil {
					return err
				}
				freed += b.Size
				removed = append(removed, b.Digest)
			}
			return a.emit(removed, func(w io.Writer) {
				fmt.Fprintf(w, "removed %d blobs, freed %.1f MiB\n", len(removed), float64(freed)/(1<<20))
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
