package task

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestBeginAndMeters(t *testing.T) {
	var fallback bytes.Buffer
	w, done := Begin(nil, "x", &fallback)
	_, _ = io.WriteString(w, "to the fallback")
	done(nil)
	if fallback.String() != "to the fallback" {
		t.Errorf("fallback got %q", fallback.String())
	}
	if w, _ := Begin(nil, "x", nil); w != io.Discard {
		t.Error("no fallback: output not discarded")
	}
	var got error
	w, done = Begin(func(what string) (io.Writer, func(error)) {
		return io.Discard, func(err error) { got = errors.New(what + ": " + err.Error()) }
	}, "build", nil)
	done(errors.New("exit 1"))
	if w != io.Discard || got == nil || got.Error() != "build: exit 1" {
		t.Errorf("task: %v", got)
	}
	// No meter asked for: a transfer reports into nothing.
	m := StartMeter(context.Background(), "push")
	m.Set(1, 2)
	m.Done(nil)
	var seen string
	ctx := WithMeters(context.Background(), func(what string) Meter { seen = what; return nopMeter{} })
	StartMeter(ctx, "export f.tar").Done(nil)
	if seen != "export f.tar" {
		t.Errorf("meter started for %q", seen)
	}
}
