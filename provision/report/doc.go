// Package report owns the result of one envctl run: the versions installed
// and verified, every test step with its status, duration, command and
// trimmed output, the verdict and the diagnosis, and rendering it as a step
// table, JSON or JUnit XML.
package report
