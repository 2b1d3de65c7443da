// Package fault owns envctl's error classes and the exit codes they map to:
// 1 test failed, 2 bad input or usage, 3 infrastructure error. Every package
// marks the errors a user must act on; the command line turns them into codes.
package fault
