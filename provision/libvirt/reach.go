package libvirt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

// A system daemon runs QEMU as its own unprivileged user (libvirt-qemu on
// Debian) and, with dynamic ownership, gives that user each file a domain
// opens. The files of a local run sit in the invoking user's cache and
// state directories, which are often closed (a 0700 home, mkdtemp
// directories). Instead of running QEMU as root, or opening those
// directories to everyone, envctl grants QEMU's user search (--x, not
// read) on each closed directory on the way to a file, with a POSIX ACL
// entry: what virt-manager offers when "the emulator may not have search
// permissions". Session daemons run QEMU as the user; remote hosts keep
// their files in pools; neither needs this.

// qemuIdentity is the user and group a system daemon runs QEMU as.
type qemuIdentity struct {
	uid, gid int
}

// qemuUser reads QEMU's user from the daemon's DAC base label
// (`+64055:+108`), once per connection. ok is false when nothing needs
// granting: a session or remote daemon, or QEMU running as this process's
// user or as root.
func (c *Conn) qemuUser(ctx context.Context) (qemuIdentity, bool, error) {
	c.reachOnce.Do(func() {
		if !c.Local() || !strings.HasSuffix(c.uri, "/system") {
			return
		}
		var host string
		if err := c.call(ctx, "host capabilities", 0, func() (err error) {
			host, err = c.l.ConnectGetCapabilities()
			return err
		}); err != nil {
			c.reachErr = err
			return
		}
		id, ok, err := dacLabel(host)
		if err != nil {
			c.reachErr = fault.Infraf("libvirt at %s: %v", c.uri, err)
			return
		}
		if ok && id.uid != 0 && id.uid != os.Geteuid() {
			c.qemu, c.reaches = id, true
		}
	})
	return c.qemu, c.reaches, c.reachErr
}

// dacLabel parses the DAC security model's base label for KVM (or, when
// absent, plain QEMU) domains from host capabilities.
func dacLabel(capsXML string) (qemuIdentity, bool, error) {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return qemuIdentity{}, false, fmt.Errorf("host capabilities: %w", err)
	}
	for _, m := range caps.Host.SecModel {
		if m.Name != "dac" {
			continue
		}
		for _, want := range []string{"kvm", "qemu"} {
			for _, l := range m.Labels {
				if l.Type != want {
					continue
				}
				u, g, ok := strings.Cut(l.Value, ":")
				uid, err1 := strconv.Atoi(strings.TrimPrefix(u, "+"))
				gid, err2 := strconv.Atoi(strings.TrimPrefix(g, "+"))
				if !ok || err1 != nil || err2 != nil {
					return qemuIdentity{}, false, fmt.Errorf("DAC base label %q is not +UID:+GID", l.Value)
				}
				return qemuIdentity{uid: uid, gid: gid}, true, nil
			}
		}
	}
	return qemuIdentity{}, false, nil
}

// letQEMUReach makes every directory on the way to files searchable by a
// system daemon's QEMU user. The files themselves are given to QEMU by the
// daemon (dynamic ownership).
func (c *Conn) letQEMUReach(ctx context.Context, files ...string) error {
	id, ok, err := c.qemuUser(ctx)
	if err != nil || !ok {
		return err
	}
	return grantSearch(id, files)
}

// specFiles are the files a domain opens.
func specFiles(spec vm.DomainSpec) []string {
	files := []string{spec.Kernel, spec.Initrd, spec.ConsoleLog}
	for _, d := range spec.Disks {
		files = append(files, d.Path)
		files = append(files, d.Backing...)
	}
	return slices.DeleteFunc(files, func(f string) bool { return f == "" })
}

// grantSearch gives id search on each directory from / down to each
// file's parent that it cannot search yet.
func grantSearch(id qemuIdentity, files []string) error {
	done := map[string]bool{}
	for _, f := range files {
		dir, err := filepath.Abs(filepath.Dir(f))
		if err != nil {
			return fault.Infraf("%s: %w", f, err)
		}
		var chain []string
		for d := dir; !done[d]; d = filepath.Dir(d) {
			chain = append(chain, d)
			done[d] = true
			if d == "/" {
				break
			}
		}
		for _, d := range slices.Backward(chain) {
			if err := grantDirSearch(d, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// grantDirSearch adds a `user:UID:--x` ACL entry to dir unless id can
// search it already (as its owner, its group or anyone).
func grantDirSearch(dir string, id qemuIdentity) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fault.Infraf("%s: %w", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := uint16(st.Mode().Perm())
	switch {
	case int(sys.Uid) == id.uid:
		if mode&0o100 != 0 {
			return nil
		}
	case int(sys.Gid) == id.gid && mode&0o010 != 0, mode&0o001 != 0:
		return nil
	}
	acl, err := readACL(dir, mode)
	if err != nil {
		return err
	}
	if !acl.grant(uint32(id.uid), aclSearch) {
		return nil
	}
	if err := unix.Setxattr(dir, aclXattr, acl.encode(), 0); err != nil {
		advice := "use --connect " + SessionURI + ", or a cache and state directory that QEMU's user can reach"
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fault.Infraf("QEMU's user (uid %d) cannot reach %s, and its file system has no ACLs: %s", id.uid, dir, advice)
		}
		return fault.Infraf("QEMU's user (uid %d) cannot reach %s, and envctl may not let it (%v): %s", id.uid, dir, err, advice)
	}
	return nil
}

// The POSIX ACL extended attribute, as the kernel reads it
// (include/uapi/linux/posix_acl_xattr.h): a version, then entries of a tag,
// permissions and an id, ordered by tag and, within named users and
// groups, by id.
const (
	aclXattr   = "system.posix_acl_access"
	aclVersion = 2
	aclSearch  = 1

	tagUserObj  = 0x01
	tagUser     = 0x02
	tagGroupObj = 0x04
	tagGroup    = 0x08
	tagMask     = 0x10
	tagOther    = 0x20

	aclNoID = 0xffffffff
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

type posixACL []aclEntry

// readACL reads a file's access ACL, or the one its mode stands for.
func readACL(path string, mode uint16) (posixACL, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, aclXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA):
		return posixACL{
			{tagUserObj, mode >> 6 & 7, aclNoID},
			{tagGroupObj, mode >> 3 & 7, aclNoID},
			{tagOther, mode & 7, aclNoID},
		}, nil
	case errors.Is(err, unix.EOPNOTSUPP):
		return nil, fault.Infraf("%s: its file system has no ACLs; use --connect %s", path, SessionURI)
	case err != nil:
		return nil, fault.Infraf("read the ACL of %s: %w", path, err)
	}
	return decodeACL(buf[:n])
}

func decodeACL(b []byte) (posixACL, error) {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclVersion || (len(b)-4)%8 != 0 {
		return nil, fault.Infraf("an ACL of %d bytes that is not version %d", len(b), aclVersion)
	}
	var acl posixACL
	for p := b[4:]; len(p) > 0; p = p[8:] {
		acl = append(acl, aclEntry{binary.LittleEndian.Uint16(p), binary.LittleEndian.Uint16(p[2:]), binary.LittleEndian.Uint32(p[4:])})
	}
	return acl, nil
}

func (a posixACL) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range a {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// grant adds perm for uid, and to the mask, which limits every named
// entry; it reports whether anything changed.
func (a *posixACL) grant(uid uint32, perm uint16) bool {
	changed := false
	i := slices.IndexFunc(*a, func(e aclEntry) bool { return e.tag == tagUser && e.id == uid })
	if i < 0 {
		*a = append(*a, aclEntry{tagUser, perm, uid})
		changed = true
	} else if (*a)[i].perm&perm != perm {
		(*a)[i].perm |= perm
		changed = true
	}
	m := slices.IndexFunc(*a, func(e aclEntry) bool { return e.tag == tagMask })
	if m < 0 {
		// A mask is required once there is a named entry; it starts as
		// the group class's permissions, so nothing else gains.
		var group uint16
		for _, e := range *a {
			if e.tag == tagGroupObj || e.tag == tagGroup || e.tag == tagUser {
				group |= e.perm
			}
		}
		*a = append(*a, aclEntry{tagMask, group, aclNoID})
		changed = true
	} else if (*a)[m].perm&perm != perm {
		(*a)[m].perm |= perm
		changed = true
	}
	slices.SortStableFunc(*a, func(x, y aclEntry) int {
		if x.tag != y.tag {
			return int(x.tag) - int(y.tag)
		}
		return int(int64(x.id) - int64(y.id))
	})
	return changed
}
