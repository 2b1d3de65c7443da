package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/fault"
)

func newCatalogCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "catalog [COMPONENT]",
		Short: "List the component versions envctl knows",
		Args:  cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return catalog.Default().Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := catalog.Default().Summaries(args...)
			if err != nil {
				return fault.AsInput(err)
			}
			return a.emit(list, func(w io.Writer) { catalog.WriteSummaries(w, list) })
		},
	}
}
