// Package cellrun is envctl's pipeline: it runs one locked cell end to end
// through explicit phases (fetch, boot, install, verify, test, collect,
// teardown) and assembles one report in one place. Resolve is the phase
// before: it turns a profile into locked cells, writing the lock on first
// use. `envctl up` and `envctl matrix` call it, and so will bisect probes
// and warm starts. Everything that varies (progress, keep, the results
// directory, the hypervisor connection, the artifact and image sources) is
// an option, never a global.
package cellrun
