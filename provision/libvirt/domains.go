package libvirt

import (
	"context"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

// Start defines and starts a domain.
func (c *Conn) Start(ctx context.Context, spec vm.DomainSpec) error {
	x, err := DomainXML(spec)
	if err != nil {
		return fault.AsInfra(err)
	}
	if err := c.letQEMUReach(ctx, specFiles(spec)...); err != nil {
		return err
	}
	return c.call(ctx, "start domain "+spec.Name, 0, func() error {
		if spec.AutoDestroy {
			// Transient, and destroyed by libvirtd when this connection
			// goes, however envctl dies: nothing of it outlives the run
			// but files that gc removes.
			if _, err := c.l.DomainCreateXML(x, golibvirt.DomainStartAutodestroy); err != nil {
				return fault.Infraf("start domain %s: %w", spec.Name, err)
			}
			return nil
		}
		d, err := c.l.DomainDefineXMLFlags(x, 0)
		if err != nil {
			return fault.Infraf("define domain %s: %w", spec.Name, err)
		}
		if _, err := c.l.DomainCreateWithFlags(d, 0); err != nil {
			_ = c.l.DomainUndefineFlags(d, golibvirt.DomainUndefineSnapshotsMetadata|golibvirt.DomainUndefineNvram)
			return fault.Infraf("start domain %s: %w", spec.Name, err)
		}
		return nil
	})
}

// SnapshotMemory takes a live external snapshot of a running domain
// without snapshot metadata: its memory goes to memPath (in the format
// RestoreDomain reads), the first disk goes on in top (an existing qcow2
// whose backing file is that disk, which is left as it was), and the
// other disks are not snapshotted. The domain keeps running as it was
// started (AUTODESTROY included).
func (c *Conn) SnapshotMemory(ctx context.Context, name, memPath, top string, disks int, memoryMiB uint64) error {
	snap := libvirtxml.DomainSnapshot{
		Memory: &libvirtxml.DomainSnapshotMemory{Snapshot: "external", File: memPath},
		Disks:  &libvirtxml.DomainSnapshotDisks{},
	}
	for i := range disks {
		d := libvirtxml.DomainSnapshotDisk{Name: "vd" + string(rune('a'+i)), Snapshot: "no"}
		if i == 0 {
			d.Snapshot = "external"
			d.Driver = &libvirtxml.DomainDiskDriver{Type: "qcow2"}
			d.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: top}}
		}
		snap.Disks.Disks = append(snap.Disks.Disks, d)
	}
	x, err := snap.Marshal()
	if err != nil {
		return fault.AsInfra(err)
	}
	if err := c.letQEMUReach(ctx, memPath, top); err != nil {
		return err
	}
	return c.callSettled(ctx, "snapshot domain "+name, vm.SaveLimit(memoryMiB), func() error {
		d, err := c.l.DomainLookupByName(name)
		if err != nil {
			return fault.Infraf("snapshot domain %s: %w", name, err)
		}
		flags := golibvirt.DomainSnapshotCreateNoMetadata | golibvirt.DomainSnapshotCreateLive | golibvirt.DomainSnapshotCreateReuseExt
		if _, err := c.l.DomainSnapshotCreateXML(d, x, uint32(flags)); err != nil {
			return fault.Infraf("snapshot domain %s to %s: %w", name, memPath, err)
		}
		return nil
	})
}

// RestoreDomain starts a saved domain again, running, under its saved
// name and UUID, with what spec gives in place of what the save holds:
// disk sources by position, envctl's metadata, the SSH port and the
// console log. It returns the domain's name.
func (c *Conn) RestoreDomain(ctx context.Context, path string, spec vm.DomainSpec) (string, error) {
	var name string
	if err := c.letQEMUReach(ctx, append(specFiles(spec), path)...); err != nil {
		return "", err
	}
	err := c.callSettled(ctx, "restore domain from "+path, vm.SaveLimit(spec.MemoryMiB), func() error {
		saved, err := c.l.DomainSaveImageGetXMLDesc(path, 0)
		if err != nil {
			return fault.Infraf("read saved domain %s: %w", path, err)
		}
		x, n, err := RestoreXML(saved, spec)
		if err != nil {
			return fault.Infraf("saved domain %s: %w", path, err)
		}
		name = n
		if err := c.l.DomainRestoreFlags(path, golibvirt.OptString{x}, uint32(golibvirt.DomainSaveRunning)); err != nil {
			return fault.Infraf("restore domain %s from %s: %w", n, path, err)
		}
		return nil
	})
	return name, err
}

// AttachDisk hot-plugs a disk into a running domain as disk number i
// (vda, vdb, …); the guest sees it at once (PCI hot-plug).
func (c *Conn) AttachDisk(ctx context.Context, name string, disk vm.Disk, i int) error {
	x, err := DiskXML(disk, i)
	if err != nil {
		return fault.AsInfra(err)
	}
	if err := c.letQEMUReach(ctx, append([]string{disk.Path}, disk.Backing...)...); err != nil {
		return err
	}
	return c.call(ctx, "attach a disk to domain "+name, 0, func() error {
		d, err := c.l.DomainLookupByName(name)
		if err != nil {
			return fault.Infraf("attach %s to domain %s: %w", disk.Path, name, err)
		}
		if err := c.l.DomainAttachDeviceFlags(d, x, uint32(golibvirt.DomainDeviceModifyLive)); err != nil {
			return fault.Infraf("attach %s to domain %s: %w", disk.Path, name, err)
		}
		return nil
	})
}

// Remove destroys (if running) and undefines a domain; a missing one is fine.
func (c *Conn) Remove(ctx context.Context, name string) error {
	return c.call(ctx, "remove domain "+name, 0, func() error {
		d, err := c.l.DomainLookupByName(name)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return fault.Infraf("domain %s: %w", name, err)
		}
		if err := c.l.DomainDestroy(d); err != nil && !isNotFound(err) && !isNotRunning(err) {
			return fault.Infraf("destroy domain %s: %w", name, err)
		}
		if err := c.l.DomainUndefineFlags(d, golibvirt.DomainUndefineSnapshotsMetadata|golibvirt.DomainUndefineManagedSave|golibvirt.DomainUndefineNvram); err != nil && !isNotFound(err) {
			return fault.Infraf("undefine domain %s: %w", name, err)
		}
		return nil
	})
}

func domainState(s int32) vm.DomainState {
	switch golibvirt.DomainState(s) {
	case golibvirt.DomainRunning:
		return vm.DomainRunning
	case golibvirt.DomainPaused, golibvirt.DomainPmsuspended:
		return vm.DomainPaused
	case golibvirt.DomainShutoff, golibvirt.DomainShutdown, golibvirt.DomainCrashed:
		return vm.DomainShutOff
	}
	return vm.DomainOther
}

// Domains lists every domain that carries envctl metadata.
func (c *Conn) Domains(ctx context.Context) (out []vm.Domain, err error) {
	err = c.call(ctx, "list domains", 0, func() error {
		doms, _, err := c.l.ConnectListAllDomains(1, 0)
		if err != nil {
			return fault.Infraf("list domains: %w", err)
		}
		for _, d := range doms {
			raw, err := c.l.DomainGetMetadata(d, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{MetadataNS}, golibvirt.DomainAffectCurrent)
			if err != nil {
				continue
			}
			m, err := ParseMetadata(raw)
			if err != nil || m.ID == "" {
				continue
			}
			state, _, err := c.l.DomainGetState(d, 0)
			st := domainState(state)
			if err != nil {
				st = vm.DomainOther
			}
			out = append(out, vm.Domain{Name: d.Name, State: st, Meta: m})
		}
		return nil
	})
	return out, err
}

// State reports one domain's state.
func (c *Conn) State(ctx context.Context, name string) (st vm.DomainState, err error) {
	err = c.call(ctx, "domain state", 0, func() error {
		d, err := c.l.DomainLookupByName(name)
		if err != nil {
			if isNotFound(err) {
				st = vm.DomainMissing
				return nil
			}
			return fault.Infraf("domain %s: %w", name, err)
		}
		s, _, err := c.l.DomainGetState(d, 0)
		if err != nil {
			return fault.Infraf("domain %s: %w", name, err)
		}
		st = domainState(s)
		return nil
	})
	return st, err
}

// CPUTime is the domain's CPU time so far, as libvirt counts it (for
// QEMU: the whole process, every vCPU thread included).
func (c *Conn) CPUTime(ctx context.Context, name string) (used time.Duration, err error) {
	err = c.call(ctx, "domain CPU time", 0, func() error {
		d, err := c.l.DomainLookupByName(name)
		if err != nil {
			return fault.Infraf("domain %s: %w", name, err)
		}
		_, _, _, _, ns, err := c.l.DomainGetInfo(d)
		if err != nil {
			return fault.Infraf("domain %s: CPU time: %w", name, err)
		}
		used = time.Duration(ns)
		return nil
	})
	return used, err
}

// LeaseIP returns the IPv4 address libvirt's DHCP server leased to the
// domain's first interface on the named network, or "" while there is none.
func (c *Conn) LeaseIP(ctx context.Context, network, domain string) (ip string, err error) {
	err = c.call(ctx, "DHCP leases", 0, func() error {
		d, err := c.l.DomainLookupByName(domain)
		if err != nil {
			return fault.Infraf("domain %s: %w", domain, err)
		}
		x, err := c.l.DomainGetXMLDesc(d, 0)
		if err != nil {
			return fault.Infraf("domain %s: %w", domain, err)
		}
		var def libvirtxml.Domain
		if err := def.Unmarshal(x); err != nil {
			return fault.Infraf("domain %s: %w", domain, err)
		}
		if def.Devices == nil || len(def.Devices.Interfaces) == 0 || def.Devices.Interfaces[0].MAC == nil {
			return fault.Infraf("domain %s has no network interface with a MAC address", domain)
		}
		mac := strings.ToLower(def.Devices.Interfaces[0].MAC.Address)
		n, err := c.l.NetworkLookupByName(network)
		if err != nil {
			return fault.Infraf("network %s: %w; define and start it, or use --network user", network, err)
		}
		leases, _, err := c.l.NetworkGetDhcpLeases(n, golibvirt.OptString{mac}, 1, 0)
		if err != nil {
			return fault.Infraf("DHCP leases of network %s: %w", network, err)
		}
		for _, l := range leases {
			if l.Type == int32(golibvirt.IPAddrTypeIpv4) {
				ip = l.Ipaddr
				return nil
			}
		}
		return nil
	})
	return ip, err
}
