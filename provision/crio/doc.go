// Package crio owns installing a locked runtime stack into a booted guest:
// uploading the binaries (checked by sha256 in the guest), CRI-O's drop-in
// configuration (runtime and conmon pinned by path, rendered from a typed
// document with go-toml), registries, policy, crictl and CNI configuration,
// starting CRI-O and waiting for its socket, and the drift check that
// proves the guest runs exactly the locked versions. It reaches the guest
// through the narrow Guest interface.
package crio
