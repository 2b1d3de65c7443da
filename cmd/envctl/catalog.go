package main

import (
	"fmt"
	"io"
	"strings"

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
			cat := catalog.Default()
			names := cat.Names()
			if len(args) == 1 {
				if _, err := cat.Get(args[0]); err != nil {
					return fault.AsInput(err)
				}
				names = args
			}
			type entry struct {
				Component string   `json:"component"`
				Versions  []string `json:"versions"`
				Sources   []string `json:"sources"`
				Release   string   `json:"release_url,omitempty"`
				GoModule  string   `json:"gomod,omitempty"`
			}
			var out []entry
			for _, n := range names {
				c, _ := cat.Get(n)
				e := entry{Component: n, Versions: c.Sorted(), Sources: c.Sources}
				if c.Release != nil {
					e.Release = c.Release.URL
				}
				if c.GoMod != nil {
					e.GoModule = c.GoMod.Module
				}
				out = append(out, e)
			}
			return a.emit(out, func(w io.Writer) {
				for _, e := range out {
					fmt.Fprintf(w, "%s: %s\n", e.Component, strings.Join(e.Versions, " "))
					fmt.Fprintf(w, "  sources: %s\n", strings.Join(e.Sources, ", "))
					if e.Release != "" {
						fmt.Fprintf(w, "  release: %s\n", e.Release)
					}
					if e.GoModule != "" {
						fmt.Fprintf(w, "  gomod:   %s\n", e.GoModule)
					}
				}
			})
		},
	}
}
