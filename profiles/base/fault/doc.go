// Package fault is envctl's error vocabulary: the classes an error is given
// where it is made (bad input, infrastructure, test failed). Every layer may
// import it, so it lives in the lowest one; only cmd/envctl turns classes
// into exit codes.
package fault
