package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
)

func newProfilesCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "profiles",
		Aliases: []string{"profile", "ls-profiles"},
		Short:   "List the profiles envctl can find",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list := profiles.List()
			return a.emit(list, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPATH\tSTATUS")
				for _, e := range list {
					status := "ok"
					if e.Err != "" {
						status = "invalid: " + e.Err
					} else if _, err := os.Stat(strings.TrimSuffix(e.Path, ".yaml") + ".lock"); err == nil {
						status = "ok, locked"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, e.Path, status)
				}
				_ = tw.Flush()
				if len(list) == 0 {
					fmt.Fprintf(w, "no profiles found in %s\n", strings.Join(profiles.SearchDirs(), ", "))
				}
			})
		},
	}
}
