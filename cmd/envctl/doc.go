// Command envctl is the thin command line over envctl's packages: one file
// per verb (as Lima's cmd/limactl), each turning flags into options for
// profiles, images or provision/cellrun, rendering the result as a table,
// JSON or YAML on stdout, and returning an error whose class main.go maps
// to the exit code in one place (0 ok, 1 test failed, 2 bad input,
// 3 infrastructure).
package main
