package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newProfilesCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "profiles",
		Aliases: []string{"profile", "ls-profiles"},
		Short:   "List the profiles envctl can find",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l := a.profiles()
			list := l.List()
			return a.emit(list, func(w io.Writer) { writeProfileList(w, l, list) })
		},
	}
}
