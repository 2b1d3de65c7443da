// Package ociartifact owns a base image as an OCI artifact: its disk,
// kernel and initrd as zstd-compressed blobs, and its description (name,
// format, recipe, archive snapshot, package set, and each file's content
// digest) as the config blob. It packs such an artifact from files,
// unpacks one into files while checking every blob twice (the compressed
// bytes against the manifest, the content against the digests a lock
// pins), pushes and pulls it to and from any OCI registry with
// go-containerregistry, and writes and reads it as an OCI image layout
// tarball for CI caches and air-gapped hosts. An artifact is tagged by its
// disk digest ("sha256-<hex>"), so a lock's pin is enough to find it.
package ociartifact
