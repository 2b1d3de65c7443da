// Package lock owns envctl lock files: resolving a profile to exact
// artifacts (URL and sha256, Go module and its sum, a local file's digest, a
// guest package's version) plus the image digest and the profile's hash,
// writing them next to the profile, and refusing to run a profile that no
// longer matches its lock.
package lock
