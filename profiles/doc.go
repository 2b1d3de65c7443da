// Package profiles owns envctl profiles: the YAML files that pin a container
// runtime stack (CRI-O, cri-tools, runc or crun, conmon, CNI plugins), their
// loading (a Loader with explicit search directories and overrides: this
// package reads no environment), strict validation with
// errors that name the file, line and field, version resolution against the
// release catalog, and matrix expansion into cells. The example profiles ship
// in this directory.
package profiles
