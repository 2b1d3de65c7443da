package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/vm"
)

func newStatusCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"ps", "ls"},
		Short:   "List environments with state, age, SSH port and profile",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := vm.List(cmd.Context(), a.vmOptions(&f))
			if err != nil {
				return err
			}
			return a.emit(list, func(w io.Writer) { vm.WriteStatus(w, list) })
		},
	}
	f.register(cmd, false)
	return cmd
}

func completeEnvs(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		envs, _ := a.store().List()
		ids := make([]string, len(envs))
		for i, e := range envs {
			ids[i] = e.ID
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}
