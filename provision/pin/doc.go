// Package pin makes lock files: it resolves every cell of a profile against
// the release catalog and pins each artifact exactly (a release artifact's
// sha256 from upstream's checksum file, a Go module's go.sum hash, a local
// file's digest, a guest package's version) together with the base image's
// digest. It is the pipeline's resolve phase when a profile has no lock yet,
// and what `envctl lock` runs.
package pin
