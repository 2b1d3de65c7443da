// Package libvirt owns envctl's use of libvirt through go-libvirt's RPC
// client: connecting to a libvirt URI, the envctl storage pool, per-
// environment volumes (qcow2 overlays backed by cached base images, and the
// uploaded cloud-init seed), domains built from libvirtxml structs with
// envctl metadata, and choosing the accelerator (KVM only where it really
// works, TCG otherwise). Nothing here shells out to virsh or qemu-img.
package libvirt
