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

	"github.com/envctl/envctl/profiles/base/task"
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

// meter shows a transfer's bytes (task.MeterFunc): a live bar with byte
// counts on a terminal, a plain line at the start, at most once a period
// and at the end elsewhere, nothing with -q.
func (a *app) meter(what string) task.Meter {
	if a.quiet {
		return quietMeter{}
	}
	start := time.Now()
	if a.isTerminal() {
		p := mpb.New(mpb.WithOutput(a.stderr), mpb.WithAutoRefresh(), mpb.WithRefreshRate(500*time.Millisecond))
		bar := p.New(0, mpb.BarStyle(), mpb.BarWidth(30),
			mpb.PrependDecorators(decor.Name("==> "+what+" ", decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f")))
		return &barMeter{p: p, bar: bar}
	}
	a.step("%s", what)
	return &lineMeter{a: a, what: what, start: start, last: start, every: cmp.Or(a.stillEvery, stillEvery)}
}

type quietMeter struct{}

func (quietMeter) Set(int64, int64) {}
func (quietMeter) Done(error)       {}

// barMeter is a transfer's live bar.
type barMeter struct {
	mu   sync.Mutex
	p    *mpb.Progress
	bar  *mpb.Bar
	done bool
}

func (m *barMeter) Set(done, total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return
	}
	if total > 0 {
		m.bar.SetTotal(total, false)
	}
	m.bar.SetCurrent(done)
}

func (m *barMeter) Done(err error) {
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		return
	}
	m.done = true
	if err != nil {
		m.bar.Abort(false)
	} else {
		m.bar.SetTotal(-1, true)
	}
	m.mu.Unlock()
	m.p.Wait()
}

// lineMeter says how far a transfer got, at most once a period.
type lineMeter struct {
	mu          sync.Mutex
	a           *app
	what        string
	start, last time.Time
	every       time.Duration
	done, total int64
	ended       bool
}

func (m *lineMeter) Set(done, total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done, m.total = done, total
	if time.Since(m.last) >= m.every && !m.ended {
		m.last = time.Now()
		m.a.step("%s: %s", m.what, m.bytes())
	}
}

func (m *lineMeter) Done(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended {
		return
	}
	m.ended = true
	verdict := "done"
	if err != nil {
		verdict = "failed"
	}
	m.a.step("%s: %s, %s in %s", m.what, verdict, m.bytes(), time.Since(m.start).Round(time.Second))
}

func (m *lineMeter) bytes() string {
	if m.total > 0 {
		return fmt.Sprintf("%.1f of %.1f MiB", float64(m.done)/(1<<20), float64(m.total)/(1<<20))
	}
	return fmt.Sprintf("%.1f MiB", float64(m.done)/(1<<20))
}
