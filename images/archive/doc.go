// Package archive owns where a locally built Debian image takes its
// packages from: Debian's live mirrors (as mmdebstrap picks them: the
// suite, its -updates and its -security suites), one mirror named by URL
// (http or file://), or the snapshot archive (snapshot.debian.org, or a
// copy in its layout) at one archive state. It turns that choice into apt
// source lines for the build script, finds the snapshot that serves a
// recorded archive state, and reads the archive state a build saw from
// its suites' Release dates: the timestamp a lock records as the image's
// snapshot.
package archive
