package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/envctl/envctl/images/cidata"
	"github.com/envctl/envctl/profiles/fault"
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
	if !m.drv.Local() {
		return WarmState{}, fault.Infraf("warm state: only a local hypervisor keeps them")
	}
	if m.ds.Network != NetworkUser {
		return WarmState{}, fault.Infraf("warm state: only with user-mode networking")
	}
	w := WarmState{Save: filepath.Join(dir, warmSave), Disk: filepath.Join(dir, warmDisk), Domain: m.Env.Domain,
		UserKey: filepath.Join(dir, warmUserKey), HostKey: filepath.Join(dir, warmHostKey)}
	for _, k := range []struct {
		path string
		pem  []byte
	}{{w.UserKey, m.user.PrivatePEM}, {w.HostKey, m.host.PrivatePEM}} {
		if err := os.WriteFile(k.path, k.pem, 0o600); err != nil {
			return w, fault.Infraf("warm state: %w", err)
		}
	}
	start := time.Now()
	frozen := m.ds.Disks[0].Path
	topVol, err := m.Env.AddVolume(env.VolumeDiskTop)
	if err != nil {
		return w, err
	}
	top, err := m.drv.CreateOverlay(ctx, m.Env.Pool, topVol, frozen, "qcow2", m.diskSize)
	if err != nil {
		return w, err
	}
	if err := m.drv.SnapshotMemory(ctx, m.Env.Domain, w.Save, top, len(m.ds.Disks)); err != nil {
		return w, err
	}
	m.ds.Disks[0].Path = top
	// Nothing writes the frozen disk any more: a hard link is enough.
	if err := os.Link(frozen, w.Disk); err != nil {
		if err := copyFile(frozen, w.Disk); err != nil {
			return w, fault.Infraf("warm state: keep the disk: %w", err)
		}
	}
	m.Timings["save"] = time.Since(start)
	return w, nil
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

// Warm reports whether the machine was restored from a saved state.
func (m *Machine) Warm() bool { return m.warm != nil }
