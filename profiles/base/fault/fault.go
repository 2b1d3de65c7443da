package fault

import "fmt"

// Class says who has to act on an error.
type Class int

// The classes. cmd/envctl maps them to exit codes in one place.
const (
	// Unclassified errors are treated as infrastructure failures.
	Unclassified Class = iota
	// TestFailed: the test ran and found the stack broken.
	TestFailed
	// Input: bad input or usage (profile, flag, lock); the user must fix it.
	Input
	// Infra: the machine, network, libvirt, a download, a build or the guest failed.
	Infra
)

func (c Class) String() string {
	switch c {
	case TestFailed:
		return "test-failed"
	case Input:
		return "input"
	case Infra:
		return "infrastructure"
	}
	return "unclassified"
}

// MarshalText writes the class's name, for reports.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a class's name back.
func (c *Class) UnmarshalText(b []byte) error {
	for _, k := range []Class{Unclassified, TestFailed, Input, Infra} {
		if k.String() == string(b) {
			*c = k
			return nil
		}
	}
	return fmt.Errorf("unknown error class %q", b)
}

// Classed is implemented by errors that know their class. A typed error of
// any package can implement it instead of being wrapped in *Error.
type Classed interface {
	FaultClass() Class
}

// Error gives a wrapped error a class.
type Error struct {
	Class Class
	Err   error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// FaultClass implements Classed.
func (e *Error) FaultClass() Class { return e.Class }

// Inputf makes a bad-input error.
func Inputf(format string, args ...any) error {
	return &Error{Class: Input, Err: fmt.Errorf(format, args...)}
}

// Infraf makes an infrastructure error.
func Infraf(format string, args ...any) error {
	return &Error{Class: Infra, Err: fmt.Errorf(format, args...)}
}

// AsInput classifies err as bad input unless it already has a class: the
// class set where an error was made is never overridden.
func AsInput(err error) error { return as(Input, err) }

// AsInfra classifies err as an infrastructure failure unless it already
// has a class.
func AsInfra(err error) error { return as(Infra, err) }

func as(c Class, err error) error {
	if err == nil || ClassOf(err) != Unclassified {
		return err
	}
	return &Error{Class: c, Err: err}
}

// ClassOf returns the class of the innermost classified error in err's
// chain: the class given where the error was made wins over any given by
// a caller that wrapped it. For a joined error the first branch that has a
// class decides.
func ClassOf(err error) Class {
	c := Unclassified
	for err != nil {
		if x, ok := err.(Classed); ok && x.FaultClass() != Unclassified {
			c = x.FaultClass()
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if k := ClassOf(e); k != Unclassified {
					return k
				}
			}
			return c
		default:
			return c
		}
	}
	return c
}

// Is reports whether err's class is c.
func Is(err error, c Class) bool { return err != nil && ClassOf(err) == c }
