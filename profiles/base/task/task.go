package task

import (
	"context"
	"io"
)

// Func starts a long task named what: w receives the task's own output,
// and done is called once with its outcome (nil: success).
type Func func(what string) (w io.Writer, done func(err error))

// Begin starts a task through f, or, without one, writes to fallback (nil
// discards) and does nothing at the end.
func Begin(f Func, what string, fallback io.Writer) (io.Writer, func(error)) {
	if f != nil {
		return f(what)
	}
	if fallback == nil {
		fallback = io.Discard
	}
	return fallback, func(error) {}
}

// Meter follows a transfer's bytes: Set says how many of total are done
// (total 0: not known yet), Done ends it.
type Meter interface {
	Set(done, total int64)
	Done(err error)
}

// MeterFunc starts a meter for a transfer named what.
type MeterFunc func(what string) Meter

type meterKey struct{}

// WithMeters makes transfers under ctx report their bytes through f.
func WithMeters(ctx context.Context, f MeterFunc) context.Context {
	return context.WithValue(ctx, meterKey{}, f)
}

// StartMeter starts a meter for a transfer under ctx (one that reports
// nothing when the caller asked for none).
func StartMeter(ctx context.Context, what string) Meter {
	if f, ok := ctx.Value(meterKey{}).(MeterFunc); ok && f != nil {
		return f(what)
	}
	return nopMeter{}
}

type nopMeter struct{}

func (nopMeter) Set(int64, int64) {}
func (nopMeter) Done(error)       {}
