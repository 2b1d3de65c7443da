package libvirt

import (
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// fakeRPC is a small in-memory stand-in for go-libvirt's client, with
// libvirt's error codes, for the driver's unit tests.
type fakeRPC struct {
	mu       sync.Mutex
	pools    map[string]*fakePool
	domains  map[string]*fakeDomain
	domCaps  string
	hostCaps string
	leases   map[string]string // MAC → IPv4
	fail     map[string]error
	block    chan struct{} // when set, every call waits on it
	calls    []string
	// before, when set, runs ahead of a call, unlocked: another client
	// acting in between.
	before func(call string)
	// saves are saved domains' XML by file.
	saves map[string]string
	// snapshots are the snapshot XMLs asked for.
	snapshots []string
}

type fakePool struct {
	dir     string
	running bool
	built   bool
	vols    map[string]*fakeVol
}

type fakeVol struct {
	xml  string
	data []byte
}

type fakeDomain struct {
	xml   string
	state golibvirt.DomainState
	cpuNs uint64 // what DomainGetInfo says
	// transient domains vanish when destroyed; autodestroy ones also
	// when the connection that started them ends.
	transient, autodestroy bool
}

func newFakeRPC() *fakeRPC {
	return &fakeRPC{hostCaps: "<capabilities><host></host></capabilities>", pools: map[string]*fakePool{}, domains: map[string]*fakeDomain{}, leases: map[string]string{}, fail: map[string]error{}}
}

// noDomain is libvirt's error for a domain name it does not know.
func noDomain(name string) error {
	return lverr(golibvirt.ErrNoDomain, "Domain not found: no domain with matching name '"+name+"'")
}

func lverr(code golibvirt.ErrorNumber, msg string) error {
	return golibvirt.Error{Code: uint32(code), Message: msg}
}

func (f *fakeRPC) enter(name string) error {
	if f.block != nil {
		<-f.block
	}
	if f.before != nil {
		f.before(name)
	}
	f.mu.Lock()
	f.calls = append(f.calls, name)
	return f.fail[name]
}

func (f *fakeRPC) Disconnect() error {
	defer f.mu.Unlock()
	if err := f.enter("Disconnect"); err != nil {
		return err
	}
	for name, d := range f.domains {
		if d.autodestroy {
			delete(f.domains, name)
		}
	}
	return nil
}
func (f *fakeRPC) ConnectGetLibVersion() (uint64, error) {
	defer f.mu.Unlock()
	return 9000000, f.enter("ConnectGetLibVersion")
}

func (f *fakeRPC) ConnectGetVersion() (uint64, error) {
	defer f.mu.Unlock()
	return 7002011, f.enter("ConnectGetVersion")
}

func (f *fakeRPC) ConnectGetCapabilities() (string, error) {
	defer f.mu.Unlock()
	return f.hostCaps, f.enter("ConnectGetCapabilities")
}

func (f *fakeRPC) ConnectGetDomainCapabilities(_, _, _, virttype golibvirt.OptString, _ golibvirt.ConnectGetDomainCapabilitiesFlags) (string, error) {
	defer f.mu.Unlock()
	if err := f.enter("ConnectGetDomainCapabilities"); err != nil {
		return "", err
	}
	if f.domCaps == "" {
		return "", lverr(golibvirt.ErrConfigUnsupported, "unsupported configuration: KVM is not supported")
	}
	return f.domCaps, nil
}

func (f *fakeRPC) StoragePoolLookupByName(name string) (golibvirt.StoragePool, error) {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolLookupByName"); err != nil {
		return golibvirt.StoragePool{}, err
	}
	if _, ok := f.pools[name]; !ok {
		return golibvirt.StoragePool{}, lverr(golibvirt.ErrNoStoragePool, "Storage pool not found: no storage pool with matching name '"+name+"'")
	}
	return golibvirt.StoragePool{Name: name}, nil
}

func (f *fakeRPC) StoragePoolDefineXML(x string, _ uint32) (golibvirt.StoragePool, error) {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolDefineXML"); err != nil {
		return golibvirt.StoragePool{}, err
	}
	var def libvirtxml.StoragePool
	if err := def.Unmarshal(x); err != nil {
		return golibvirt.StoragePool{}, err
	}
	if _, ok := f.pools[def.Name]; ok {
		return golibvirt.StoragePool{}, lverr(golibvirt.ErrOperationFailed, "operation failed: pool '"+def.Name+"' already exists")
	}
	f.pools[def.Name] = &fakePool{dir: def.Target.Path, vols: map[string]*fakeVol{}}
	return golibvirt.StoragePool{Name: def.Name}, nil
}

func (f *fakeRPC) StoragePoolBuild(p golibvirt.StoragePool, _ golibvirt.StoragePoolBuildFlags) error {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolBuild"); err != nil {
		return err
	}
	f.pools[p.Name].built = true
	return nil
}

func (f *fakeRPC) StoragePoolCreate(p golibvirt.StoragePool, _ golibvirt.StoragePoolCreateFlags) error {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolCreate"); err != nil {
		return err
	}
	if f.pools[p.Name].running {
		return lverr(golibvirt.ErrOperationInvalid, "Requested operation is not valid: storage pool '"+p.Name+"' is already active")
	}
	if !f.pools[p.Name].built {
		return lverr(golibvirt.ErrInternalError, "cannot open directory: No such file or directory")
	}
	f.pools[p.Name].running = true
	return nil
}

func (f *fakeRPC) StoragePoolSetAutostart(golibvirt.StoragePool, int32) error {
	defer f.mu.Unlock()
	return f.enter("StoragePoolSetAutostart")
}

func (f *fakeRPC) StoragePoolGetInfo(p golibvirt.StoragePool) (uint8, uint64, uint64, uint64, error) {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolGetInfo"); err != nil {
		return 0, 0, 0, 0, err
	}
	if f.pools[p.Name].running {
		return uint8(golibvirt.StoragePoolRunning), 0, 0, 0, nil
	}
	return uint8(golibvirt.StoragePoolInactive), 0, 0, 0, nil
}

func (f *fakeRPC) StoragePoolRefresh(golibvirt.StoragePool, uint32) error {
	defer f.mu.Unlock()
	return f.enter("StoragePoolRefresh")
}

func (f *fakeRPC) StoragePoolListAllVolumes(p golibvirt.StoragePool, _ int32, _ uint32) ([]golibvirt.StorageVol, uint32, error) {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolListAllVolumes"); err != nil {
		return nil, 0, err
	}
	var out []golibvirt.StorageVol
	for _, n := range slices.Sorted(maps.Keys(f.pools[p.Name].vols)) {
		out = append(out, golibvirt.StorageVol{Pool: p.Name, Name: n})
	}
	return out, uint32(len(out)), nil
}

func (f *fakeRPC) StorageVolCreateXML(p golibvirt.StoragePool, x string, _ golibvirt.StorageVolCreateFlags) (golibvirt.StorageVol, error) {
	defer f.mu.Unlock()
	if err := f.enter("StorageVolCreateXML"); err != nil {
		return golibvirt.StorageVol{}, err
	}
	var def libvirtxml.StorageVolume
	if err := def.Unmarshal(x); err != nil {
		return golibvirt.StorageVol{}, err
	}
	pool := f.pools[p.Name]
	if !pool.running {
		return golibvirt.StorageVol{}, lverr(golibvirt.ErrOperationInvalid, "storage pool is not active")
	}
	if _, ok := pool.vols[def.Name]; ok {
		return golibvirt.StorageVol{}, lverr(golibvirt.ErrStorageVolExist, "storage volume exists")
	}
	pool.vols[def.Name] = &fakeVol{xml: x}
	return golibvirt.StorageVol{Pool: p.Name, Name: def.Name}, nil
}

func (f *fakeRPC) StorageVolLookupByName(p golibvirt.StoragePool, name string) (golibvirt.StorageVol, error) {
	defer f.mu.Unlock()
	if err := f.enter("StorageVolLookupByName"); err != nil {
		return golibvirt.StorageVol{}, err
	}
	if _, ok := f.pools[p.Name].vols[name]; !ok {
		return golibvirt.StorageVol{}, lverr(golibvirt.ErrNoStorageVol, "Storage volume not found")
	}
	return golibvirt.StorageVol{Pool: p.Name, Name: name}, nil
}

func (f *fakeRPC) StorageVolGetPath(v golibvirt.StorageVol) (string, error) {
	defer f.mu.Unlock()
	return f.pools[v.Pool].dir + "/" + v.Name, f.enter("StorageVolGetPath")
}

func (f *fakeRPC) StorageVolUpload(v golibvirt.StorageVol, in io.Reader, _, length uint64, _ golibvirt.StorageVolUploadFlags) error {
	b, err := io.ReadAll(io.LimitReader(in, int64(length)))
	defer f.mu.Unlock()
	if err := f.enter("StorageVolUpload"); err != nil {
		return err
	}
	f.pools[v.Pool].vols[v.Name].data = b
	return err
}

func (f *fakeRPC) StorageVolDelete(v golibvirt.StorageVol, _ golibvirt.StorageVolDeleteFlags) error {
	defer f.mu.Unlock()
	if err := f.enter("StorageVolDelete"); err != nil {
		return err
	}
	delete(f.pools[v.Pool].vols, v.Name)
	return nil
}

func (f *fakeRPC) DomainDefineXMLFlags(x string, _ golibvirt.DomainDefineFlags) (golibvirt.Domain, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainDefineXMLFlags"); err != nil {
		return golibvirt.Domain{}, err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return golibvirt.Domain{}, lverr(golibvirt.ErrXMLError, err.Error())
	}
	f.domains[def.Name] = &fakeDomain{xml: x, state: golibvirt.DomainShutoff}
	return golibvirt.Domain{Name: def.Name}, nil
}

func (f *fakeRPC) DomainCreateWithFlags(d golibvirt.Domain, _ uint32) (golibvirt.Domain, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainCreateWithFlags"); err != nil {
		return d, err
	}
	f.domains[d.Name].state = golibvirt.DomainRunning
	return d, nil
}

func (f *fakeRPC) DomainCreateXML(x string, flags golibvirt.DomainCreateFlags) (golibvirt.Domain, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainCreateXML"); err != nil {
		return golibvirt.Domain{}, err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return golibvirt.Domain{}, lverr(golibvirt.ErrXMLError, err.Error())
	}
	f.domains[def.Name] = &fakeDomain{xml: x, state: golibvirt.DomainRunning, transient: true, autodestroy: flags&golibvirt.DomainStartAutodestroy != 0}
	return golibvirt.Domain{Name: def.Name}, nil
}

func (f *fakeRPC) DomainSnapshotCreateXML(dom golibvirt.Domain, x string, flags uint32) (golibvirt.DomainSnapshot, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainSnapshotCreateXML"); err != nil {
		return golibvirt.DomainSnapshot{}, err
	}
	d, ok := f.domains[dom.Name]
	if !ok || d.state != golibvirt.DomainRunning {
		return golibvirt.DomainSnapshot{}, lverr(golibvirt.ErrOperationInvalid, "domain is not running")
	}
	var snap libvirtxml.DomainSnapshot
	if err := snap.Unmarshal(x); err != nil {
		return golibvirt.DomainSnapshot{}, lverr(golibvirt.ErrXMLError, err.Error())
	}
	if f.saves == nil {
		f.saves = map[string]string{}
	}
	f.saves[snap.Memory.File] = d.xml
	f.snapshots = append(f.snapshots, x)
	return golibvirt.DomainSnapshot{Name: "s", Dom: dom}, nil
}

func (f *fakeRPC) DomainSaveImageGetXMLDesc(file string, _ uint32) (string, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainSaveImageGetXMLDesc"); err != nil {
		return "", err
	}
	x, ok := f.saves[file]
	if !ok {
		return "", lverr(golibvirt.ErrOperationFailed, "operation failed: failed to read qemu header")
	}
	return x, nil
}

func (f *fakeRPC) DomainAttachDeviceFlags(dom golibvirt.Domain, x string, _ uint32) error {
	defer f.mu.Unlock()
	if err := f.enter("DomainAttachDeviceFlags"); err != nil {
		return err
	}
	d, ok := f.domains[dom.Name]
	if !ok || d.state != golibvirt.DomainRunning {
		return lverr(golibvirt.ErrOperationInvalid, "domain is not running")
	}
	var disk libvirtxml.DomainDisk
	if err := disk.Unmarshal(x); err != nil {
		return lverr(golibvirt.ErrXMLError, err.Error())
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(d.xml); err != nil {
		return lverr(golibvirt.ErrXMLError, err.Error())
	}
	def.Devices.Disks = append(def.Devices.Disks, disk)
	nx, err := def.Marshal()
	if err != nil {
		return err
	}
	d.xml = nx
	return nil
}

func (f *fakeRPC) DomainRestoreFlags(from string, dxml golibvirt.OptString, _ uint32) error {
	defer f.mu.Unlock()
	if err := f.enter("DomainRestoreFlags"); err != nil {
		return err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(dxml[0]); err != nil {
		return lverr(golibvirt.ErrXMLError, err.Error())
	}
	if _, ok := f.domains[def.Name]; ok {
		return lverr(golibvirt.ErrOperationFailed, "domain '"+def.Name+"' already exists")
	}
	f.domains[def.Name] = &fakeDomain{xml: dxml[0], state: golibvirt.DomainRunning, transient: true}
	return nil
}

func (f *fakeRPC) DomainLookupByName(name string) (golibvirt.Domain, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainLookupByName"); err != nil {
		return golibvirt.Domain{}, err
	}
	if _, ok := f.domains[name]; !ok {
		return golibvirt.Domain{}, noDomain(name)
	}
	return golibvirt.Domain{Name: name}, nil
}

func (f *fakeRPC) DomainDestroy(d golibvirt.Domain) error {
	defer f.mu.Unlock()
	if err := f.enter("DomainDestroy"); err != nil {
		return err
	}
	if f.domains[d.Name].state != golibvirt.DomainRunning && f.domains[d.Name].state != golibvirt.DomainPaused {
		return lverr(golibvirt.ErrOperationInvalid, "Requested operation is not valid: domain is not running")
	}
	if f.domains[d.Name].transient {
		delete(f.domains, d.Name)
		return nil
	}
	f.domains[d.Name].state = golibvirt.DomainShutoff
	return nil
}

func (f *fakeRPC) DomainUndefineFlags(d golibvirt.Domain, _ golibvirt.DomainUndefineFlagsValues) error {
	defer f.mu.Unlock()
	if err := f.enter("DomainUndefineFlags"); err != nil {
		return err
	}
	if _, ok := f.domains[d.Name]; !ok {
		return noDomain(d.Name)
	}
	delete(f.domains, d.Name)
	return nil
}

func (f *fakeRPC) DomainGetState(d golibvirt.Domain, _ uint32) (int32, int32, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainGetState"); err != nil {
		return 0, 0, err
	}
	return int32(f.domains[d.Name].state), 0, nil
}

func (f *fakeRPC) DomainGetInfo(d golibvirt.Domain) (uint8, uint64, uint64, uint16, uint64, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainGetInfo"); err != nil {
		return 0, 0, 0, 0, 0, err
	}
	dom, ok := f.domains[d.Name]
	if !ok {
		return 0, 0, 0, 0, 0, noDomain(d.Name)
	}
	return uint8(dom.state), 0, 0, 0, dom.cpuNs, nil
}

func (f *fakeRPC) DomainGetMetadata(d golibvirt.Domain, _ int32, uri golibvirt.OptString, _ golibvirt.DomainModificationImpact) (string, error) {
	defer f.mu.Unlock()
	if err := f.enter("DomainGetMetadata"); err != nil {
		return "", err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(f.domains[d.Name].xml); err != nil || def.Metadata == nil || len(uri) == 0 || !strings.Contains(def.Metadata.XML, uri[0]) {
		return "", lverr(golibvirt.ErrNoDomainMetadata, "metadata not found")
	}
	// libvirt answers the element without the namespace prefix.
	return strings.NewReplacer("envctl:", "", "xmlns:envctl", "xmlns").Replace(def.Metadata.XML), nil
}

func (f *fakeRPC) DomainGetXMLDesc(d golibvirt.Domain, _ golibvirt.DomainXMLFlags) (string, error) {
	defer f.mu.Unlock()
	return f.domains[d.Name].xml, f.enter("DomainGetXMLDesc")
}

func (f *fakeRPC) ConnectListAllDomains(int32, golibvirt.ConnectListAllDomainsFlags) ([]golibvirt.Domain, uint32, error) {
	defer f.mu.Unlock()
	if err := f.enter("ConnectListAllDomains"); err != nil {
		return nil, 0, err
	}
	var out []golibvirt.Domain
	for _, n := range slices.Sorted(maps.Keys(f.domains)) {
		out = append(out, golibvirt.Domain{Name: n})
	}
	return out, uint32(len(out)), nil
}

func (f *fakeRPC) NetworkLookupByName(name string) (golibvirt.Network, error) {
	defer f.mu.Unlock()
	if err := f.enter("NetworkLookupByName"); err != nil {
		return golibvirt.Network{}, err
	}
	if name != "default" {
		return golibvirt.Network{}, lverr(golibvirt.ErrNoNetwork, "Network not found")
	}
	return golibvirt.Network{Name: name}, nil
}

func (f *fakeRPC) NetworkGetDhcpLeases(_ golibvirt.Network, mac golibvirt.OptString, _ int32, _ uint32) ([]golibvirt.NetworkDhcpLease, uint32, error) {
	defer f.mu.Unlock()
	if err := f.enter("NetworkGetDhcpLeases"); err != nil {
		return nil, 0, err
	}
	if ip, ok := f.leases[mac[0]]; ok {
		return []golibvirt.NetworkDhcpLease{{Type: int32(golibvirt.IPAddrTypeIpv4), Ipaddr: ip}}, 1, nil
	}
	return nil, 0, nil
}

func (f *fakeRPC) NodeGetInfo() ([32]int8, uint64, int32, int32, int32, int32, int32, int32, error) {
	defer f.mu.Unlock()
	return [32]int8{}, 24 << 20, 2, 2600, 1, 1, 2, 1, f.enter("NodeGetInfo")
}

func (f *fakeRPC) NodeGetMemoryStats(n, _ int32, _ uint32) ([]golibvirt.NodeGetMemoryStats, int32, error) {
	defer f.mu.Unlock()
	if err := f.enter("NodeGetMemoryStats"); err != nil {
		return nil, 0, err
	}
	stats := []golibvirt.NodeGetMemoryStats{{Field: "total", Value: 24 << 20}, {Field: "free", Value: 2 << 20}, {Field: "buffers", Value: 1 << 20}, {Field: "cached", Value: 17 << 20}}
	if n == 0 {
		return nil, int32(len(stats)), nil
	}
	return stats, n, nil
}

func (f *fakeRPC) StorageVolDownload(v golibvirt.StorageVol, out io.Writer, _, length uint64, _ golibvirt.StorageVolDownloadFlags) error {
	f.mu.Lock()
	f.calls = append(f.calls, "StorageVolDownload")
	data := f.pools[v.Pool].vols[v.Name].data
	f.mu.Unlock()
	_, err := out.Write(data[:min(uint64(len(data)), length)])
	return err
}

func (f *fakeRPC) StoragePoolGetXMLDesc(p golibvirt.StoragePool, _ golibvirt.StorageXMLFlags) (string, error) {
	defer f.mu.Unlock()
	if err := f.enter("StoragePoolGetXMLDesc"); err != nil {
		return "", err
	}
	return `<pool type="dir"><name>` + p.Name + `</name><target><path>` + f.pools[p.Name].dir + `</path></target></pool>`, nil
}
