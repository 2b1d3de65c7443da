// Package catalog owns envctl's embedded release catalog: which versions of
// CRI-O, cri-tools, runc, crun, conmon and the CNI plugins envctl knows, the
// upstream artifact and checksum URL of each, how a version can be built from
// the Go module proxy, and the resolution of exact versions and go-version
// constraints against that list.
package catalog
