// Package libvirt implements vm.Driver with go-libvirt's RPC client:
// connecting through go-libvirt's dialers, directory storage pools,
// per-environment volumes (qcow2 overlays on cached base images, uploaded
// raw volumes), domains rendered from libvirtxml structs with envctl's
// owner metadata, and the accelerator decision from the daemon's own
// capabilities. Every call has a deadline. Nothing here shells out to
// virsh or qemu-img.
package libvirt
