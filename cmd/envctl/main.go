package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/testimages"
)

func main() {
	// Inside a test container envctl is the workload: sleep, cat, pause.
	if testimages.Main() {
		return
	}
	os.Exit(run(os.Args[1:]))
}

// run executes the command line and returns the exit code.
func run(args []string) (code int) {
	defer func() {
		// A bug must still not print a stack trace at the user.
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "envctl: internal error: %v (please report this with the command you ran)\n", r)
			code = int(fault.Infra)
		}
	}()
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	if isUsageError(err) {
		err = fault.AsInput(err)
	}
	var fe *fault.Error
	if !(errors.As(err, &fe) && fe.Kind == fault.TestFailed && strings.HasPrefix(err.Error(), "-")) {
		fmt.Fprintf(os.Stderr, "envctl: %s\n", oneLine(err.Error()))
	}
	return fault.Code(err)
}

func isUsageError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(s, p) || strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
