// Package atomicfile writes files whole or not at all: through a
// temporary file in the same directory, synced to disk before it is
// renamed over the target, so that a crash or a full disk leaves either
// the old file or the new one, never half of one. Locks, environment
// records, cache stamps and manifests, and the image registry use it.
package atomicfile
