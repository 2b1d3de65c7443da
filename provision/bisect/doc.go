// Package bisect finds the version step that broke a stack: it builds the
// ordered path of single-component version steps from a good spec to a bad
// one, then binary-searches it with real pipeline runs (or any command, as
// `git bisect run` does), going around probes that could not test, and
// reusing recent verdicts of cells with the same lock hash.
package bisect
