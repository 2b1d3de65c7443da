package fault

import (
	"errors"
	"fmt"
)

// Kind classifies an error by who has to act on it.
type Kind int

// Exit codes, shared by every envctl command.
const (
	OK         Kind = 0
	TestFailed Kind = 1
	Input      Kind = 2
	Infra      Kind = 3
)

// Error carries a Kind along with the wrapped error.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Inputf reports bad input or usage (exit 2).
func Inputf(format string, args ...any) error {
	return &Error{Kind: Input, Err: fmt.Errorf(format, args...)}
}

// Infraf reports an infrastructure failure (exit 3).
func Infraf(format string, args ...any) error {
	return &Error{Kind: Infra, Err: fmt.Errorf(format, args...)}
}

// Failedf reports a failed test (exit 1).
func Failedf(format string, args ...any) error {
	return &Error{Kind: TestFailed, Err: fmt.Errorf(format, args...)}
}

// AsInput marks err as bad input, keeping its text.
func AsInput(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: Input, Err: err}
}

// AsInfra marks err as an infrastructure failure unless it is already classified.
func AsInfra(err error) error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	return &Error{Kind: Infra, Err: err}
}

// Code returns the process exit code for err: 0 for nil, the innermost
// classified kind otherwise, and 3 for anything unclassified.
func Code(err error) int {
	if err == nil {
		return 0
	}
	var fe *Error
	if errors.As(err, &fe) {
		return int(fe.Kind)
	}
	return int(Infra)
}
