package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Long tasks (image and component builds) do not flood the screen: their
// own output goes to a log file whose path is said, and is shown whole
// (its last maxShownLog bytes) when the task fails. On a terminal a live
// line with the elapsed time stands for the task; off one (CI), a plain
// line says it is still running at most once a minute. -v streams the
// output as it comes; -q says nothing unless the task fails.
const (
	maxTaskLog  = 64 << 20    // bytes one task's log file keeps
	maxShownLog = 1 << 20     // bytes of it shown on failure
	stillEvery  = time.Minute // how often a plain line says a task still runs
)

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// task starts a long task (task.Func).
func (a *app) task(what string) (io.Writer, func(error)) {
	if a.verbose {
		return a.stderr, func(error) {}
	}
	start := time.Now()
	dir := filepath.Join(a.cacheDir, "logs")
	var f *os.File
	if err := os.MkdirAll(dir, 0o700); err == nil {
		name := unsafeName.ReplaceAllString(what, "-") + "-" + start.UTC().Format("20060102T150405") + ".log"
		f, _ = os.Create(filepath.Join(dir, name))
	}
	w, path := io.Discard, "(no log file)"
	if f != nil {
		w, path = &boundedWriter{w: f, left: maxTaskLog}, f.Name()
	}
	a.step("%s: its output goes to %s", what, path)
	stop := a.liveLine(what, start)
	var once sync.Once
	return w, func(err error) {
		once.Do(func() {
			stop(err)
			if f == nil {
				return
			}
			_ = f.Close()
			if err != nil {
				a.showLog(what, f.Name())
			}
		})
	}
}

// liveLine shows that a task runs: a live line with its elapsed time on
// a terminal, a plain line at most once a minute elsewhere; stop ends it.
func (a *app) liveLine(what string, start time.Time) (stop func(error)) {
	if a.quiet {
		return func(error) {}
	}
	if a.isTerminal() {
		p := mpb.New(mpb.WithOutput(a.stderr), mpb.WithAutoRefresh(), mpb.WithRefreshRate(500*time.Millisecond))
		bar := p.New(1, mpb.SpinnerStyle(), mpb.BarWidth(1), mpb.BarFillerClearOnComplete(),
			mpb.PrependDecorators(decor.Name("==> "+what+" ", decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return time.Since(start).Round(time.Second).String() })))
		return func(err error) {
			if err != nil {
				bar.Abort(false)
			} else {
				bar.SetCurrent(1)
			}
			p.Wait()
		}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cmp.Or(a.stillEvery, stillEvery))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				a.step("%s: still running (%s)", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func(err error) {
		close(done)
		verdict := "done"
		if err != nil {
			verdict = "failed"
		}
		a.step("%s: %s in %s", what, verdict, time.Since(start).Round(time.Second))
	}
}

// showLog prints a failed task's log (its end, when large) on stderr.
func (a *app) showLog(what, path string) {
	b, err := readEnd(path, maxShownLog)
	if err != nil {
		return
	}
	fmt.Fprintf(a.stderr, "==> %s failed; its output (%s):\n", what, path)
	_, _ = a.stderr.Write(b)
	if len(b) > 0 && !strings.HasSuffix(string(b), "\n") {
		fmt.Fprintln(a.stderr)
	}
}

// isTerminal reports whether progress goes to a terminal, for humans.
func (a *app) isTerminal() bool {
	if a.terminal != nil {
		return a.terminal()
	}
	f, ok := a.stderr.(*os.File)
	return ok && a.output == "table" && term.IsTerminal(int(f.Fd()))
}

// boundedWriter writes at most left bytes, then drops the rest (a task's
// output must not fill the disk), and says so once.
type boundedWriter struct {
	mu   sync.Mutex
	w    io.Writer
	left int64
	cut  bool
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left <= 0 {
		if !b.cut {
			b.cut = true
			_, _ = io.WriteString(b.w, "\n[envctl: the log passed its limit; the rest was dropped]\n")
		}
		return len(p), nil
	}
	q := p
	if int64(len(q)) > b.left {
		q = q[:b.left]
	}
	n, err := b.w.Write(q)
	b.left -= int64(n)
	if err != nil {
		return n, err
	}
	return len(p), nil
}
