// Package task names the hook through which a long task (an image build,
// a component build) hands its own output to whoever shows progress: the
// CLI decides whether that output streams, goes to a log file behind a
// live line, or is shown only on failure.
package task

import "io"

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
