package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/envctl/envctl/provision/env"
)

// Owner is who made a domain or a pool: a state directory on a machine.
// Two machines may use the same state directory path against one remote
// libvirt host, so the machine's ID is part of it.
type Owner struct {
	Host     string // this machine's ID (HostID)
	StateDir string // the absolute state directory
}

// OwnerOf is the owner of what a state directory makes on this machine.
func OwnerOf(s env.Store) Owner {
	dir := s.Dir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return Owner{Host: HostID(), StateDir: dir}
}

// Owns reports whether a domain's metadata names this owner. A domain
// without a host ID (or of another machine) is never ours.
func (o Owner) Owns(m Metadata) bool {
	return m.Host != "" && m.Host == o.Host && m.Owner == o.StateDir
}

// Stamp fills the owner fields of domain metadata.
func (o Owner) Stamp(m Metadata, uri string) Metadata {
	m.Host, m.Owner, m.URI = o.Host, o.StateDir, uri
	return m
}

var hostID = sync.OnceValue(func() string {
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return id
			}
		}
	}
	// No machine ID (a minimal container): the host name is the next best.
	name, _ := os.Hostname()
	return "hostname:" + name
})

// HostID identifies this machine: /etc/machine-id, else its host name.
func HostID() string { return hostID() }

// PoolName is the storage pool of a state directory: one per owner, so one
// state directory never blocks or takes over another's pool. A local
// pool's directory is in the state directory, so the path alone names it;
// a remote host's pools sit side by side in one directory there and are
// shared by every machine that connects, so the machine's ID counts too.
func PoolName(s env.Store, local bool) string {
	o := OwnerOf(s)
	key := o.StateDir
	if !local {
		key = o.Host + "\n" + o.StateDir
	}
	sum := sha256.Sum256([]byte(key))
	return "envctl-" + hex.EncodeToString(sum[:])[:8]
}
