package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/envctl/envctl/images/cidata"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/env"
)

// WarmState is a saved running guest: libvirt's save of its memory, its
// disk as it was at that moment (a qcow2 on the base image), the domain
// name the save restores under, and the SSH keys the guest trusts. The
// keys are this user's: warm states live in the user's cache.
type WarmState struct {
	Save    string `json:"save"`
	Disk    string `json:"disk"`
	Domain  string `json:"domain"`
	UserKey string `json:"user_key"` // path of the user key (OpenSSH PEM)
	HostKey string `json:"host_key"` // path of the guest's host key (OpenSSH PEM)
	// Needs are saved disks (of post-boot states) that Disk is backed
	// by: without them the state is incomplete.
	Needs []string `json:"needs,omitempty"`
}

// The files of a warm state in its directory.
const (
	warmSave    = "mem.save"
	warmDisk    = "disk.qcow2"
	warmUserKey = "user_key"
	warmHostKey = "host_key"
)

// keys are a fresh pair for the user and the guest's host, or the pair a
// saved guest already trusts.
func keys(id string, w *WarmState) (user, host cidata.KeyPair, err error) {
	if w == nil {
		if user, err = cidata.NewKeyPair("envctl@" + id); err != nil {
			return
		}
		host, err = cidata.NewKeyPair("envctl-host@" + id)
		return
	}
	for _, k := range []struct {
		path string
		dst  *cidata.KeyPair
		name string
	}{{w.UserKey, &user, "envctl@" + id}, {w.HostKey, &host, "envctl-host@" + id}} {
		b, rerr := os.ReadFile(k.path)
		if rerr != nil {
			return user, host, fmt.Errorf("warm state: %w", rerr)
		}
		if *k.dst, err = cidata.ParseKeyPair(b, k.name); err != nil {
			return user, host, fmt.Errorf("warm state %s: %w", k.path, err)
		}
	}
	return user, host, nil
}

// SaveWarm keeps the running guest in dir without stopping it: a live
// external snapshot writes its memory there and freezes its disk (the run
// goes on writing to a new top layer), and the frozen disk is linked (or
// copied) there with the keys. The domain stays as it was started,
// AUTODESTROY included. Only a local hypervisor keeps warm states: the
// files are this machine's.
func (m *Machine) SaveWarm(ctx context.Context, dir string) (WarmState, error) {
	w, err := m.save(ctx, dir, false)
	m.Timings["save"] = w.took
	return w.WarmState, err
}

// SaveBoot keeps the guest as a post-boot state in dir, as SaveWarm does,
// before the artifact disk is attached (see FromImageToShare).
// dir must stay where it is: the disk the guest goes on writing to (and
// any warm state saved later) is backed by the disk kept there.
func (m *Machine) SaveBoot(ctx context.Context, dir string) (WarmState, error) {
	if m.late == nil && m.from.Kind != FromPostBoot && len(m.ds.Disks) > 2 {
		return WarmState{}, fault.Infraf("post-boot state: the artifact disk is already attached")
	}
	w, err := m.save(ctx, dir, true)
	m.Timings["save.boot"] = w.took
	if err == nil {
		m.chain = append(m.chain, w.Disk)
	}
	return w.WarmState, err
}

type saved struct {
	WarmState
	took time.Duration
}

// save takes the live snapshot. stable makes the new top layer name the
// kept disk (in dir) as its backing file, rather than the frozen volume
// in the pool that goes with this run.
func (m *Machine) save(ctx context.Context, dir string, stable bool) (saved, error) {
	if !m.drv.Local() {
		return saved{}, fault.Infraf("saved state: only a local hypervisor keeps them")
	}
	if m.ds.Network != NetworkUser {
		return saved{}, fault.Infraf("saved state: only with user-mode networking")
	}
	w := saved{WarmState: WarmState{Save: filepath.Join(dir, warmSave), Disk: filepath.Join(dir, warmDisk), Domain: m.Env.Domain,
		UserKey: filepath.Join(dir, warmUserKey), HostKey: filepath.Join(dir, warmHostKey), Needs: slices.Clone(m.chain)}}
	for _, k := range []struct {
		path string
		pem  []byte
	}{{w.UserKey, m.user.PrivatePEM}, {w.HostKey, m.host.PrivatePEM}} {
		if err := os.WriteFile(k.path, k.pem, 0o600); err != nil {
			return w, fault.Infraf("saved state: %w", err)
		}
	}
	start := time.Now()
	frozen := m.ds.Disks[0].Path
	// The frozen disk is kept as a hard link (the same file: once the
	// snapshot is taken nothing writes it any more). A stable save links
	// it first, so that the new top layer names the kept path as its
	// backing file; any other may fall back to a copy afterwards.
	backing, kind := frozen, env.VolumeDiskTop
	if stable {
		if err := os.Link(frozen, w.Disk); err != nil {
			return w, fault.Infraf("saved state: keep the disk: %w (it must be on the pool's file system)", err)
		}
		backing, kind = w.Disk, env.VolumeDiskBoot
	}
	topVol, err := m.Env.AddVolume(kind)
	if err != nil {
		return w, err
	}
	top, err := m.drv.CreateOverlay(ctx, m.Env.Pool, topVol, backing, "qcow2", m.diskSize)
	if err != nil {
		return w, err
	}
	if err := m.drv.SnapshotMemory(ctx, m.Env.Domain, w.Save, top, len(m.ds.Disks), m.ds.MemoryMiB); err != nil {
		return w, err
	}
	m.ds.Disks[0].Path = top
	if !stable {
		if err := os.Link(frozen, w.Disk); err != nil {
			if err := copyFile(frozen, w.Disk); err != nil {
				return w, fault.Infraf("saved state: keep the disk: %w", err)
			}
		}
	}
	m.dropFrozen(ctx, frozen)
	w.took = time.Since(start)
	return w, nil
}

// dropFrozen deletes the frozen disk's name in the pool now, before the
// state is sealed: the kept disk is the same file, and unlinking its
// second name at teardown would change its ctime, so the first restore
// after every save would rehash the whole state. The running QEMU holds
// the file open; the domain is never started again (a saving run's domain
// is transient). A name that cannot be deleted now goes at teardown.
func (m *Machine) dropFrozen(ctx context.Context, frozen string) {
	vol := filepath.Base(frozen)
	if filepath.Dir(frozen) == filepath.Dir(m.ds.Disks[0].Path) && slices.Contains(m.Env.Volumes, vol) {
		if err := m.drv.DeleteVolume(ctx, m.Env.Pool, vol); err != nil {
			m.opts.log().Debug("frozen disk kept in the pool until teardown", "volume", vol, "err", err)
			return
		}
		if err := m.Env.DropVolume(vol); err != nil {
			m.opts.log().Debug("environment record", "err", err)
		}
	}
}

// AttachArtifactDisk hot-plugs the artifact disk that a post-boot state
// was saved without (see FromImageToShare and FromPostBoot) and
// waits until the guest has its device. It does nothing when the disk
// was attached at boot.
func (m *Machine) AttachArtifactDisk(ctx context.Context) error {
	if m.late == nil {
		return nil
	}
	start := time.Now()
	d := *m.late
	if err := m.drv.AttachDisk(ctx, m.Env.Domain, d, len(m.ds.Disks)); err != nil {
		return err
	}
	m.ds.Disks = append(m.ds.Disks, d)
	m.late = nil
	dev := "/dev/disk/by-id/virtio-" + d.Serial
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := m.SSH.Output(wctx, "test -b "+dev)
		if err == nil {
			break
		}
		select {
		case <-wctx.Done():
			return fault.Infraf("VM %s: the hot-plugged artifact disk did not appear as %s within 30s: %w", m.Env.ID, dev, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	m.Timings["attach"] = time.Since(start)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Warm reports whether the machine was restored from a warm state.
func (m *Machine) Warm() bool { return m.from.Kind == FromWarm }

// From is where the guest came from.
func (m *Machine) From() SourceKind { return m.from.Kind }
