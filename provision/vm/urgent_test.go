package vm_test

import (
	"context"
	"testing"
	"time"

	"github.com/envctl/envctl/provision/vm"
)

func TestTeardownContext(t *testing.T) {
	old := vm.UrgentDeadline
	vm.UrgentDeadline = 50 * time.Millisecond
	defer func() { vm.UrgentDeadline = old }()

	urgent := make(chan struct{})
	ctx, cancel := context.WithCancel(vm.WithUrgent(context.Background(), urgent))
	cancel() // the first Ctrl-C: the run stops, teardown begins
	tctx, tcancel := vm.TeardownContext(ctx, time.Minute)
	defer tcancel()
	if tctx.Err() != nil || vm.Urgent(tctx) {
		t.Fatal("a teardown must outlive the cancellation that started it")
	}
	close(urgent) // the second Ctrl-C
	if !vm.Urgent(tctx) {
		t.Error("urgency is not visible to the teardown")
	}
	select {
	case <-tctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an urgent teardown kept its long deadline")
	}
	// Without urgency, the deadline is the one given.
	plain, pcancel := vm.TeardownContext(context.Background(), 30*time.Millisecond)
	defer pcancel()
	<-plain.Done()
	if vm.Urgent(plain) {
		t.Error("urgent without a channel")
	}
}
