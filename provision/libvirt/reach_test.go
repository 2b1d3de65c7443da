package libvirt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/envctl/envctl/provision/vm"
)

func TestDACLabel(t *testing.T) {
	caps := func(labels string) string {
		return `<capabilities><host><secmodel><model>none</model><doi>0</doi></secmodel><secmodel><model>dac</model><doi>0</doi>` + labels + `</secmodel></host></capabilities>`
	}
	for _, tc := range []struct {
		name   string
		xml    string
		want   qemuIdentity
		ok     bool
		broken bool
	}{
		{"Debian's libvirt-qemu", caps(`<baselabel type='kvm'>+64055:+108</baselabel><baselabel type='qemu'>+64055:+108</baselabel>`), qemuIdentity{64055, 108}, true, false},
		{"root QEMU", caps(`<baselabel type='kvm'>+0:+0</baselabel>`), qemuIdentity{0, 0}, true, false},
		{"only plain QEMU", caps(`<baselabel type='qemu'>+107:+107</baselabel>`), qemuIdentity{107, 107}, true, false},
		{"no DAC model", `<capabilities><host></host></capabilities>`, qemuIdentity{}, false, false},
		{"not numeric", caps(`<baselabel type='kvm'>qemu:qemu</baselabel>`), qemuIdentity{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := dacLabel(tc.xml)
			if (err != nil) != tc.broken || ok != tc.ok || got != tc.want {
				t.Errorf("dacLabel() = %v, %v, %v; want %v, %v, broken=%v", got, ok, err, tc.want, tc.ok, tc.broken)
			}
		})
	}
}

func TestACLGrant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		acl     posixACL
		want    posixACL
		changed bool
	}{
		{
			"from a 0700 mode",
			posixACL{{tagUserObj, 7, aclNoID}, {tagGroupObj, 0, aclNoID}, {tagOther, 0, aclNoID}},
			posixACL{{tagUserObj, 7, aclNoID}, {tagUser, 1, 64055}, {tagGroupObj, 0, aclNoID}, {tagMask, 1, aclNoID}, {tagOther, 0, aclNoID}},
			true,
		},
		{
			"beside another named user, with a mask without x",
			posixACL{{tagUserObj, 7, aclNoID}, {tagUser, 4, 1000}, {tagUser, 0, 70000}, {tagGroupObj, 4, aclNoID}, {tagMask, 4, aclNoID}, {tagOther, 0, aclNoID}},
			posixACL{{tagUserObj, 7, aclNoID}, {tagUser, 4, 1000}, {tagUser, 1, 64055}, {tagUser, 0, 70000}, {tagGroupObj, 4, aclNoID}, {tagMask, 5, aclNoID}, {tagOther, 0, aclNoID}},
			true,
		},
		{
			"already granted",
			posixACL{{tagUserObj, 7, aclNoID}, {tagUser, 5, 64055}, {tagGroupObj, 0, aclNoID}, {tagMask, 5, aclNoID}, {tagOther, 0, aclNoID}},
			posixACL{{tagUserObj, 7, aclNoID}, {tagUser, 5, 64055}, {tagGroupObj, 0, aclNoID}, {tagMask, 5, aclNoID}, {tagOther, 0, aclNoID}},
			false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acl := slices.Clone(tc.acl)
			if changed := acl.grant(64055, aclSearch); changed != tc.changed || !slices.Equal(acl, tc.want) {
				t.Errorf("grant() = %v, %v; want %v, %v", acl, changed, tc.want, tc.changed)
			}
			back, err := decodeACL(acl.encode())
			if err != nil || !slices.Equal(back, acl) {
				t.Errorf("decode(encode()) = %v, %v", back, err)
			}
		})
	}
	if _, err := decodeACL([]byte{1, 0, 0, 0, 9}); err == nil {
		t.Error("a broken ACL decodes")
	}
}

// TestGrantSearch grants a made-up QEMU user search on a closed directory
// tree, and checks that the kernel took the ACL and that nothing else
// changed: the directories stay closed to everyone else.
func TestGrantSearch(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "closed", "deeper")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(root, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "closed"), 0o700); err != nil {
		t.Fatal(err)
	}
	id := qemuIdentity{uid: 64123, gid: 64123}
	err := grantSearch(id, []string{filepath.Join(dir, "disk.qcow2"), filepath.Join(open, "kernel")})
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("no ACLs on", root)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(root, "closed"), dir} {
		acl, err := readACL(d, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(acl, aclEntry{tagUser, aclSearch, uint32(id.uid)}) {
			t.Errorf("%s: ACL %v has no search for uid %d", d, acl, id.uid)
		}
		st, _ := os.Stat(d)
		if st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: opened to everyone: %v", d, st.Mode())
		}
	}
	if _, err := unix.Getxattr(open, aclXattr, make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("%s was searchable already and got an ACL: %v", open, err)
	}
	// Again: nothing to do.
	if err := grantSearch(id, []string{filepath.Join(dir, "disk.qcow2")}); err != nil {
		t.Error(err)
	}
}

// TestStartLetsQEMUReach starts a domain on a system daemon whose QEMU runs
// as its own user: every closed directory on the way to the domain's
// files (disks, backing chain, kernel, console) lets that user search it.
// A session daemon's QEMU is the user itself: nothing changes.
func TestStartLetsQEMUReach(t *testing.T) {
	for _, tc := range []struct {
		uri   string
		grant bool
	}{{SystemURI, true}, {SessionURI, false}} {
		t.Run(tc.uri, func(t *testing.T) {
			root := t.TempDir()
			dirs := map[string]string{}
			for _, n := range []string{"pool", "images", "state"} {
				dirs[n] = filepath.Join(root, n)
				if err := os.Mkdir(dirs[n], 0o700); err != nil {
					t.Fatal(err)
				}
			}
			f := newFakeRPC()
			f.hostCaps = `<capabilities><host><secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64124:+64124</baselabel></secmodel></host></capabilities>`
			c := &Conn{l: f, uri: tc.uri}
			spec := vm.DomainSpec{Name: "envctl-r", Type: vm.DomainQEMU, CPUs: 1, MemoryMiB: 512, Network: vm.NetworkUser, SSHPort: 40002,
				Disks:  []vm.Disk{{Path: filepath.Join(dirs["pool"], "d.qcow2"), Format: "qcow2", Backing: []string{filepath.Join(dirs["images"], "disk.raw")}}},
				Kernel: filepath.Join(dirs["images"], "vmlinuz"), ConsoleLog: filepath.Join(dirs["state"], "console.log")}
			if err := c.Start(context.Background(), spec); err != nil {
				if errors.Is(err, unix.EOPNOTSUPP) {
					t.Skip("no ACLs on", root)
				}
				t.Fatal(err)
			}
			for n, d := range dirs {
				acl, err := readACL(d, 0o700)
				if err != nil {
					t.Fatal(err)
				}
				if got := slices.Contains(acl, aclEntry{tagUser, aclSearch, 64124}); got != tc.grant {
					t.Errorf("%s: search granted = %v, want %v (ACL %v)", n, got, tc.grant, acl)
				}
			}
		})
	}
}
