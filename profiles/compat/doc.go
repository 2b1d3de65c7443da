// Package compat owns envctl's knowledge of version incompatibilities
// between CRI-O, cri-tools and the CRI API: a small table of known pairs that
// break the image-volume test, the CRI fields each cri-api version carries,
// and turning a raw error from a test run into its cause.
package compat
