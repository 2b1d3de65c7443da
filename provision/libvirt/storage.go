package libvirt

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"slices"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
)

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
