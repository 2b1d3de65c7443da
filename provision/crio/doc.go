// Package crio owns the container runtime stack inside the guest: uploading
// the locked binaries to fixed paths, writing CRI-O's drop-in config
// (runtime pinned by path, conmon, pinns, cgroup manager, CNI), the test
// registry's registries.conf and policy, a systemd unit, starting CRI-O and
// waiting for its socket, and the drift check that compares every installed
// version with the lock.
package crio
