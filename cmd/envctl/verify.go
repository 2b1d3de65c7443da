package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/crio"
)

func newVerifyCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "verify ENV",
		Short: "Run the drift check again on a kept environment",
		Long: `verify checks that a kept environment still runs exactly what its lock
pins: the sha256 of every installed binary against the lock, each
component's version, and the version the running CRI-O reports through CRI.
Any difference exits 3 and names the binary and both digests.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			installed, err := cellrun.VerifyEnv(cmd.Context(), a.vmOptions(&f), args[0])
			if installed != nil {
				if perr := a.emit(installed, func(w io.Writer) { writeInstalled(w, installed) }); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	f.register(cmd, false)
	return cmd
}

func writeInstalled(w io.Writer, list []crio.Installed) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tLOCKED\tINSTALLED\tRUNNING\tFILES\tOK")
	for _, it := range list {
		files := "as locked"
		if len(it.Changed) > 0 {
			files = fmt.Sprintf("%d changed", len(it.Changed))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", it.Component, it.Locked, it.Actual, it.Running, files, it.OK)
	}
	_ = tw.Flush()
}
