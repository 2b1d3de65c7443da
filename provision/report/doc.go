// Package report owns the result of a run: typed verdicts and step
// statuses, the components as locked and verified, phase timings, the
// human table with its one-line verdict, JUnit XML, and how the verdicts
// of many runs aggregate.
package report
