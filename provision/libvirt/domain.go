package libvirt

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"time"

	"libvirt.org/go/libvirtxml"
)

// MetadataNS is the XML namespace of envctl's domain metadata.
const MetadataNS = "https://envctl.dev/xmlns/env/1"

// Metadata tags an envctl domain so gc can find leftovers.
type Metadata struct {
	XMLName xml.Name `xml:"env"`
	ID      string   `xml:"id"`
	Profile string   `xml:"profile"`
	PID     int      `xml:"pid"`
	Created string   `xml:"created"`
}

// ParseMetadata reads envctl metadata from a domain's metadata XML.
func ParseMetadata(s string) (Metadata, error) {
	var m Metadata
	err := xml.Unmarshal([]byte(s), &m)
	return m, err
}

// DomainSpec is everything a domain needs.
type DomainSpec struct {
	Name       string
	Type       string // "kvm" or "qemu"
	CPUs       int
	MemoryMiB  uint64
	Disk       string // qcow2 overlay
	Seed       string // cidata ISO (raw)
	Kernel     string // direct boot when set
	Initrd     string
	Cmdline    string
	ConsoleLog string
	// Network is "user" (QEMU user-mode, SSH forwarded to 127.0.0.1:SSHPort)
	// or "nat" (libvirt's default network; address from DHCP leases).
	Network string
	SSHPort int
	// Online lifts user-mode networking's restrict=on, letting the guest
	// reach the outside (for --test-images upstream).
	Online   bool
	Metadata Metadata
}

// DomainXML renders the domain definition.
func DomainXML(s DomainSpec) (string, error) {
	if s.Type != "kvm" && s.Type != "qemu" {
		return "", fmt.Errorf("domain %s: type %q", s.Name, s.Type)
	}
	meta, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"envctl:env"`
		NS      string   `xml:"xmlns:envctl,attr"`
		ID      string   `xml:"envctl:id"`
		Profile string   `xml:"envctl:profile"`
		PID     int      `xml:"envctl:pid"`
		Created string   `xml:"envctl:created"`
	}{NS: MetadataNS, ID: s.Metadata.ID, Profile: s.Metadata.Profile, PID: s.Metadata.PID, Created: s.Metadata.Created})
	if err != nil {
		return "", err
	}
	d := &libvirtxml.Domain{
		Type:     s.Type,
		Name:     s.Name,
		Metadata: &libvirtxml.DomainMetadata{XML: string(meta)},
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
			Disks: []libvirtxml.DomainDisk{
				{
					Device: "disk",
					Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2", Cache: "unsafe", Discard: "unmap"},
					Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Disk}},
					Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
				},
				{
					Device:   "disk",
					Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
					Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Seed}},
					Target:   &libvirtxml.DomainDiskTarget{Dev: "vdb", Bus: "virtio"},
					ReadOnly: &libvirtxml.DomainDiskReadOnly{},
				},
			},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.ConsoleLog}},
				Target: &libvirtxml.DomainSerialTarget{Port: uintp(0)},
			}},
			RNGs: []libvirtxml.DomainRNG{{
				Model:   "virtio",
				Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	if s.Type == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if s.Kernel != "" {
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = s.Kernel, s.Initrd, s.Cmdline
	} else {
		d.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
	}
	switch s.Network {
	case "user", "":
		if s.SSHPort <= 0 {
			return "", fmt.Errorf("domain %s: user-mode networking needs an SSH port", s.Name)
		}
		// restrict=on: the guest reaches nothing outside; the forward works.
		restrict := "restrict=on,"
		if s.Online {
			restrict = ""
		}
		d.QEMUCommandline = &libvirtxml.DomainQEMUCommandline{Args: []libvirtxml.DomainQEMUCommandlineArg{
			{Value: "-netdev"}, {Value: "user,id=n0," + restrict + "hostfwd=tcp:127.0.0.1:" + strconv.Itoa(s.SSHPort) + "-:22"},
			{Value: "-device"}, {Value: "virtio-net-pci,netdev=n0,bus=pci.0,addr=0x10"},
		}}
	case "nat":
		d.Devices.Interfaces = []libvirtxml.DomainInterface{{
			Source: &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: "default"}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		}}
	default:
		return "", fmt.Errorf("domain %s: network %q: use user or nat", s.Name, s.Network)
	}
	return d.Marshal()
}

func uintp(u uint) *uint { return &u }

// Now is the creation time format used in metadata.
func Now() string { return time.Now().UTC().Format(time.RFC3339) }
