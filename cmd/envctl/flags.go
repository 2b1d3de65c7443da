package main

import (
	"fmt"
	"strings"
)

// enumFlag is a pflag.Value over a typed string that takes one of a
// fixed set of values (cellrun.TestImages, cellrun.Upload, …).
type enumFlag[T ~string] struct {
	v       *T
	allowed []T
	what    string // "a test image source"
}

func newEnum[T ~string](v *T, def T, allowed []T, what string) *enumFlag[T] {
	*v = def
	return &enumFlag[T]{v: v, allowed: allowed, what: what}
}

func (f *enumFlag[T]) String() string { return string(*f.v) }

// Set implements pflag.Value.
func (f *enumFlag[T]) Set(s string) error {
	for _, a := range f.allowed {
		if string(a) == s {
			*f.v = a
			return nil
		}
	}
	return fmt.Errorf("%q is not %s: use %s", s, f.what, f.names(" or "))
}

// Type implements pflag.Value.
func (f *enumFlag[T]) Type() string { return f.names("|") }

func (f *enumFlag[T]) names(sep string) string {
	out := make([]string, len(f.allowed))
	for i, a := range f.allowed {
		out[i] = string(a)
	}
	return strings.Join(out, sep)
}

// choices lists an enum flag's values, for completion.
func (f *enumFlag[T]) choices() []string { return strings.Split(f.names("|"), "|") }
