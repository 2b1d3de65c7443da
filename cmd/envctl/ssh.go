package main

import (
	"cmp"
	"errors"
	"os"
	"os/signal"
	"syscall"

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
			termName, size := "", guest.WindowSize{W: 80, H: 24}
			var resize chan guest.WindowSize
			if command == "" && term.IsTerminal(fd) {
				termName = cmp.Or(os.Getenv("TERM"), "xterm")
				if tw, th, err := term.GetSize(fd); err == nil {
					size = guest.WindowSize{W: tw, H: th}
				}
				if st, err := term.MakeRaw(fd); err == nil {
					defer func() { _ = term.Restore(fd, st) }()
				}
				resize = make(chan guest.WindowSize, 1)
				stopResize := forwardResizes(fd, resize)
				defer stopResize()
			}
			err = m.SSH.ShellResized(ctx, command, os.Stdin, a.stdout, a.stderr, termName, size, resize)
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

// forwardResizes sends the terminal's size on resize at every SIGWINCH
// (the newest size wins when the session lags).
func forwardResizes(fd int, resize chan guest.WindowSize) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-sig:
				w, h, err := term.GetSize(fd)
				if err != nil {
					continue
				}
				select {
				case <-resize: // drop a size not yet sent
				default:
				}
				resize <- guest.WindowSize{W: w, H: h}
			}
		}
	}()
	return func() { signal.Stop(sig); close(done) }
}
