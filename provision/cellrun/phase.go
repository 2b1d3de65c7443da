package cellrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/report"
)

// The phases of a run, in order.
const (
	PhaseFetch    = "fetch"
	PhaseBoot     = "boot"
	PhaseInstall  = "install"
	PhaseVerify   = "verify"
	PhaseSave     = "save" // a cold run saves a warm state for the next
	PhaseTest     = "test"
	PhaseCollect  = "collect"
	PhaseTeardown = "teardown"
)

// DefaultTimeouts bound each phase. Boot is also bounded by the VM
// options' BootTimeout (until SSH answers); fetch covers cold builds.
var DefaultTimeouts = map[string]time.Duration{
	PhaseFetch:   45 * time.Minute,
	PhaseBoot:    20 * time.Minute,
	PhaseInstall: 10 * time.Minute,
	PhaseVerify:  3 * time.Minute,
	PhaseTest:    15 * time.Minute,
}

// DefaultDeadman is a restored guest's dead-man period without --timeout:
// longer than any phase after boot, so a live run always renews in time.
const DefaultDeadman = 20 * time.Minute

// PhaseTimeoutError is a phase that did not end within its limit.
type PhaseTimeoutError struct {
	Phase string
	Limit time.Duration
}

func (e *PhaseTimeoutError) Error() string {
	return fmt.Sprintf("the %s phase did not finish within its limit of %s", e.Phase, e.Limit)
}

// FaultClass implements fault.Classed: a phase that hangs could not test.
func (e *PhaseTimeoutError) FaultClass() fault.Class { return fault.Infra }

func (r *run) timeout(name string) time.Duration {
	if d, ok := r.opts.Timeouts[name]; ok && d > 0 {
		return d
	}
	return DefaultTimeouts[name]
}

// phase runs one phase within its time limit, timing it and reporting
// progress. A phase that overruns its limit ends with a PhaseTimeoutError.
func (r *run) phase(ctx context.Context, name string, f func(context.Context) error) error {
	if r.opts.Progress != nil {
		r.opts.Progress(Event{Cell: r.cell.Name, Phase: name})
	}
	r.renewDeadman(ctx)
	start := time.Now()
	pctx, cancel := ctx, context.CancelFunc(func() {})
	limit := r.timeout(name)
	if limit > 0 {
		pctx, cancel = context.WithTimeoutCause(ctx, limit, &PhaseTimeoutError{Phase: name, Limit: limit})
	}
	err := f(pctx)
	var pt *PhaseTimeoutError
	if cause := context.Cause(pctx); ctx.Err() == nil && errors.As(cause, &pt) && (err != nil || pctx.Err() != nil) {
		err = fmt.Errorf("%w (last error: %v)", cause, err)
	}
	cancel()
	took := time.Since(start)
	r.phases = append(r.phases, report.Phase{Name: name, Seconds: took.Round(10 * time.Millisecond).Seconds()})
	if r.opts.Progress != nil {
		r.opts.Progress(Event{Cell: r.cell.Name, Phase: name, Done: true, Took: took, Err: err})
	}
	return err
}

func (r *run) sub(name string, d time.Duration) {
	r.phases = append(r.phases, report.Phase{Name: name, Seconds: d.Round(10 * time.Millisecond).Seconds()})
}

// stopped says why a run stopped early when ctx ended: an interrupt or
// --timeout (the context's cause), rather than whatever error the phase
// in flight returned.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	why := cause.Error()
	if cause == context.Canceled {
		why = "interrupted"
	}
	what := "the VM was torn down"
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		what += "; the phase in flight said: " + err.Error()
	}
	return fault.Infraf("stopped: %s (%s)", why, what)
}
