// Package matrix runs many locked cells through the pipeline at once: it
// fetches or builds every artifact the cells share once, spreads the
// cells over one or more hypervisor hosts by their free capacity, bounds
// how many run at once, goes on when a host fails (its cells could not be
// tested; others take the rest), and keeps every finished cell's report.
// It also renders live progress, the summary grid, and the CI fan-out.
package matrix
