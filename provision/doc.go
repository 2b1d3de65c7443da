// Package provision owns the life of one envctl VM: booting it under libvirt
// from a cached image with a fresh cloud-init seed, waiting for SSH with the
// pinned host key, attaching to a kept VM, and tearing everything down
// (domain, volumes, directory) on success, failure, Ctrl-C or `envctl gc`.
// Sub-packages: libvirt (the daemon), guest (SSH), env (state on the host),
// fault (exit codes).
package provision
