// Package task owns the hooks between long work and the progress a user
// sees: a task.Func takes a build's own output (to a log file behind a
// live line, or streamed), and a Meter carried by the context takes a
// transfer's bytes. The packages that do the work call them; the CLI
// decides how they look.
package task
