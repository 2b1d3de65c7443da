package matrix

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/report"
)

// phasesPerCell is how many top-level phases a full run has.
const phasesPerCell = 6

// Progress shows one line per cell with its current phase: live bars on a
// terminal (mpb), a line per phase change otherwise (CI logs).
type Progress struct {
	w     io.Writer
	mu    sync.Mutex
	p     *mpb.Progress
	bars  map[string]*mpb.Bar
	phase map[string]string
}

// NewProgress starts showing the cells.
func NewProgress(w io.Writer, cells []string, live bool) *Progress {
	pr := &Progress{w: w, bars: map[string]*mpb.Bar{}, phase: map[string]string{}}
	width := 0
	for _, c := range cells {
		width = max(width, len(c))
	}
	if live {
		pr.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(24), mpb.WithRefreshRate(200*time.Millisecond), mpb.WithAutoRefresh())
		for _, c := range cells {
			name := c
			pr.phase[name] = "waiting"
			pr.bars[name] = pr.p.AddBar(phasesPerCell,
				mpb.PrependDecorators(decor.Name(name+strings.Repeat(" ", width-len(name)+1)), decor.Any(func(decor.Statistics) string {
					pr.mu.Lock()
					defer pr.mu.Unlock()
					return fmt.Sprintf("%-10s", pr.phase[name])
				})),
				mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO)))
		}
	}
	return pr
}

// Event records a phase starting or ending.
func (pr *Progress) Event(e cellrun.Event) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.p == nil {
		if !e.Done {
			fmt.Fprintf(pr.w, "[%s] %s\n", e.Cell, e.Phase)
		}
		return
	}
	if !e.Done {
		pr.phase[e.Cell] = e.Phase
	} else if b := pr.bars[e.Cell]; b != nil && !strings.Contains(e.Phase, ".") {
		b.Increment()
	}
}

// Finish records a cell's outcome.
func (pr *Progress) Finish(r *report.Report) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.p == nil {
		fmt.Fprintln(pr.w, r.Summary())
		return
	}
	pr.phase[r.Cell] = strings.ToUpper(string(r.Verdict))
	if b := pr.bars[r.Cell]; b != nil {
		b.SetTotal(-1, true)
	}
}

// Wait ends the display; cells that never ran are marked so.
func (pr *Progress) Wait() {
	if pr.p == nil {
		return
	}
	pr.mu.Lock()
	for name, b := range pr.bars {
		if !b.Completed() {
			pr.phase[name] = "not run"
			b.SetTotal(-1, true)
		}
	}
	pr.mu.Unlock()
	pr.p.Wait()
}
