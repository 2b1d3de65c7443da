// Package provision holds no code: its subpackages make and drive VMs,
// the layer between images (base images on this machine) and cmd (the
// command line). cellrun is the pipeline of one cell; start, vm, libvirt,
// guest and env bring a guest up and down; artifacts, pin, artdisk and
// crio get the locked stack into it; imagevolume, bats and testimages test
// it; report says what happened; matrix and bisect run many cells. See
// docs/architecture.md.
package provision
