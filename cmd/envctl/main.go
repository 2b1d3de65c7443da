package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/testimages"
)

func main() {
	// Inside a test container envctl is the workload: sleep, cat, pause.
	if testimages.Main() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes, mapped from error classes here and nowhere else.
const (
	exitOK         = 0
	exitTestFailed = 1
	exitInput      = 2
	exitInfra      = 3
)

// run executes a command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		// A bug must still not print a stack trace at the user.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "envctl: internal error: %v (please report this with the command you ran)\n", r)
			code = exitInfra
		}
	}()
	a := newApp(stdout, stderr)
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil && !a.started {
		// Cobra failed before any command ran: an unknown command, a bad
		// flag or a wrong number of arguments. That is usage.
		err = fault.AsInput(err)
	}
	if err != nil && !isQuiet(err) {
		fmt.Fprintf(stderr, "envctl: %s\n", oneLine(err.Error()))
	}
	return exitCode(err)
}

// exitCode maps an outcome to the process's exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var rx *remoteExit
	if errors.As(err, &rx) {
		return rx.status
	}
	switch fault.ClassOf(err) {
	case fault.TestFailed:
		return exitTestFailed
	case fault.Input:
		return exitInput
	}
	return exitInfra
}

// shown is an outcome the command already reported on stdout (a failed
// test's report): it sets the exit code and prints nothing more.
type shown struct{ class fault.Class }

func (s *shown) Error() string { return "the outcome is shown above" }

// FaultClass implements fault.Classed.
func (s *shown) FaultClass() fault.Class { return s.class }

// remoteExit carries a remote command's exit status through `envctl ssh`.
type remoteExit struct{ status int }

func (r *remoteExit) Error() string {
	return fmt.Sprintf("remote command exited with status %d", r.status)
}

func isQuiet(err error) bool {
	var s *shown
	var r *remoteExit
	return errors.As(err, &s) || errors.As(err, &r)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
