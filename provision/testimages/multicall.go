package testimages

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Main runs the workload personalities when envctl is started under one of
// their names inside a test container. It returns false otherwise.
func Main() bool {
	switch filepath.Base(os.Args[0]) {
	case "sleep":
		os.Exit(sleepMain(os.Args[1:]))
	case "cat":
		os.Exit(catMain(os.Args[1:]))
	case "pause":
		os.Exit(pauseMain())
	case "true":
		os.Exit(0)
	}
	return false
}

// sleepMain sleeps, but exits promptly on SIGTERM even as PID 1.
func sleepMain(args []string) int {
	d := 365 * 24 * time.Hour
	if len(args) > 0 && args[0] != "infinity" {
		s, err := strconv.ParseFloat(args[0], 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sleep: invalid time interval %q\n", args[0])
			return 1
		}
		d = time.Duration(s * float64(time.Second))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-time.After(d):
		return 0
	case <-sig:
		return 0
	}
}

func catMain(args []string) int {
	code := 0
	for _, a := range args {
		f, err := os.Open(a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cat: %v\n", err)
			code = 1
			continue
		}
		if _, err := io.Copy(os.Stdout, f); err != nil {
			fmt.Fprintf(os.Stderr, "cat: %v\n", err)
			code = 1
		}
		_ = f.Close()
	}
	return code
}

// pauseMain is the pod infra process: it waits for SIGTERM or SIGINT.
func pauseMain() int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}
