// Package vmtest ships a fake vm.Driver: an in-memory hypervisor with
// pools, volumes and domains, failure injection per method, and guests
// that really answer SSH (an in-process guesttest server started with the
// host key and user key taken from the domain's cloud-init seed). Tests of
// vm and of the pipeline run envctl's real boot, SSH and teardown code
// against it.
package vmtest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/images/cidata"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/vm"
)

// Volume is a fake volume.
type Volume struct {
	Data    []byte
	Backing string // overlay base
	Path    string
}

// Domain is a fake domain.
type Domain struct {
	Spec  vm.DomainSpec
	State vm.DomainState
	// CPU is the CPU time CPUTime reports next.
	CPU time.Duration
}

// Driver is an in-memory vm.Driver. Its zero value is not usable; call New.
type Driver struct {
	mu sync.Mutex
	// Type and Warning answer DomainType for auto and kvm.
	Type    vm.DomainType
	Warning string
	Pools   map[string]map[string]*Volume
	Domains map[string]*Domain
	// CPUStep is what each CPUTime call adds to the domain's CPU time
	// after answering, as a running guest's would grow.
	CPUStep time.Duration
	// Fail makes a method fail: method name → error.
	Fail map[string]error
	// OnStart runs when a domain starts, with its seed's bytes.
	OnStart func(spec vm.DomainSpec, seed []byte) error
	// Calls records every method called, in order, as "Method arg".
	Calls []string
	// Opened and Closed count connections.
	Opened, Closed int
	// Remote makes the fake a remote host: base images are uploaded as
	// volumes and the console is read back from the pool.
	Remote bool
	// Cap is the host's capacity.
	Cap vm.Capacity
	// Host is the hypervisor and CPU the fake claims (Identity).
	Host vm.HostIdentity
	// RestorePaused makes a restored domain stay paused, as a restore
	// whose resume never happened: its guest never answers.
	RestorePaused bool
	guests        map[string]*guesttest.Server
	// Files, when set, backs every volume with a real file under it (for
	// code that reads volumes as files: a warm save copies the disk).
	Files string
	// saves are saved domains by file: their spec and their guest's files.
	saves map[string]savedDomain
	// roots are the file systems of guests restored from a save.
	roots map[string]string
}

type savedDomain struct {
	spec vm.DomainSpec
	root string
}

// New makes an empty fake hypervisor that offers TCG only.
func New() *Driver {
	return &Driver{Type: vm.DomainQEMU, Pools: map[string]map[string]*Volume{}, Domains: map[string]*Domain{}, Fail: map[string]error{}, guests: map[string]*guesttest.Server{},
		Cap: vm.Capacity{CPUs: 2, Memory: 24 << 30, Available: 20 << 30}}
}

// Connect is a vm.Connector that hands out this driver.
func (d *Driver) Connect(ctx context.Context, uri string) (vm.Driver, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.Fail["Connect"]; err != nil {
		return nil, err
	}
	d.Opened++
	return &conn{d: d, uri: uri}, nil
}

// conn is one connection to the fake.
type conn struct {
	d   *Driver
	uri string
	// autodestroy are the domains this connection started with
	// AutoDestroy: they go when it closes, as libvirt does it.
	autodestroy []string
}

func (c *conn) call(method string, args ...any) error {
	c.d.mu.Lock()
	parts := []string{method}
	for _, a := range args {
		parts = append(parts, fmt.Sprint(a))
	}
	c.d.Calls = append(c.d.Calls, strings.Join(parts, " "))
	err := c.d.Fail[method]
	c.d.mu.Unlock()
	return err
}

func (c *conn) URI() string { return c.uri }

func (c *conn) Close() error {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.d.Closed++
	for _, name := range c.autodestroy {
		c.d.removeLocked(name)
	}
	c.autodestroy = nil
	return nil
}

func (c *conn) Local() bool { return !c.d.Remote }

func (c *conn) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := c.call("Dial", addr); err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (c *conn) Identity(ctx context.Context) (vm.HostIdentity, error) {
	if err := c.call("Identity"); err != nil {
		return vm.HostIdentity{}, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return c.d.Host, nil
}

func (c *conn) Capacity(ctx context.Context) (vm.Capacity, error) {
	if err := c.call("Capacity"); err != nil {
		return vm.Capacity{}, err
	}
	return c.d.Cap, nil
}

func (c *conn) EnsureVolume(ctx context.Context, pool, name, format string, size int64, open func() (io.ReadCloser, error)) (string, error) {
	if err := c.call("EnsureVolume", name); err != nil {
		return "", err
	}
	c.d.mu.Lock()
	if v, ok := c.d.Pools[pool][name]; ok {
		c.d.mu.Unlock()
		return v.Path, nil
	}
	c.d.mu.Unlock()
	in, err := open()
	if err != nil {
		return "", err
	}
	defer in.Close()
	b, err := io.ReadAll(in)
	if err != nil {
		return "", err
	}
	return c.add(pool, name, &Volume{Data: b})
}

func (c *conn) ReadVolume(ctx context.Context, pool, name string, limit int64) ([]byte, error) {
	if err := c.call("ReadVolume", name); err != nil {
		return nil, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	v, ok := c.d.Pools[pool][name]
	if !ok {
		return nil, fault.Infraf("volume %s: not found", name)
	}
	return v.Data[:min(int64(len(v.Data)), limit)], nil
}

func (c *conn) DomainType(ctx context.Context, want vm.Accel) (vm.DomainType, string, error) {
	if err := c.call("DomainType", want); err != nil {
		return "", "", err
	}
	if want == vm.AccelTCG {
		return vm.DomainQEMU, "", nil
	}
	if want == vm.AccelKVM && c.d.Type != vm.DomainKVM {
		return "", "", fault.Inputf("--accel kvm: KVM is not usable on %s; use --accel tcg or auto", c.uri)
	}
	return c.d.Type, c.d.Warning, nil
}

func (c *conn) EnsurePool(ctx context.Context, name, dir string) (string, error) {
	if err := c.call("EnsurePool", name); err != nil {
		return "", err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if c.d.Pools[name] == nil {
		c.d.Pools[name] = map[string]*Volume{}
	}
	return dir, nil
}

func (c *conn) add(pool, name string, v *Volume) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	p := c.d.Pools[pool]
	if p == nil {
		return "", fault.Infraf("storage pool %s is missing", pool)
	}
	if _, ok := p[name]; ok {
		return "", fault.Infraf("volume %s exists", name)
	}
	v.Path = "/fake/" + pool + "/" + name
	if c.d.Files != "" {
		v.Path = filepath.Join(c.d.Files, pool, name)
		if err := os.MkdirAll(filepath.Dir(v.Path), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(v.Path, v.Data, 0o600); err != nil {
			return "", err
		}
	}
	p[name] = v
	return v.Path, nil
}

func (c *conn) CreateOverlay(ctx context.Context, pool, name, base, baseFormat string, capacity uint64) (string, error) {
	if err := c.call("CreateOverlay", name); err != nil {
		return "", err
	}
	return c.add(pool, name, &Volume{Backing: base})
}

func (c *conn) CreateVolume(ctx context.Context, pool, name string, data []byte) (string, error) {
	if err := c.call("CreateVolume", name); err != nil {
		return "", err
	}
	return c.add(pool, name, &Volume{Data: data})
}

func (c *conn) DeleteVolume(ctx context.Context, pool, name string) error {
	if err := c.call("DeleteVolume", name); err != nil {
		return err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if v := c.d.Pools[pool][name]; v != nil && c.d.Files != "" {
		_ = os.Remove(v.Path) // as libvirt unlinks a volume's file
	}
	delete(c.d.Pools[pool], name)
	return nil
}

func (c *conn) Volumes(ctx context.Context, pool string) ([]string, error) {
	if err := c.call("Volumes", pool); err != nil {
		return nil, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return slices.Sorted(maps.Keys(c.d.Pools[pool])), nil
}

func (c *conn) Start(ctx context.Context, spec vm.DomainSpec) error {
	if err := c.call("Start", spec.Name); err != nil {
		return err
	}
	c.d.mu.Lock()
	if _, ok := c.d.Domains[spec.Name]; ok {
		c.d.mu.Unlock()
		return fault.Infraf("domain %s already exists", spec.Name)
	}
	c.d.Domains[spec.Name] = &Domain{Spec: spec, State: vm.DomainRunning}
	if spec.AutoDestroy {
		c.autodestroy = append(c.autodestroy, spec.Name)
	}
	var seed []byte
	for _, disk := range spec.Disks {
		for _, pool := range c.d.Pools {
			for _, v := range pool {
				if v.Path == disk.Path && v.Data != nil {
					seed = v.Data
				}
			}
		}
	}
	onStart := c.d.OnStart
	c.d.mu.Unlock()
	if onStart != nil {
		return onStart(spec, seed)
	}
	return nil
}

func (c *conn) SnapshotMemory(ctx context.Context, name, memPath, top string, disks int, memoryMiB uint64) error {
	if err := c.call("SnapshotMemory", name); err != nil {
		return err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	dom, err := c.d.runningLocked(name, "snapshot domain")
	if err != nil {
		return err
	}
	// The file names the save: it may be moved before the restore.
	token := fmt.Sprintf("fake save %d of %s", len(c.d.saves), name)
	if err := os.WriteFile(memPath, []byte(token), 0o600); err != nil {
		return fault.Infraf("snapshot domain %s: %w", name, err)
	}
	root := ""
	if g := c.d.guests[name]; g != nil {
		// The guest's files as they are now, for a restore.
		root = g.Root + fmt.Sprintf(".saved-%d", len(c.d.saves))
		if err := os.CopyFS(root, os.DirFS(g.Root)); err != nil {
			return fault.Infraf("snapshot domain %s: %w", name, err)
		}
	}
	if c.d.saves == nil {
		c.d.saves = map[string]savedDomain{}
	}
	c.d.saves[token] = savedDomain{spec: dom.Spec, root: root}
	dom.Spec.Disks[0].Path = top
	return nil
}

// runningLocked is a running domain (d.mu held).
func (d *Driver) runningLocked(name, what string) (*Domain, error) {
	dom, ok := d.Domains[name]
	if !ok || dom.State != vm.DomainRunning {
		return nil, fault.Infraf("%s %s: not running", what, name)
	}
	return dom, nil
}

func (c *conn) RestoreDomain(ctx context.Context, path string, spec vm.DomainSpec) (string, error) {
	if err := c.call("RestoreDomain", path); err != nil {
		return "", err
	}
	c.d.mu.Lock()
	b, err := os.ReadFile(path)
	saved, ok := c.d.saves[string(b)]
	if !ok || err != nil {
		c.d.mu.Unlock()
		return "", fault.Infraf("restore domain from %s: not a save", path)
	}
	spec.Name, spec.AutoDestroy = saved.spec.Name, false
	if len(spec.Disks) != len(saved.spec.Disks) {
		c.d.mu.Unlock()
		return "", fault.Infraf("restore domain from %s: the save has %d disks", path, len(saved.spec.Disks))
	}
	if c.d.roots == nil {
		c.d.roots = map[string]string{}
	}
	if saved.root != "" {
		// Each restore starts from the files as they were saved.
		root, err := os.MkdirTemp(filepath.Dir(saved.root), "restored-")
		if err == nil {
			err = os.CopyFS(root, os.DirFS(saved.root))
		}
		if err != nil {
			c.d.mu.Unlock()
			return "", fault.Infraf("restore: %w", err)
		}
		c.d.roots[spec.Name] = root
	}
	if c.d.RestorePaused {
		c.d.Domains[spec.Name] = &Domain{Spec: spec, State: vm.DomainPaused}
		c.d.mu.Unlock()
		return spec.Name, nil
	}
	c.d.mu.Unlock()
	return spec.Name, c.Start(ctx, spec)
}

func (c *conn) AttachDisk(ctx context.Context, name string, disk vm.Disk, i int) error {
	if err := c.call("AttachDisk", name); err != nil {
		return err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	dom, err := c.d.runningLocked(name, "attach a disk to domain")
	if err != nil {
		return err
	}
	if i != len(dom.Spec.Disks) {
		return fault.Infraf("attach a disk to domain %s: it has %d disks, not %d", name, len(dom.Spec.Disks), i)
	}
	dom.Spec.Disks = append(dom.Spec.Disks, disk)
	if g := c.d.guests[name]; g != nil && disk.Serial != "" {
		attachTarDisk(g, disk)
	}
	return nil
}

func (c *conn) Remove(ctx context.Context, name string) error {
	if err := c.call("Remove", name); err != nil {
		return err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.d.removeLocked(name)
	return nil
}

func (d *Driver) removeLocked(name string) {
	delete(d.Domains, name)
	if g := d.guests[name]; g != nil {
		g.Close()
		delete(d.guests, name)
	}
}

func (c *conn) Domains(ctx context.Context) ([]vm.Domain, error) {
	if err := c.call("Domains"); err != nil {
		return nil, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	var out []vm.Domain
	for _, name := range slices.Sorted(maps.Keys(c.d.Domains)) {
		dom := c.d.Domains[name]
		out = append(out, vm.Domain{Name: name, State: dom.State, Meta: dom.Spec.Metadata})
	}
	return out, nil
}

func (c *conn) State(ctx context.Context, name string) (vm.DomainState, error) {
	if err := c.call("State", name); err != nil {
		return "", err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if dom, ok := c.d.Domains[name]; ok {
		return dom.State, nil
	}
	return vm.DomainMissing, nil
}

func (c *conn) CPUTime(ctx context.Context, name string) (time.Duration, error) {
	if err := c.call("CPUTime", name); err != nil {
		return 0, err
	}
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	dom, ok := c.d.Domains[name]
	if !ok || dom.State != vm.DomainRunning {
		return 0, fmt.Errorf("domain %s is not running", name)
	}
	used := dom.CPU
	dom.CPU += c.d.CPUStep
	return used, nil
}

func (c *conn) LeaseIP(ctx context.Context, network, domain string) (string, error) {
	if err := c.call("LeaseIP", domain); err != nil {
		return "", err
	}
	return "", nil
}

// SetState changes a domain's state, as a crash or `virsh suspend` would.
func (d *Driver) SetState(name string, st vm.DomainState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dom, ok := d.Domains[name]; ok {
		dom.State = st
	}
}

// AddDomain defines a domain directly, as another envctl (or another
// tool) would have.
func (d *Driver) AddDomain(spec vm.DomainSpec, st vm.DomainState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Domains[spec.Name] = &Domain{Spec: spec, State: st}
}

// AddVolume creates a volume directly.
func (d *Driver) AddVolume(pool, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Pools[pool] == nil {
		d.Pools[pool] = map[string]*Volume{}
	}
	d.Pools[pool][name] = &Volume{Path: "/fake/" + pool + "/" + name}
}

// VolumeNames lists every volume in every pool, as "pool/name".
func (d *Driver) VolumeNames() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for p, vols := range d.Pools {
		for v := range vols {
			out = append(out, p+"/"+v)
		}
	}
	slices.Sort(out)
	return out
}

// DomainNames lists every domain.
func (d *Driver) DomainNames() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.Domains))
}

// Guest returns the SSH guest of a running domain.
func (d *Driver) Guest(domain string) *guesttest.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.guests[domain]
}

// BootGuests makes every domain that starts answer SSH: an in-process
// guest on the domain's forwarded port, with the host key and the
// authorized user key read from its seed. setup scripts each guest's
// commands before it answers.
func (d *Driver) BootGuests(t testing.TB, setup func(*guesttest.Server)) {
	d.OnStart = func(spec vm.DomainSpec, seed []byte) error {
		files, err := cidata.Read(seed)
		if err != nil {
			return err
		}
		hk, err := ssh.ParsePrivateKey(files["envctl/ssh_host_ed25519_key"])
		if err != nil {
			return fmt.Errorf("seed host key: %w", err)
		}
		auth, _, _, _, err := ssh.ParseAuthorizedKey(files["envctl/authorized_keys"])
		if err != nil {
			return fmt.Errorf("seed user key: %w", err)
		}
		root := t.TempDir()
		d.mu.Lock()
		if r, ok := d.roots[spec.Name]; ok {
			root = r // a restored guest keeps the saved one's files
			delete(d.roots, spec.Name)
		}
		d.mu.Unlock()
		srv, err := guesttest.New(guesttest.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.SSHPort)), HostKey: hk, Authorized: auth}, root)
		if err != nil {
			return fault.Infraf("fake guest: %w", err)
		}
		t.Cleanup(srv.Close)
		for _, disk := range spec.Disks {
			if disk.Serial != "" {
				attachTarDisk(srv, disk)
			}
		}
		if setup != nil {
			setup(srv)
		}
		d.mu.Lock()
		d.guests[spec.Name] = srv
		d.mu.Unlock()
		return nil
	}
}

// ErrInjected is a convenient error for Fail.
var ErrInjected = errors.New("injected failure")

// attachTarDisk lets the guest unpack a disk that holds a tar (the
// artifact disk) the way envctl does: `tar -x -f /dev/disk/by-id/…`.
func attachTarDisk(srv *guesttest.Server, disk vm.Disk) {
	dev := "/dev/disk/by-id/virtio-" + disk.Serial
	srv.Handle(`^test -b `+regexp.QuoteMeta(dev)+`$`, func(string, []string) guesttest.Reply { return guesttest.Reply{} })
	srv.Handle(`^test -b `+regexp.QuoteMeta(dev)+` && tar -x --no-same-owner -f `+regexp.QuoteMeta(dev)+` -C /$`, func(string, []string) guesttest.Reply {
		if err := untar(disk.Path, srv); err != nil {
			return guesttest.Reply{Stderr: "tar: " + err.Error() + "\n", Exit: 2}
		}
		return guesttest.Reply{}
	})
}

func untar(path string, srv *guesttest.Server) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := srv.WriteFile("/"+h.Name, data); err != nil {
			return err
		}
	}
}
