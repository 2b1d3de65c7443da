package main

import (
	"io"

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
			return a.emit(list, func(w io.Writer) { profiles.WriteList(w, list) })
		},
	}
}
