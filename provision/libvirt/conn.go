package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/provision/fault"
)

// Conn is a connection to a libvirt daemon.
type Conn struct {
	l   *golibvirt.Libvirt
	URI string
}

// DefaultURI is the libvirt URI used without --connect.
const DefaultURI = "qemu:///system"

// Connect dials a libvirt URI: qemu:///system, qemu:///session or
// qemu+ssh://host/system (and the other go-libvirt transports).
func Connect(ctx context.Context, uri string) (*Conn, error) {
	if uri == "" {
		uri = DefaultURI
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fault.Inputf("--connect %q: %v", uri, err)
	}
	if u.Path == "/session" && u.Host == "" && u.Query().Get("socket") == "" {
		rt := os.Getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			rt = fmt.Sprintf("/run/user/%d", os.Getuid())
		}
		q := u.Query()
		q.Set("socket", filepath.Join(rt, "libvirt", "libvirt-sock"))
		u.RawQuery = q.Encode()
	}
	if u.Path == "/system" && u.Host == "" && u.Query().Get("socket") == "" {
		// Modular daemons listen on virtqemud-sock instead of libvirt-sock.
		if _, err := os.Stat("/var/run/libvirt/libvirt-sock"); err != nil {
			if _, err2 := os.Stat("/var/run/libvirt/virtqemud-sock"); err2 == nil {
				q := u.Query()
				q.Set("socket", "/var/run/libvirt/virtqemud-sock")
				u.RawQuery = q.Encode()
			}
		}
	}
	type result struct {
		l   *golibvirt.Libvirt
		err error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := golibvirt.ConnectToURI(u)
		ch <- result{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fault.Infraf("cannot reach libvirt at %s (%v); start the daemon (`make host` runs scripts/host-setup.sh) or pass --connect", uri, r.err)
		}
		return &Conn{l: r.l, URI: uri}, nil
	case <-ctx.Done():
		return nil, fault.Infraf("connecting to libvirt at %s: %w", uri, ctx.Err())
	case <-time.After(30 * time.Second):
		return nil, fault.Infraf("libvirt at %s did not answer within 30s; is the daemon healthy?", uri)
	}
}

// Close ends the connection.
func (c *Conn) Close() error { return c.l.Disconnect() }

// Version returns the daemon's libvirt version, e.g. 9000000 for 9.0.0.
func (c *Conn) Version() (uint64, error) { return c.l.ConnectGetLibVersion() }

func isNotFound(err error) bool {
	var le golibvirt.Error
	if errors.As(err, &le) {
		return le.Code == uint32(golibvirt.ErrNoDomain) || le.Code == uint32(golibvirt.ErrNoStoragePool) || le.Code == uint32(golibvirt.ErrNoStorageVol)
	}
	return false
}

// EnsurePool returns the named directory pool, defining, building and
// starting it when missing or inactive.
func (c *Conn) EnsurePool(name, dir string) (golibvirt.StoragePool, error) {
	pool, err := c.l.StoragePoolLookupByName(name)
	if err == nil {
		// A pool left by another state directory (ENVCTL_STATE_DIR, HOME)
		// points elsewhere: take it over when it is empty.
		if x, xerr := c.l.StoragePoolGetXMLDesc(pool, 0); xerr == nil {
			var def libvirtxml.StoragePool
			if def.Unmarshal(x) == nil && def.Target != nil && filepath.Clean(def.Target.Path) != filepath.Clean(dir) {
				_ = c.l.StoragePoolRefresh(pool, 0)
				if vols, _, verr := c.l.StoragePoolListAllVolumes(pool, 1, 0); verr == nil && len(vols) > 0 {
					return pool, fault.Infraf("storage pool %s holds %d volumes in %s, but this envctl keeps its pool in %s; run `envctl gc` with the other state directory, or remove the pool", name, len(vols), def.Target.Path, dir)
				}
				_ = c.l.StoragePoolDestroy(pool)
				if uerr := c.l.StoragePoolUndefine(pool); uerr != nil {
					return pool, fault.Infraf("storage pool %s: redefine for %s: %w", name, dir, uerr)
				}
				err = golibvirt.Error{Code: uint32(golibvirt.ErrNoStoragePool)}
			}
		}
	}
	if err != nil {
		if !isNotFound(err) {
			return pool, fault.Infraf("storage pool %s: %w", name, err)
		}
		def := &libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir}}
		x, err := def.Marshal()
		if err != nil {
			return pool, err
		}
		pool, err = c.l.StoragePoolDefineXML(x, 0)
		if err != nil {
			return pool, fault.Infraf("define storage pool %s at %s: %w", name, dir, err)
		}
		if err := c.l.StoragePoolBuild(pool, golibvirt.StoragePoolBuildNew); err != nil {
			return pool, fault.Infraf("build storage pool %s at %s: %w", name, dir, err)
		}
		_ = c.l.StoragePoolSetAutostart(pool, 1)
	}
	state, _, _, _, err := c.l.StoragePoolGetInfo(pool)
	if err != nil {
		return pool, fault.Infraf("storage pool %s: %w", name, err)
	}
	if golibvirt.StoragePoolState(state) != golibvirt.StoragePoolRunning {
		if err := c.l.StoragePoolCreate(pool, 0); err != nil {
			// Its directory may have been removed: build it and try again.
			if berr := c.l.StoragePoolBuild(pool, golibvirt.StoragePoolBuildNew); berr != nil {
				return pool, fault.Infraf("start storage pool %s: %w", name, err)
			}
			if err := c.l.StoragePoolCreate(pool, 0); err != nil {
				return pool, fault.Infraf("start storage pool %s: %w", name, err)
			}
		}
	}
	return pool, nil
}

// CreateOverlay creates a qcow2 volume backed by base (format raw or qcow2).
func (c *Conn) CreateOverlay(pool golibvirt.StoragePool, name, base, baseFormat string, capacity uint64) (string, error) {
	vol := &libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: capacity, Unit: "B"},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
		BackingStore: &libvirtxml.StorageVolumeBackingStore{
			Path:   base,
			Format: &libvirtxml.StorageVolumeTargetFormat{Type: baseFormat},
		},
	}
	x, err := vol.Marshal()
	if err != nil {
		return "", err
	}
	v, err := c.l.StorageVolCreateXML(pool, x, 0)
	if err != nil {
		return "", fault.Infraf("create overlay volume %s on %s: %w", name, base, err)
	}
	return c.l.StorageVolGetPath(v)
}

// UploadVolume creates a raw volume holding data.
func (c *Conn) UploadVolume(pool golibvirt.StoragePool, name string, data []byte) (string, error) {
	vol := &libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(len(data)), Unit: "B"},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	}
	x, err := vol.Marshal()
	if err != nil {
		return "", err
	}
	v, err := c.l.StorageVolCreateXML(pool, x, 0)
	if err != nil {
		return "", fault.Infraf("create volume %s: %w", name, err)
	}
	if err := c.l.StorageVolUpload(v, strings.NewReader(string(data)), 0, uint64(len(data)), 0); err != nil {
		_ = c.l.StorageVolDelete(v, 0)
		return "", fault.Infraf("upload volume %s: %w", name, err)
	}
	return c.l.StorageVolGetPath(v)
}

// Volumes lists the names of the pool's volumes.
func (c *Conn) Volumes(pool golibvirt.StoragePool) ([]string, error) {
	_ = c.l.StoragePoolRefresh(pool, 0)
	vols, _, err := c.l.StoragePoolListAllVolumes(pool, 1, 0)
	if err != nil {
		return nil, fault.Infraf("list volumes: %w", err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	return names, nil
}

// DeleteVolume removes a volume; a missing one is not an error.
func (c *Conn) DeleteVolume(pool golibvirt.StoragePool, name string) error {
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
}

// Start defines and starts a domain.
func (c *Conn) Start(domainXML string) error {
	d, err := c.l.DomainDefineXMLFlags(domainXML, 0)
	if err != nil {
		return fault.Infraf("define domain: %w", err)
	}
	if err := c.l.DomainCreate(d); err != nil {
		_ = c.l.DomainUndefineFlags(d, golibvirt.DomainUndefineSnapshotsMetadata|golibvirt.DomainUndefineNvram)
		return fault.Infraf("start domain %s: %w", d.Name, err)
	}
	return nil
}

// Remove destroys (if running) and undefines a domain; a missing one is fine.
func (c *Conn) Remove(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fault.Infraf("domain %s: %w", name, err)
	}
	if err := c.l.DomainDestroy(d); err != nil && !isNotFound(err) && !strings.Contains(err.Error(), "not running") {
		return fault.Infraf("destroy domain %s: %w", name, err)
	}
	if err := c.l.DomainUndefineFlags(d, golibvirt.DomainUndefineSnapshotsMetadata|golibvirt.DomainUndefineManagedSave|golibvirt.DomainUndefineNvram); err != nil && !isNotFound(err) {
		return fault.Infraf("undefine domain %s: %w", name, err)
	}
	return nil
}

// DomainInfo describes an envctl domain.
type DomainInfo struct {
	Name    string
	Running bool
	Meta    Metadata
}

// EnvDomains lists every domain carrying envctl metadata.
func (c *Conn) EnvDomains() ([]DomainInfo, error) {
	doms, _, err := c.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fault.Infraf("list domains: %w", err)
	}
	var out []DomainInfo
	for _, d := range doms {
		raw, err := c.l.DomainGetMetadata(d, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{MetadataNS}, golibvirt.DomainAffectCurrent)
		if err != nil {
			continue
		}
		m, err := ParseMetadata(raw)
		if err != nil || m.ID == "" {
			continue
		}
		state, _, _ := c.l.DomainGetState(d, 0)
		out = append(out, DomainInfo{Name: d.Name, Running: golibvirt.DomainState(state) == golibvirt.DomainRunning, Meta: m})
	}
	return out, nil
}

// LeaseIP returns the IPv4 address libvirt's DHCP server leased to the
// domain's first interface on the named network, or "" while there is none.
func (c *Conn) LeaseIP(network, domain string) (string, error) {
	d, err := c.l.DomainLookupByName(domain)
	if err != nil {
		return "", fault.Infraf("domain %s: %w", domain, err)
	}
	x, err := c.l.DomainGetXMLDesc(d, 0)
	if err != nil {
		return "", fault.Infraf("domain %s: %w", domain, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return "", fault.Infraf("domain %s: %w", domain, err)
	}
	if def.Devices == nil || len(def.Devices.Interfaces) == 0 || def.Devices.Interfaces[0].MAC == nil {
		return "", fault.Infraf("domain %s has no network interface with a MAC address", domain)
	}
	mac := strings.ToLower(def.Devices.Interfaces[0].MAC.Address)
	n, err := c.l.NetworkLookupByName(network)
	if err != nil {
		return "", fault.Infraf("network %s: %w; define and start it, or use --network user", network, err)
	}
	leases, _, err := c.l.NetworkGetDhcpLeases(n, golibvirt.OptString{mac}, 1, 0)
	if err != nil {
		return "", fault.Infraf("DHCP leases of network %s: %w", network, err)
	}
	for _, l := range leases {
		if l.Type == int32(golibvirt.IPAddrTypeIpv4) {
			return l.Ipaddr, nil
		}
	}
	return "", nil
}

// Running reports whether the named domain runs.
func (c *Conn) Running(name string) bool {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return false
	}
	state, _, err := c.l.DomainGetState(d, 0)
	return err == nil && golibvirt.DomainState(state) == golibvirt.DomainRunning
}

var _ io.Reader
