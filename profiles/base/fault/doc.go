// Package fault is envctl's error vocabulary: the classes an error is given
// where it is made (bad input, infrastructure, test failed). It is
// layer-neutral: every layer imports it and it imports nothing of envctl
// (see profiles/base); only cmd/envctl turns classes into exit codes.
package fault
