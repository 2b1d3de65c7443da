package main

import (
	"cmp"
	"errors"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/vm"
)

func newSSHCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "ssh ENV [-- COMMAND [ARG...]]",
		Short: "Log into a kept environment, or run a command there (pinned host key)",
		Long: `ssh logs into a kept environment, or runs a command there and exits
with the command's exit status. One argument is a whole shell command line
("ls | wc -l"); several arguments are quoted one by one, so
` + "`envctl ssh ENV -- sh -c 'exit 7'`" + ` runs exactly that and exits 7.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := a.signalContext(cmd)
			defer stop()
			m, err := vm.Attach(ctx, a.vmOptions(&f), args[0])
			if err != nil {
				return err
			}
			defer m.Release()
			command, fd := guest.CommandLine(args[1:]), int(os.Stdin.Fd())
			termName, w, h := "", 80, 24
			if command == "" && term.IsTerminal(fd) {
				termName = cmp.Or(os.Getenv("TERM"), "xterm")
				if tw, th, err := term.GetSize(fd); err == nil {
					w, h = tw, th
				}
				if st, err := term.MakeRaw(fd); err == nil {
					defer func() { _ = term.Restore(fd, st) }()
				}
			}
			err = m.SSH.Shell(ctx, command, os.Stdin, a.stdout, a.stderr, termName, w, h)
			var ee *guest.ExitError
			if errors.As(err, &ee) {
				return &remoteExit{status: ee.Status}
			}
			return err
		},
	}
	f.register(cmd, false)
	return cmd
}
