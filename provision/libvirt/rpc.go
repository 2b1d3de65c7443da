package libvirt

import (
	"io"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// rpc is the part of go-libvirt's client envctl uses, declared by envctl
// (its consumer) in the manner of terraform-provider-libvirt's
// libvirt_interfaces.go, so the driver is tested against a small fake.
// *golibvirt.Libvirt implements it.
type rpc interface {
	Disconnect() error
	ConnectGetLibVersion() (uint64, error)
	ConnectGetVersion() (uint64, error)
	ConnectGetCapabilities() (string, error)
	ConnectGetDomainCapabilities(emulator, arch, machine, virttype golibvirt.OptString, flags golibvirt.ConnectGetDomainCapabilitiesFlags) (string, error)

	StoragePoolLookupByName(name string) (golibvirt.StoragePool, error)
	StoragePoolGetXMLDesc(pool golibvirt.StoragePool, flags golibvirt.StorageXMLFlags) (string, error)
	StoragePoolDefineXML(xml string, flags uint32) (golibvirt.StoragePool, error)
	StoragePoolBuild(pool golibvirt.StoragePool, flags golibvirt.StoragePoolBuildFlags) error
	StoragePoolCreate(pool golibvirt.StoragePool, flags golibvirt.StoragePoolCreateFlags) error
	StoragePoolSetAutostart(pool golibvirt.StoragePool, autostart int32) error
	StoragePoolGetInfo(pool golibvirt.StoragePool) (state uint8, capacity, allocation, available uint64, err error)
	StoragePoolRefresh(pool golibvirt.StoragePool, flags uint32) error
	StoragePoolListAllVolumes(pool golibvirt.StoragePool, needResults int32, flags uint32) ([]golibvirt.StorageVol, uint32, error)

	StorageVolCreateXML(pool golibvirt.StoragePool, xml string, flags golibvirt.StorageVolCreateFlags) (golibvirt.StorageVol, error)
	StorageVolLookupByName(pool golibvirt.StoragePool, name string) (golibvirt.StorageVol, error)
	StorageVolGetPath(vol golibvirt.StorageVol) (string, error)
	StorageVolUpload(vol golibvirt.StorageVol, in io.Reader, offset, length uint64, flags golibvirt.StorageVolUploadFlags) error
	StorageVolDelete(vol golibvirt.StorageVol, flags golibvirt.StorageVolDeleteFlags) error

	DomainDefineXMLFlags(xml string, flags golibvirt.DomainDefineFlags) (golibvirt.Domain, error)
	DomainCreateWithFlags(dom golibvirt.Domain, flags uint32) (golibvirt.Domain, error)
	DomainCreateXML(xml string, flags golibvirt.DomainCreateFlags) (golibvirt.Domain, error)
	DomainLookupByName(name string) (golibvirt.Domain, error)
	DomainDestroy(dom golibvirt.Domain) error
	DomainUndefineFlags(dom golibvirt.Domain, flags golibvirt.DomainUndefineFlagsValues) error
	DomainGetState(dom golibvirt.Domain, flags uint32) (state, reason int32, err error)
	DomainGetInfo(dom golibvirt.Domain) (state uint8, maxMem, memory uint64, nrVirtCPU uint16, cpuTime uint64, err error)
	DomainGetMetadata(dom golibvirt.Domain, typ int32, uri golibvirt.OptString, flags golibvirt.DomainModificationImpact) (string, error)
	DomainGetXMLDesc(dom golibvirt.Domain, flags golibvirt.DomainXMLFlags) (string, error)
	DomainSnapshotCreateXML(dom golibvirt.Domain, xml string, flags uint32) (golibvirt.DomainSnapshot, error)
	DomainRestoreFlags(from string, dxml golibvirt.OptString, flags uint32) error
	DomainAttachDeviceFlags(dom golibvirt.Domain, xml string, flags uint32) error
	DomainSaveImageGetXMLDesc(file string, flags uint32) (string, error)
	ConnectListAllDomains(needResults int32, flags golibvirt.ConnectListAllDomainsFlags) ([]golibvirt.Domain, uint32, error)

	NodeGetInfo() (model [32]int8, memory uint64, cpus, mhz, nodes, sockets, cores, threads int32, err error)
	NodeGetMemoryStats(nparams, cellNum int32, flags uint32) ([]golibvirt.NodeGetMemoryStats, int32, error)
	StorageVolDownload(vol golibvirt.StorageVol, out io.Writer, offset, length uint64, flags golibvirt.StorageVolDownloadFlags) error

	NetworkLookupByName(name string) (golibvirt.Network, error)
	NetworkGetDhcpLeases(net golibvirt.Network, mac golibvirt.OptString, needResults int32, flags uint32) ([]golibvirt.NetworkDhcpLease, uint32, error)
}

var _ rpc = (*golibvirt.Libvirt)(nil)
