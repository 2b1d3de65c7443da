// Package bats runs an upstream bats file in the guest (CRI-O's own
// test/oci_volumes.bats, from the locked CRI-O source) and reads its TAP
// output into report steps: one per upstream test, pass, fail with bats'
// output, or skip with its reason.
package bats
