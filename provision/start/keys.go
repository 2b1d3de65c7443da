package start

import (
	"fmt"

	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/warm"
)

// Guest is everything that determines a saved guest, the one source of
// both keys: a post-boot state depends on what the guest is up to the
// moment SSH first answers (the image, the VM shape and how it is run); a
// warm state also on what was installed and configured after (the cell's
// lock entry, the artifact disk, the test registry and pause image).
type Guest struct {
	Image  lock.Image
	CPUs   int
	Memory uint64 // bytes
	Disk   uint64 // bytes
	VM     vm.Options
	// Host is the hypervisor build and host CPU (Start asks for them).
	Host vm.HostIdentity
	// What only a warm state depends on.
	Cell      string // the cell's lock hash
	Artifacts string // the artifact disk's digest
	Registry  string // the test registry the guest pulls from
	Pause     string // the pause image CRI-O is configured with
}

// shape is how the guest is run: its size and the hypervisor's choices.
func (g Guest) shape() []string {
	v := g.VM
	return []string{
		fmt.Sprintf("vm=%d cpus %d memory %d disk", g.CPUs, g.Memory, g.Disk),
		"uri=" + v.URI, "accel=" + string(v.Accel), "network=" + string(v.Network), "kernel-args=" + v.KernelArgs,
		"seed=" + string(v.Seed), fmt.Sprintf("online=%t", v.Online),
		"qemu=" + g.Host.QEMU, "host-cpu=" + g.Host.CPU,
	}
}

// PostBootKey keys the post-boot states this guest can share.
func (g Guest) PostBootKey() string {
	im := g.Image
	return warm.Key(append([]string{"post-boot", "image=" + im.Digest + " kernel=" + im.Kernel + " initrd=" + im.Initrd}, g.shape()...)...)
}

// WarmKey keys this guest's warm state.
func (g Guest) WarmKey() string {
	parts := append([]string{"cell=" + g.Cell}, g.shape()...)
	return warm.Key(append(parts, "artifacts="+g.Artifacts, "registry="+g.Registry, "pause="+g.Pause)...)
}
