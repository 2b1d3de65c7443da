// Package testimages owns the hermetic OCI images the image-volume test
// uses, built deterministically in Go with go-containerregistry: an
// "artifact" volume image with /dir/file = 1 and /file = 2 (the content of
// upstream's quay.io/crio/artifact:v1), and a workload/pause image whose only
// binary is a small static program answering to sleep, cat and pause
// (multicall.go, built on its own or envctl itself when static). It serves
// them from an in-process registry on host loopback.
package testimages
