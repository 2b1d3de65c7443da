// Package artdisk owns the artifact disk: one read-only raw volume that
// carries every file a cell installs into the guest, as an uncompressed
// tar written deterministically. It replaces the SFTP upload: the disk is
// built once per set of files (keyed by their guest paths and digests),
// kept in the artifact cache as a blob named by its own sha256 (so the
// cache's stamps, verify, ls and gc cover it), attached to the domain
// through the libvirt API, and unpacked in the guest with one tar command.
// Every file is checked against its recorded digest while the disk is
// written, so a disk never holds a file other than the verified one.
package artdisk
