// Command envctl is the envctl command line: it wires the profiles, images
// and provision packages into commands (profiles, show, lock, catalog, plan,
// up, matrix, status, ssh, down, gc, image ...), renders their results as
// tables, JSON or YAML on stdout, and maps errors to exit codes
// (0 ok, 1 test failed, 2 bad input, 3 infrastructure).
package main
