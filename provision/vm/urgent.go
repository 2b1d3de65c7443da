package vm

import (
	"context"
	"time"
)

// UrgentDeadline is how long a teardown may still take once the user asked
// twice to stop (a second Ctrl-C).
var UrgentDeadline = 10 * time.Second

type urgentKey struct{}

// WithUrgent returns a context that carries a channel closed when the user
// asks to stop at once. Teardowns derived from it (TeardownContext) then
// cut their deadline to UrgentDeadline and skip what is not removal.
func WithUrgent(ctx context.Context, urgent <-chan struct{}) context.Context {
	return context.WithValue(ctx, urgentKey{}, urgent)
}

// Urgent reports whether the user asked to stop at once.
func Urgent(ctx context.Context) bool {
	u, _ := ctx.Value(urgentKey{}).(<-chan struct{})
	if u == nil {
		return false
	}
	select {
	case <-u:
		return true
	default:
		return false
	}
}

// TeardownContext is the context a teardown runs in: it outlives ctx's
// cancellation (that is what starts a teardown) but not its values, ends
// after d, and ends UrgentDeadline after an urgent stop.
func TeardownContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	u, _ := ctx.Value(urgentKey{}).(<-chan struct{})
	if u == nil {
		return tctx, cancel
	}
	go func() {
		select {
		case <-u:
			t := time.NewTimer(UrgentDeadline)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-tctx.Done():
			}
		case <-tctx.Done():
		}
	}()
	return tctx, cancel
}
