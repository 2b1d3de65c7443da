package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/pin"
)

func newCatalogCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "catalog [COMPONENT]",
		Short: "List the component versions envctl knows",
		Args:  cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return catalog.Default().Names(), cobra.ShellCompDirectiveNoFileComp
		},
		Long: `catalog lists every component with the versions envctl knows. Named, a
component's versions are shown with their provenance: upstream's release
commit, the Go module proxy's commit for the version (asked now), and
whether they agree ("release commit"), differ ("moved tag": the proxy
cached the tag before it moved) or cannot be compared ("unknown").`,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := catalog.Default().Summaries(args...)
			if err != nil {
				return fault.AsInput(err)
			}
			if len(args) == 0 {
				return a.emit(list, func(w io.Writer) { catalog.WriteSummaries(w, list) })
			}
			comp, _ := catalog.Default().Get(args[0])
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			rows := pin.Provenance(ctx, comp, a.arch(), pin.ModuleInfo)
			return a.emit(rows, func(w io.Writer) {
				catalog.WriteSummaries(w, list)
				writeProvenance(w, rows)
			})
		},
	}
}

func writeProvenance(w io.Writer, rows []pin.VersionProvenance) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tRELEASE COMMIT\tRELEASED\tMODULE COMMIT\tMODULE TIME\tSTATUS\tPUBLISHED DIGEST")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Format("2006-01-02")
	}
	short := func(c string) string {
		if c == "" {
			return "-"
		}
		return c[:min(len(c), 12)]
	}
	for _, r := range rows {
		status := string(r.Status)
		if r.Note != "" {
			status += " (" + r.Note + ")"
		}
		pub := "-"
		if r.Published {
			pub = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Version, short(r.ReleaseCommit), day(r.ReleaseTime), short(r.ModuleCommit), day(r.ModuleTime), status, pub)
	}
	_ = tw.Flush()
}
