package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/vm"
)

// logSource is one of the logs `envctl logs` shows.
type logSource string

const (
	logConsole logSource = "console"
	logCRIO    logSource = "crio"
	logResults logSource = "results"
)

var logSources = []logSource{logConsole, logCRIO, logResults}

// maxLogBytes bounds what one source prints (its end is kept).
const maxLogBytes = 4 << 20

func newLogsCmd(a *app) *cobra.Command {
	var f vmFlags
	var follow bool
	var tail int
	var only []string
	cmd := &cobra.Command{
		Use:   "logs ENV",
		Short: "Show a kept environment's serial console, CRI-O's journal and the run's collected logs",
		Long: `logs shows, for a kept environment: its serial console, CRI-O's journal
from the guest (over SSH, when the VM runs), and the logs that its run
collected on failure (the results directory). --source picks some of
them; --tail N keeps the last N lines of each. -f follows CRI-O's journal
and the console until Ctrl-C.`,
		Example: `  envctl logs crio-1-34-runc-f412a7
  envctl logs crio-1-34-runc-f412a7 --source crio -f
  envctl logs crio-1-34-runc-f412a7 --source console --tail 50`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			var want []logSource
			for _, s := range only {
				if !slices.Contains(logSources, logSource(s)) {
					return fault.Inputf("--source %q: use console, crio or results", s)
				}
				want = append(want, logSource(s))
			}
			if len(want) == 0 {
				want = logSources
			}
			ctx, stop := a.signalContext(cmd)
			defer stop()
			return a.showLogs(ctx, &f, args[0], want, tail, follow)
		},
	}
	f.register(cmd, false)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow CRI-O's journal and the console until Ctrl-C")
	cmd.Flags().IntVar(&tail, "tail", 0, "show only the last N lines of each log (0: all, at most 4 MiB each)")
	cmd.Flags().StringSliceVar(&only, "source", nil, "the logs to show: console, crio, results (default all)")
	_ = cmd.RegisterFlagCompletionFunc("source", fixedCompletion("console", "crio", "results"))
	return cmd
}

func (a *app) showLogs(ctx context.Context, f *vmFlags, id string, want []logSource, tail int, follow bool) error {
	st := a.store()
	e, err := st.Load(id)
	if err != nil {
		return err
	}
	var m *vm.Machine
	needSSH := slices.Contains(want, logCRIO)
	if needSSH {
		if m, err = vm.Attach(ctx, a.vmOptions(f), e.ID); err != nil {
			fmt.Fprintf(a.stderr, "envctl: CRI-O's journal is not available: %s\n", oneLine(err.Error()))
		} else {
			defer m.Release()
		}
	}
	section := func(title string, b []byte) {
		fmt.Fprintf(a.stdout, "==> %s\n", title)
		_, _ = a.stdout.Write(lastLines(b, tail))
		if len(b) > 0 && b[len(b)-1] != '\n' {
			fmt.Fprintln(a.stdout)
		}
	}
	for _, s := range want {
		switch s {
		case logConsole:
			b, err := readEnd(e.ConsoleLog(), maxLogBytes)
			if err != nil && m != nil {
				b, err = m.Console(ctx)
			}
			if err != nil {
				fmt.Fprintf(a.stderr, "envctl: no console log: %v\n", err)
				continue
			}
			section("serial console ("+e.ConsoleLog()+")", b)
		case logCRIO:
			if m == nil || follow {
				continue
			}
			out, err := m.SSH.Output(ctx, fmt.Sprintf("journalctl -u crio --no-pager -o short-precise | tail -c %d", maxLogBytes))
			if err != nil && out == "" {
				fmt.Fprintf(a.stderr, "envctl: CRI-O's journal: %s\n", oneLine(err.Error()))
				continue
			}
			section("CRI-O's journal (journalctl -u crio)", []byte(out))
		case logResults:
			dirs := resultsOf(st, e.ID)
			if len(dirs) == 0 {
				fmt.Fprintf(a.stdout, "==> collected logs: none (a run collects them when it fails)\n")
				continue
			}
			for _, dir := range dirs {
				ents, _ := os.ReadDir(dir)
				for _, ent := range ents {
					p := filepath.Join(dir, ent.Name())
					if b, err := readEnd(p, maxLogBytes); err == nil {
						section("collected "+p, b)
					}
				}
			}
		}
	}
	if !follow {
		return nil
	}
	return a.followLogs(ctx, e.ConsoleLog(), m, want)
}

// followLogs streams CRI-O's journal and the growth of the console log
// until the context ends (Ctrl-C).
func (a *app) followLogs(ctx context.Context, console string, m *vm.Machine, want []logSource) error {
	done := make(chan error, 1)
	if m != nil && slices.Contains(want, logCRIO) {
		fmt.Fprintln(a.stdout, "==> following CRI-O's journal (Ctrl-C to stop)")
		go func() {
			done <- m.SSH.Run(ctx, "journalctl -u crio --no-pager -o short-precise -n 20 -f", nil, a.stdout, a.stderr)
		}()
	}
	if slices.Contains(want, logConsole) {
		go a.followFile(ctx, console)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		var ee *guest.ExitError
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil: // Ctrl-C ends a follow: that is its way out
			return nil //nolint:nilerr // the session's error is the interrupt's
		case errors.As(err, &ee):
			return &remoteExit{status: ee.Status}
		}
		return err
	}
}

// followFile prints what is appended to a file, as tail -f does.
func (a *app) followFile(ctx context.Context, path string) {
	var off int64
	if fi, err := os.Stat(path); err == nil {
		off = fi.Size()
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Size() < off {
			off = 0 // truncated
		}
		if _, err := f.Seek(off, io.SeekStart); err == nil {
			n, _ := io.Copy(a.stdout, io.LimitReader(f, maxLogBytes))
			off += n
		}
		_ = f.Close()
	}
}

// readEnd reads at most max bytes from the end of a file.
func readEnd(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		if _, err := f.Seek(fi.Size()-max, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// lastLines keeps the last n lines of b (all when n <= 0).
func lastLines(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, nil)
}
