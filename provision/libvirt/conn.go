package libvirt

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

// DefaultURI is the libvirt URI used without --connect.
const DefaultURI = "qemu:///system"

// callTimeout bounds every libvirt call that has no tighter deadline.
const callTimeout = 60 * time.Second

// Conn is a libvirt connection; it implements vm.Driver.
type Conn struct {
	l   rpc
	uri string
	// host reaches the remote hypervisor's own addresses; nil when local.
	host *hostSSH
}

var _ vm.Driver = (*Conn)(nil)

// Connect dials a libvirt URI (qemu:///system, qemu:///session,
// qemu+ssh://host/system and the other go-libvirt transports) through
// go-libvirt's dialers. It is a vm.Connector.
func Connect(ctx context.Context, uri string) (vm.Driver, error) {
	uri = cmp.Or(uri, DefaultURI)
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fault.Inputf("--connect %q is not a libvirt URI; use qemu:///system, qemu:///session or qemu+ssh://user@host/system", uri)
	}
	type result struct {
		l   *golibvirt.Libvirt
		err error
	}
	ch := make(chan result, 1)
	var host *hostSSH
	if strings.HasSuffix(u.Scheme, "+ssh") {
		t, err := parseSSHTarget(u)
		if err != nil {
			return nil, err
		}
		host = &hostSSH{target: t}
	}
	go func() {
		var l *golibvirt.Libvirt
		var err error
		if host != nil {
			l, err = dialSSH(u)
		} else {
			l, err = dial(u)
		}
		ch <- result{l, err}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fault.Infraf("cannot reach libvirt at %s (%v); start the daemon (`make host` runs scripts/host-setup.sh) or pass --connect", uri, r.err)
		}
		return &Conn{l: r.l, uri: uri, host: host}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.l != nil {
				_ = r.l.Disconnect()
			}
		}()
		return nil, fault.Infraf("libvirt at %s did not answer: %w", uri, ctx.Err())
	}
}

// dial connects with the dialer the URI asks for. A local URI without a
// socket tries the monolithic daemon's socket, then the modular one's.
func dial(u *url.URL) (*golibvirt.Libvirt, error) {
	local := !strings.Contains(u.Scheme, "+") && u.Host == "" && u.Query().Get("socket") == ""
	if !local {
		return golibvirt.ConnectToURI(u)
	}
	dir := "/var/run/libvirt"
	if u.Path == "/session" {
		rt := os.Getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			rt = fmt.Sprintf("/run/user/%d", os.Getuid())
		}
		dir = filepath.Join(rt, "libvirt")
	}
	var errs []error
	for _, sock := range []string{"libvirt-sock", "virtqemud-sock"} {
		l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(filepath.Join(dir, sock)), dialers.WithLocalTimeout(10*time.Second)))
		err := l.ConnectToURI(golibvirt.RemoteURI(u))
		if err == nil {
			return l, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

var _ socket.Dialer = (*dialers.Local)(nil)

// URI is the connection's libvirt URI.
func (c *Conn) URI() string { return c.uri }

// Close ends the connection.
func (c *Conn) Close() error {
	if c.host != nil {
		c.host.close()
	}
	return c.l.Disconnect()
}

// Local reports whether the daemon runs on this machine.
func (c *Conn) Local() bool { return c.host == nil && !strings.Contains(c.uri, "+") }

// Dial reaches an address on the hypervisor host: directly when local,
// else through an SSH connection to the host.
func (c *Conn) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.host != nil {
		return c.host.dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Capacity reports the host's CPUs and the memory it can still give:
// free plus reclaimable page cache.
func (c *Conn) Capacity(ctx context.Context) (vm.Capacity, error) {
	var out vm.Capacity
	err := c.call(ctx, "node info", 0, func() error {
		_, memKiB, cpus, _, _, _, _, _, err := c.l.NodeGetInfo()
		if err != nil {
			return fault.Infraf("node info: %w", err)
		}
		out.CPUs, out.Memory = int(cpus), memKiB<<10
		out.Available = out.Memory / 2 // when the daemon gives no memory stats
		var stats []golibvirt.NodeGetMemoryStats
		if _, n, serr := c.l.NodeGetMemoryStats(0, -1, 0); serr == nil && n > 0 {
			stats, _, _ = c.l.NodeGetMemoryStats(n, -1, 0)
		}
		var avail uint64
		for _, s := range stats {
			switch s.Field {
			case "free", "buffers", "cached":
				avail += s.Value << 10
			}
		}
		if avail > 0 {
			out.Available = avail
		}
		return nil
	})
	return out, err
}

// EnsureVolume makes a volume with a file's content exist, uploading it
// once: names are content-addressed, so an existing volume is the file.
func (c *Conn) EnsureVolume(ctx context.Context, poolName, name, format string, size int64, open func() (io.ReadCloser, error)) (path string, err error) {
	timeout := callTimeout + time.Duration(size>>26)*time.Minute
	err = c.call(ctx, "upload volume "+name, timeout, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return cmp.Or(err, fault.Infraf("storage pool %s is missing", poolName))
		}
		if v, err := c.l.StorageVolLookupByName(pool, name); err == nil {
			path, err = c.l.StorageVolGetPath(v)
			return err
		}
		x, err := (&libvirtxml.StorageVolume{
			Name:     name,
			Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(size), Unit: "B"},
			Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: format}},
		}).Marshal()
		if err != nil {
			return fault.AsInfra(err)
		}
		in, err := open()
		if err != nil {
			return fault.Infraf("upload volume %s: %w", name, err)
		}
		defer in.Close()
		v, err := c.l.StorageVolCreateXML(pool, x, 0)
		if err != nil {
			return fault.Infraf("create volume %s: %w", name, err)
		}
		if err := c.l.StorageVolUpload(v, in, 0, uint64(size), 0); err != nil {
			_ = c.l.StorageVolDelete(v, 0)
			return fault.Infraf("upload volume %s: %w", name, err)
		}
		path, err = c.l.StorageVolGetPath(v)
		return err
	})
	return path, err
}

// ReadVolume downloads up to max bytes of a volume (a console log that
// sits in a remote pool's directory).
func (c *Conn) ReadVolume(ctx context.Context, poolName, name string, max int64) ([]byte, error) {
	var buf bytes.Buffer
	err := c.call(ctx, "download volume "+name, 0, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return cmp.Or(err, fault.Infraf("storage pool %s is missing", poolName))
		}
		_ = c.l.StoragePoolRefresh(pool, 0)
		v, err := c.l.StorageVolLookupByName(pool, name)
		if err != nil {
			return fault.Infraf("volume %s: %w", name, err)
		}
		return c.l.StorageVolDownload(v, &limitedWriter{w: &buf, n: max}, 0, uint64(max), 0)
	})
	return buf.Bytes(), err
}

type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

// call runs one libvirt call with a deadline: the context's, or callTimeout.
func (c *Conn) call(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(timeout, callTimeout))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fault.Infraf("libvirt at %s: %s did not answer: %w", c.uri, what, ctx.Err())
	}
}

func isNotFound(err error) bool {
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrNoDomain, golibvirt.ErrNoStoragePool, golibvirt.ErrNoStorageVol, golibvirt.ErrNoNetwork:
			return true
		}
	}
	return false
}

func isNotRunning(err error) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && golibvirt.ErrorNumber(le.Code) == golibvirt.ErrOperationInvalid
}

// DomainType decides the domain type from the daemon's own capabilities,
// so it is right for remote hosts too: KVM only when the daemon offers KVM
// domains and the host CPU has vmx or svm. Nested setups such as PVM
// expose /dev/kvm to QEMU yet crash KVM guests; they have neither flag.
func (c *Conn) DomainType(ctx context.Context, want vm.Accel) (vm.DomainType, string, error) {
	if want == vm.AccelTCG {
		return vm.DomainQEMU, "", nil
	}
	why := c.kvmUnusable(ctx)
	switch {
	case why == "":
		return vm.DomainKVM, "", nil
	case want == vm.AccelKVM:
		return "", "", fault.Inputf("--accel kvm: KVM is not usable on %s (%s); use --accel tcg or auto", c.uri, why)
	}
	return vm.DomainQEMU, "KVM unavailable on " + c.uri + " (" + why + "): using TCG software emulation, expect boots 5-10x slower", nil
}

func (c *Conn) kvmUnusable(ctx context.Context) string {
	var dom, host string
	err := c.call(ctx, "domain capabilities", 0, func() (err error) {
		dom, err = c.l.ConnectGetDomainCapabilities(nil, golibvirt.OptString{"x86_64"}, nil, golibvirt.OptString{"kvm"}, 0)
		return err
	})
	if err != nil {
		return "the daemon offers no KVM domains: " + oneLine(err.Error())
	}
	var dc libvirtxml.DomainCaps
	if err := dc.Unmarshal(dom); err != nil || dc.Domain != "kvm" {
		return "the daemon offers no KVM domains"
	}
	if err := c.call(ctx, "host capabilities", 0, func() (err error) {
		host, err = c.l.ConnectGetCapabilities()
		return err
	}); err != nil {
		return "host capabilities: " + oneLine(err.Error())
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(host); err != nil || caps.Host.CPU == nil {
		return "the host capabilities name no CPU"
	}
	if f := caps.Host.CPU.Features; f != nil && (f.VMX != nil || f.SVM != nil) {
		return ""
	}
	for _, f := range caps.Host.CPU.FeatureFlags {
		if f.Name == "vmx" || f.Name == "svm" {
			return ""
		}
	}
	return "the host CPU has no vmx or svm flag: nested virtualisation without hardware support"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// EnsurePool makes the named directory pool exist and run, defining and
// building it at dir when missing, and returns its directory. Cells that
// boot at once (a matrix, or several envctl processes) race to make the
// same pool: whatever another one defined or started meanwhile counts.
func (c *Conn) EnsurePool(ctx context.Context, name, dir string) (string, error) {
	target := dir
	err := c.call(ctx, "storage pool "+name, 0, func() error {
		pool, err := c.l.StoragePoolLookupByName(name)
		if err != nil {
			if !isNotFound(err) {
				return fault.Infraf("storage pool %s: %w", name, err)
			}
			x, err := (&libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir}}).Marshal()
			if err != nil {
				return fault.AsInfra(err)
			}
			defined, derr := c.l.StoragePoolDefineXML(x, 0)
			if derr != nil {
				// Defined by another run since the lookup?
				if pool, err = c.l.StoragePoolLookupByName(name); err != nil {
					return fault.Infraf("define storage pool %s at %s: %w", name, dir, derr)
				}
			} else {
				pool = defined
				if err := c.l.StoragePoolBuild(pool, golibvirt.StoragePoolBuildNew); err != nil && !c.poolRunning(pool) {
					return fault.Infraf("build storage pool %s at %s: %w", name, dir, err)
				}
				_ = c.l.StoragePoolSetAutostart(pool, 1)
			}
		}
		if x, err := c.l.StoragePoolGetXMLDesc(pool, 0); err == nil {
			var def libvirtxml.StoragePool
			if def.Unmarshal(x) == nil && def.Target != nil && def.Target.Path != "" {
				target = def.Target.Path
			}
		}
		if _, _, _, _, err := c.l.StoragePoolGetInfo(pool); err != nil {
			return fault.Infraf("storage pool %s: %w", name, err)
		}
		if c.poolRunning(pool) {
			return nil
		}
		if err := c.l.StoragePoolCreate(pool, 0); err != nil && !c.poolRunning(pool) {
			// Its directory may have been removed: build it and try again.
			if berr := c.l.StoragePoolBuild(pool, golibvirt.StoragePoolBuildNew); berr != nil && !c.poolRunning(pool) {
				return fault.Infraf("start storage pool %s: %w", name, err)
			}
			if err := c.l.StoragePoolCreate(pool, 0); err != nil && !c.poolRunning(pool) {
				return fault.Infraf("start storage pool %s: %w", name, err)
			}
		}
		return nil
	})
	return target, err
}

// poolRunning reports whether a pool is active now (perhaps started by
// another run a moment ago).
func (c *Conn) poolRunning(pool golibvirt.StoragePool) bool {
	state, _, _, _, err := c.l.StoragePoolGetInfo(pool)
	return err == nil && golibvirt.StoragePoolState(state) == golibvirt.StoragePoolRunning
}

// pool looks a pool up without creating it; ok is false when it is missing.
func (c *Conn) pool(name string) (golibvirt.StoragePool, bool, error) {
	pool, err := c.l.StoragePoolLookupByName(name)
	if err != nil {
		if isNotFound(err) {
			return pool, false, nil
		}
		return pool, false, fault.Infraf("storage pool %s: %w", name, err)
	}
	return pool, true, nil
}

// CreateOverlay creates a qcow2 volume backed by base (raw or qcow2).
func (c *Conn) CreateOverlay(ctx context.Context, poolName, name, base, baseFormat string, capacity uint64) (path string, err error) {
	err = c.call(ctx, "create volume "+name, 0, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return cmp.Or(err, fault.Infraf("storage pool %s is missing", poolName))
		}
		x, err := (&libvirtxml.StorageVolume{
			Name:     name,
			Capacity: &libvirtxml.StorageVolumeSize{Value: capacity, Unit: "B"},
			Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
			BackingStore: &libvirtxml.StorageVolumeBackingStore{
				Path:   base,
				Format: &libvirtxml.StorageVolumeTargetFormat{Type: baseFormat},
			},
		}).Marshal()
		if err != nil {
			return fault.AsInfra(err)
		}
		v, err := c.l.StorageVolCreateXML(pool, x, 0)
		if err != nil {
			return fault.Infraf("create overlay volume %s on %s: %w", name, base, err)
		}
		path, err = c.l.StorageVolGetPath(v)
		return err
	})
	return path, err
}

// CreateVolume creates a raw volume holding data.
func (c *Conn) CreateVolume(ctx context.Context, poolName, name string, data []byte) (path string, err error) {
	// Uploads get a minute per 64 MiB on top of the usual deadline.
	timeout := callTimeout + time.Duration(len(data)>>26)*time.Minute
	err = c.call(ctx, "upload volume "+name, timeout, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return cmp.Or(err, fault.Infraf("storage pool %s is missing", poolName))
		}
		x, err := (&libvirtxml.StorageVolume{
			Name:     name,
			Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(len(data)), Unit: "B"},
			Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
		}).Marshal()
		if err != nil {
			return fault.AsInfra(err)
		}
		v, err := c.l.StorageVolCreateXML(pool, x, 0)
		if err != nil {
			return fault.Infraf("create volume %s: %w", name, err)
		}
		if err := c.l.StorageVolUpload(v, bytes.NewReader(data), 0, uint64(len(data)), 0); err != nil {
			_ = c.l.StorageVolDelete(v, 0)
			return fault.Infraf("upload volume %s: %w", name, err)
		}
		path, err = c.l.StorageVolGetPath(v)
		return err
	})
	return path, err
}

// DeleteVolume removes a volume; a missing volume or pool is not an error.
// It never creates or starts a pool.
func (c *Conn) DeleteVolume(ctx context.Context, poolName, name string) error {
	return c.call(ctx, "delete volume "+name, 0, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return err
		}
		v, err := c.l.StorageVolLookupByName(pool, name)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return fault.Infraf("volume %s: %w", name, err)
		}
		if err := c.l.StorageVolDelete(v, 0); err != nil && !isNotFound(err) {
			return fault.Infraf("delete volume %s: %w", name, err)
		}
		return nil
	})
}

// Volumes lists the names of a pool's volumes; a missing pool has none.
func (c *Conn) Volumes(ctx context.Context, poolName string) (names []string, err error) {
	err = c.call(ctx, "list volumes", 0, func() error {
		pool, ok, err := c.pool(poolName)
		if err != nil || !ok {
			return err
		}
		_ = c.l.StoragePoolRefresh(pool, 0)
		vols, _, err := c.l.StoragePoolListAllVolumes(pool, 1, 0)
		if err != nil {
			return fault.Infraf("list volumes of %s: %w", poolName, err)
		}
		for _, v := range vols {
			names = append(names, v.Name)
		}
		return nil
	})
	slices.Sort(names)
	return names, err
}

// Start defines and starts a domain.
func (c *Conn) Start(ctx context.Context, spec vm.DomainSpec) error {
	x, err := DomainXML(spec)
	if err != nil {
		return fault.AsInfra(err)
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
func (c *Conn) SnapshotMemory(ctx context.Context, name, memPath, top string, disks int) error {
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
	return c.call(ctx, "snapshot domain "+name, 0, func() error {
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
	err := c.call(ctx, "restore domain from "+path, 0, func() error {
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
