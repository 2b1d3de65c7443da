package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/vm"
)

// stopSignals end a run the way Ctrl-C does: SIGHUP too, so a closed
// terminal or SSH session tears its VMs down.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// signalContext cancels on the first Ctrl-C, SIGTERM or SIGHUP, naming the
// signal as the cause, so that teardown runs; a second one makes the
// teardown urgent (vm.WithUrgent): it skips log collection and gets
// vm.UrgentDeadline to finish.
func (a *app) signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	urgent := make(chan struct{})
	ctx, cancel := context.WithCancelCause(vm.WithUrgent(cmd.Context(), urgent))
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, stopSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			fmt.Fprintf(a.stderr, "envctl: %s: stopping and tearing down (send it again to hurry)\n", s)
			cancel(fmt.Errorf("interrupted by %s", s))
		case <-done:
			return
		}
		select {
		case s := <-ch:
			fmt.Fprintf(a.stderr, "envctl: %s again: tearing down at once (within %s)\n", s, vm.UrgentDeadline)
			close(urgent)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}
