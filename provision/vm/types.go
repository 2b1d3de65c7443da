package vm

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
)

// enum is a typed string that doubles as a pflag.Value.
type enum interface{ ~string }

func setEnum[T enum](dst *T, s, flag string, allowed ...T) error {
	if slices.Contains(allowed, T(s)) {
		*dst = T(s)
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return fmt.Errorf("%q is not a valid %s: use %s", s, flag, strings.Join(names, ", "))
}

// Accel is the requested accelerator.
type Accel string

// The accelerators a user may ask for.
const (
	AccelAuto Accel = "auto" // KVM where it really works, TCG otherwise
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

func (a Accel) String() string { return string(a) }

// Set implements pflag.Value.
func (a *Accel) Set(s string) error {
	return setEnum(a, s, "accelerator", AccelAuto, AccelKVM, AccelTCG)
}

// Type implements pflag.Value.
func (a *Accel) Type() string { return "kvm|tcg|auto" }

// DomainType is the libvirt domain type an accelerator decision yields.
type DomainType string

// The domain types.
const (
	DomainKVM  DomainType = "kvm"
	DomainQEMU DomainType = "qemu" // TCG software emulation
)

// Label names the accelerator for humans.
func (d DomainType) Label() string {
	if d == DomainKVM {
		return "KVM"
	}
	return "TCG"
}

// Network is how the guest is networked.
type Network string

// The networks.
const (
	// NetworkUser is QEMU user-mode networking with restrict=on and SSH
	// forwarded to 127.0.0.1: the guest reaches nothing outside.
	NetworkUser Network = "user"
	// NetworkNAT is libvirt's default NAT network; the guest's address
	// comes from libvirt's DHCP leases.
	NetworkNAT Network = "nat"
)

func (n Network) String() string { return string(n) }

// Set implements pflag.Value.
func (n *Network) Set(s string) error { return setEnum(n, s, "network", NetworkUser, NetworkNAT) }

// Type implements pflag.Value.
func (n *Network) Type() string { return "user|nat" }

// SeedMode is how the guest applies the cloud-init seed.
type SeedMode string

// The seed modes.
const (
	SeedAuto SeedMode = "auto" // fast when the image carries envctl-seed
	SeedFull SeedMode = "full" // run cloud-init
	SeedFast SeedMode = "fast" // envctl-seed only, cloud-init disabled
)

func (m SeedMode) String() string { return string(m) }

// Set implements pflag.Value.
func (m *SeedMode) Set(s string) error {
	return setEnum(m, s, "cloud-init mode", SeedAuto, SeedFull, SeedFast)
}

// Type implements pflag.Value.
func (m *SeedMode) Type() string { return "auto|full|fast" }

// Metadata tags an envctl domain with its owner, so gc touches only what
// its own state directory made.
type Metadata struct {
	ID      string `xml:"id"`
	Profile string `xml:"profile"`
	PID     int    `xml:"pid"`
	Created string `xml:"created"`
	// Owner is the absolute state directory of the envctl that made it,
	// Host the ID of the machine it ran on (see Owner), URI the libvirt
	// connection it used.
	Owner string `xml:"owner"`
	Host  string `xml:"host"`
	URI   string `xml:"uri"`
}

// Disk is one disk of a domain.
type Disk struct {
	Path     string
	Format   string // qcow2 or raw
	ReadOnly bool
	// Serial names the disk for the guest (/dev/disk/by-id/virtio-SERIAL).
	Serial string
	// Backing are the files under a qcow2 disk (its backing chain), which
	// QEMU opens too.
	Backing []string
}

// DomainSpec is everything a domain needs.
type DomainSpec struct {
	Name       string
	Type       DomainType
	CPUs       int
	MemoryMiB  uint64
	Disks      []Disk // vda, vdb, …
	Kernel     string // direct boot when set
	Initrd     string
	Cmdline    string
	ConsoleLog string
	Network    Network
	SSHPort    int  // user network: the host port forwarded to the guest's 22
	Online     bool // user network without restrict=on
	// AutoDestroy makes the domain transient and bound to the driver's
	// connection: when the connection ends, for whatever reason, libvirt
	// destroys the domain. Kept domains are persistent instead.
	AutoDestroy bool
	Metadata    Metadata
}

// DomainState is a domain's run state as envctl cares about it.
type DomainState string

// The domain states.
const (
	DomainRunning DomainState = "running"
	DomainPaused  DomainState = "paused"
	DomainShutOff DomainState = "shut-off"
	DomainOther   DomainState = "other"
	DomainMissing DomainState = "missing"
)

// Domain is an envctl domain as the driver sees it.
type Domain struct {
	Name  string
	State DomainState
	Meta  Metadata
}

// Capacity is what a host can still run.
type Capacity struct {
	CPUs      int
	Memory    uint64 // bytes in all
	Available uint64 // bytes free or reclaimable
	// Type is the domain type the host gives the cells ("" before the
	// accelerator was asked: counted as software emulation).
	Type DomainType
}

// HostIdentity is what a saved guest (a memory image) is bound to besides
// its own files: the QEMU that saved it (a restore into another QEMU may
// fail) and the host CPU that host-passthrough showed the guest (under
// KVM a guest restored on another CPU model may crash or refuse).
type HostIdentity struct {
	QEMU string // the hypervisor version, "7.2.0"
	CPU  string // the host CPU's vendor and model, "Intel Skylake-Client-IBRS"
}

// Slots is how many VMs of a shape the capacity holds at once (at least
// one): memory leaves a fifth spare. Under software emulation each vCPU is
// a host CPU, since TCG keeps every vCPU busy; under KVM a vCPU sleeps
// while its guest waits, so two share a host CPU.
func (c Capacity) Slots(cpus int, memory uint64) int {
	perCPU := 1
	if c.Type == DomainKVM {
		perCPU = 2
	}
	n := c.CPUs * perCPU / max(cpus, 1)
	if memory > 0 {
		n = min(n, int(c.Available*4/5/memory))
	}
	return max(n, 1)
}

// Driver is what envctl needs from a hypervisor connection: storage
// volumes in a pool, domains with envctl metadata, and the accelerator
// decision. provision/libvirt implements it with go-libvirt; vmtest fakes
// it in memory. Every method takes a context and returns when it ends.
type Driver interface {
	// URI is the connection's libvirt URI.
	URI() string
	Close() error
	// Local reports whether the hypervisor runs on this machine: then
	// cached files and the state directory are used in place; a remote
	// host gets uploaded copies and a pool directory of its own.
	Local() bool
	// Dial reaches an address on the hypervisor host, such as a guest's
	// SSH port forwarded to that host's 127.0.0.1.
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	// Capacity reports the host's CPUs and available memory.
	Capacity(ctx context.Context) (Capacity, error)
	// Identity names the hypervisor build and the host CPU a saved guest
	// depends on.
	Identity(ctx context.Context) (HostIdentity, error)
	// EnsureVolume makes a volume holding a file's content exist once,
	// uploading it when missing (names are content-addressed).
	EnsureVolume(ctx context.Context, pool, name, format string, size int64, open func() (io.ReadCloser, error)) (string, error)
	// ReadVolume downloads up to max bytes of a volume.
	ReadVolume(ctx context.Context, pool, name string, max int64) ([]byte, error)
	// DomainType decides the domain type for a requested accelerator, with
	// a warning when it fell back.
	DomainType(ctx context.Context, want Accel) (DomainType, string, error)
	// EnsurePool makes the named directory pool exist and run (defined at
	// dir when missing) and returns its directory on the host.
	EnsurePool(ctx context.Context, name, dir string) (string, error)
	// CreateOverlay creates a qcow2 volume backed by base and returns its path.
	CreateOverlay(ctx context.Context, pool, name, base, baseFormat string, capacity uint64) (string, error)
	// CreateVolume creates a raw volume holding data and returns its path.
	CreateVolume(ctx context.Context, pool, name string, data []byte) (string, error)
	// DeleteVolume removes a volume; a missing volume or pool is not an error.
	DeleteVolume(ctx context.Context, pool, name string) error
	// Volumes lists the names of a pool's volumes (none for a missing pool).
	Volumes(ctx context.Context, pool string) ([]string, error)
	// Start defines and starts a domain.
	Start(ctx context.Context, spec DomainSpec) error
	// SnapshotMemory takes a live external snapshot of a running domain
	// of memoryMiB: its memory to memPath (what RestoreDomain reads), its
	// first disk going on in top (an existing qcow2 on that disk, which
	// stays as it was); the domain keeps running as it was started. Its
	// limit grows with the memory; after it, the call is waited for (an
	// *UnsettledError when it does not come back) before returning.
	SnapshotMemory(ctx context.Context, name, memPath, top string, disks int, memoryMiB uint64) error
	// RestoreDomain starts a saved domain again under its saved name and
	// UUID, with spec's disks, metadata, SSH port and console, and returns
	// the name; limits as SnapshotMemory's, by spec's memory.
	RestoreDomain(ctx context.Context, path string, spec DomainSpec) (string, error)
	// AttachDisk hot-plugs a disk into a running domain as disk number i.
	AttachDisk(ctx context.Context, name string, disk Disk, i int) error
	// Remove destroys and undefines a domain; a missing one is fine.
	Remove(ctx context.Context, name string) error
	// Domains lists every domain that carries envctl metadata.
	Domains(ctx context.Context) ([]Domain, error)
	// State reports one domain's state (DomainMissing when there is none).
	State(ctx context.Context, name string) (DomainState, error)
	// CPUTime is the CPU time a running domain has used so far, every
	// vCPU and the hypervisor's own threads for it included.
	CPUTime(ctx context.Context, name string) (time.Duration, error)
	// LeaseIP is the IPv4 address the named network's DHCP server leased
	// to the domain, or "" while there is none.
	LeaseIP(ctx context.Context, network, domain string) (string, error)
}

// Connector opens a Driver for a libvirt URI.
type Connector func(ctx context.Context, uri string) (Driver, error)

// SaveLimit bounds a snapshot or restore of a guest of memoryMiB: a
// minute, and a minute more per GiB written or read.
func SaveLimit(memoryMiB uint64) time.Duration {
	return time.Minute + time.Duration(memoryMiB/1024+1)*time.Minute
}

// UnsettledError is a save or restore that did not end within its limit,
// nor within the grace time after it: the hypervisor may still be writing
// or reading the saved files, so nothing of them may be deleted, and a
// restored domain may yet appear.
type UnsettledError struct {
	What  string
	Limit time.Duration
}

func (e *UnsettledError) Error() string {
	return fmt.Sprintf("%s did not end within %s, nor in the grace time after it: its files are left as they are", e.What, e.Limit)
}

// FaultClass implements fault.Classed.
func (e *UnsettledError) FaultClass() fault.Class { return fault.Infra }
