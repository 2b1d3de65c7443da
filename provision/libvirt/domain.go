package libvirt

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/provision/vm"
)

// MetadataNS is the XML namespace of envctl's domain metadata.
const MetadataNS = "https://envctl.dev/xmlns/env/1"

// ParseMetadata reads envctl metadata from a domain's metadata XML.
func ParseMetadata(s string) (vm.Metadata, error) {
	var m struct {
		XMLName xml.Name `xml:"env"`
		vm.Metadata
	}
	err := xml.Unmarshal([]byte(s), &m)
	return m.Metadata, err
}

func metadataXML(m vm.Metadata) (string, error) {
	b, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"envctl:env"`
		NS      string   `xml:"xmlns:envctl,attr"`
		ID      string   `xml:"envctl:id"`
		Profile string   `xml:"envctl:profile"`
		PID     int      `xml:"envctl:pid"`
		Created string   `xml:"envctl:created"`
		Owner   string   `xml:"envctl:owner"`
		Host    string   `xml:"envctl:host"`
		URI     string   `xml:"envctl:uri"`
	}{NS: MetadataNS, ID: m.ID, Profile: m.Profile, PID: m.PID, Created: m.Created, Owner: m.Owner, Host: m.Host, URI: m.URI})
	return string(b), err
}

// DomainXML renders a domain definition from libvirtxml structs.
func DomainXML(s vm.DomainSpec) (string, error) {
	if s.Type != vm.DomainKVM && s.Type != vm.DomainQEMU {
		return "", fmt.Errorf("domain %s: type %q", s.Name, s.Type)
	}
	meta, err := metadataXML(s.Metadata)
	if err != nil {
		return "", err
	}
	d := &libvirtxml.Domain{
		Type:     string(s.Type),
		Name:     s.Name,
		Metadata: &libvirtxml.DomainMetadata{XML: meta},
		Memory:   &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(s.CPUs)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		},
		Features: &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			APIC: &libvirtxml.DomainFeatureAPIC{},
		},
		OnPoweroff: "destroy",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.ConsoleLog}},
				Target: &libvirtxml.DomainSerialTarget{Port: new(uint(0))},
			}},
			RNGs: []libvirtxml.DomainRNG{{
				Model:   "virtio",
				Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	for i, disk := range s.Disks {
		d.Devices.Disks = append(d.Devices.Disks, diskXML(disk, i))
	}
	if s.Type == vm.DomainKVM {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if s.Kernel != "" {
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = s.Kernel, s.Initrd, s.Cmdline
	} else {
		d.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
	}
	switch s.Network {
	case vm.NetworkUser, "":
		if s.SSHPort <= 0 {
			return "", fmt.Errorf("domain %s: user-mode networking needs an SSH port", s.Name)
		}
		d.QEMUCommandline = &libvirtxml.DomainQEMUCommandline{Args: []libvirtxml.DomainQEMUCommandlineArg{
			{Value: "-netdev"}, {Value: userNetdev(s)},
			{Value: "-device"}, {Value: "virtio-net-pci,netdev=n0,bus=pci.0,addr=0x10"},
		}}
	case vm.NetworkNAT:
		d.Devices.Interfaces = []libvirtxml.DomainInterface{{
			Source: &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: "default"}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		}}
	default:
		return "", fmt.Errorf("domain %s: network %q: use user or nat", s.Name, s.Network)
	}
	return d.Marshal()
}

// diskXML is disk number i (vda, vdb, …) of a domain.
func diskXML(disk vm.Disk, i int) libvirtxml.DomainDisk {
	dd := libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vd" + string(rune('a'+i)), Bus: "virtio"},
		Serial: disk.Serial,
	}
	if disk.ReadOnly {
		dd.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
	} else {
		dd.Driver.Cache, dd.Driver.Discard = "unsafe", "unmap"
	}
	return dd
}

// DiskXML renders disk number i of a domain, for a hot-plug.
func DiskXML(disk vm.Disk, i int) (string, error) {
	dd := diskXML(disk, i)
	return dd.Marshal()
}

// RestoreXML edits a saved domain's XML for a restore: the disk sources in
// order, envctl's metadata, the SSH port forward and the console log come
// from spec; name, UUID and every device stay as saved (a save restores
// only as the machine it was). It returns the XML and the domain's name.
func RestoreXML(saved string, spec vm.DomainSpec) (string, string, error) {
	var d libvirtxml.Domain
	if err := d.Unmarshal(saved); err != nil {
		return "", "", err
	}
	if d.Devices == nil || len(d.Devices.Disks) != len(spec.Disks) {
		return "", "", fmt.Errorf("the save has %d disks, the restore gives %d", len(d.Devices.Disks), len(spec.Disks))
	}
	for i := range d.Devices.Disks {
		d.Devices.Disks[i].Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: spec.Disks[i].Path}}
		if d.Devices.Disks[i].Driver != nil {
			d.Devices.Disks[i].Driver.Type = spec.Disks[i].Format
		}
		d.Devices.Disks[i].BackingStore = nil
	}
	meta, err := metadataXML(spec.Metadata)
	if err != nil {
		return "", "", err
	}
	d.Metadata = &libvirtxml.DomainMetadata{XML: meta}
	if len(d.Devices.Serials) > 0 && d.Devices.Serials[0].Source != nil && d.Devices.Serials[0].Source.File != nil {
		d.Devices.Serials[0].Source.File.Path = spec.ConsoleLog
	}
	if d.QEMUCommandline != nil {
		// The user-mode network as this run asks for it: its SSH port, and
		// restrict=on unless it is online (never the saved run's).
		for i, a := range d.QEMUCommandline.Args {
			if strings.HasPrefix(a.Value, "user,id=n0,") {
				d.QEMUCommandline.Args[i].Value = userNetdev(spec)
			}
		}
	}
	x, err := d.Marshal()
	return x, d.Name, err
}

// userNetdev is the -netdev of QEMU's user-mode network: SSH forwarded
// from the host's loopback, and restrict=on (the guest reaches nothing
// outside; the forward still works) unless the run is online.
func userNetdev(s vm.DomainSpec) string {
	restrict := "restrict=on,"
	if s.Online {
		restrict = ""
	}
	return "user,id=n0," + restrict + "hostfwd=tcp:127.0.0.1:" + strconv.Itoa(s.SSHPort) + "-:22"
}
