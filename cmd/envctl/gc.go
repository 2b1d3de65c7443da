package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/vm"
)

func newGCCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove the domains, volumes and directories that dead runs of this state directory left behind",
		Long: `gc removes what envctl runs of this state directory left behind when they
died, on every --connect host: domains, volumes and environment directories
whose envctl no longer holds them. It never touches another state
directory's VMs, an environment a running envctl holds, or a kept
environment whose domain still exists (running, paused or shut off).
Temporary files in the cache older than a day go too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var removed []vm.Action
			var errs []error
			for _, uri := range f.connect {
				opts := a.vmOptions(&f)
				opts.URI = uri
				done, notes, err := vm.GC(cmd.Context(), opts)
				for _, n := range notes {
					fmt.Fprintf(a.stderr, "envctl: note: %s\n", n)
				}
				removed, errs = append(removed, done...), append(errs, err)
			}
			// What no domain owns: partial downloads and builds of dead runs.
			if c, err := a.cache(); err == nil {
				tmp, err := c.CleanTemp(tempAge)
				for _, p := range tmp {
					removed = append(removed, vm.Action{Kind: "temporary", Name: p, Why: "a temporary file in the cache older than a day"})
				}
				errs = append(errs, err)
			}
			if perr := a.emit(removed, func(w io.Writer) {
				if len(removed) == 0 {
					fmt.Fprintln(w, "nothing to collect")
				}
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s %s (%s)\n", r.Kind, r.Name, r.Why)
				}
			}); perr != nil {
				return perr
			}
			return errors.Join(errs...)
		},
	}
	f.register(cmd, false)
	return cmd
}
