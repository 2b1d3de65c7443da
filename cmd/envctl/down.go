package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/vm"
)

func newDownCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:               "down ENV...",
		Short:             "Tear down environments: domain, volumes and directory",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, id := range args {
				if err := vm.Down(cmd.Context(), a.vmOptions(&f), id); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(a.stdout, "removed %s\n", id)
			}
			return errors.Join(errs...)
		},
	}
	f.register(cmd, false)
	return cmd
}
