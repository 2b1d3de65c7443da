package libvirt

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

var base = vm.DomainSpec{Name: "envctl-x", Type: vm.DomainQEMU, CPUs: 2, MemoryMiB: 2048,
	Disks:  []vm.Disk{{Path: "/p/d.qcow2", Format: "qcow2"}, {Path: "/p/s.iso", Format: "raw", ReadOnly: true}},
	Kernel: "/c/vmlinuz", Initrd: "/c/initrd", Cmdline: "root=/dev/vda", ConsoleLog: "/e/console.log", SSHPort: 2222,
	Metadata: vm.Metadata{ID: "x-1", Profile: "p", PID: 42, Created: "now", Owner: "/state"}}

func TestDomainXML(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*vm.DomainSpec)
		want   []string
		absent []string
	}{
		{"tcg direct boot user net", func(*vm.DomainSpec) {}, []string{`type="qemu"`, "<kernel>/c/vmlinuz</kernel>", "hostfwd=tcp:127.0.0.1:2222-:22", "restrict=on", `<source path="/e/console.log">`, "<envctl:id>x-1</envctl:id>", "<envctl:owner>/state</envctl:owner>", "<readonly>", `dev="vdb"`, `cache="unsafe"`}, []string{"host-passthrough", "<boot"}},
		{"kvm disk boot", func(s *vm.DomainSpec) { s.Type, s.Kernel = vm.DomainKVM, "" }, []string{`type="kvm"`, "host-passthrough", `<boot dev="hd">`}, []string{"<kernel>"}},
		{"online", func(s *vm.DomainSpec) { s.Online = true }, []string{"hostfwd"}, []string{"restrict=on"}},
		{"nat", func(s *vm.DomainSpec) { s.Network = vm.NetworkNAT }, []string{`<interface type="network">`, `network="default"`}, []string{"hostfwd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mutate(&s)
			x, err := DomainXML(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(x, w) {
					t.Errorf("XML lacks %s\n%s", w, x)
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(x, w) {
					t.Errorf("XML has %s", w)
				}
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(x); err != nil {
				t.Fatalf("XML does not parse back: %v", err)
			}
		})
	}
	for name, mutate := range map[string]func(*vm.DomainSpec){
		"xen":               func(s *vm.DomainSpec) { s.Type = "xen" },
		"user net, no port": func(s *vm.DomainSpec) { s.SSHPort = 0 },
		"bridge network":    func(s *vm.DomainSpec) { s.Network = "bridge" },
	} {
		s := base
		mutate(&s)
		if _, err := DomainXML(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, err := ParseMetadata(`<env xmlns="https://envctl.dev/xmlns/env/1"><id>a</id><profile>p</profile><pid>7</pid><owner>/s</owner><host>h</host><uri>qemu:///system</uri></env>`)
	if err != nil || m.ID != "a" || m.PID != 7 || m.Owner != "/s" || m.Host != "h" || m.URI != "qemu:///system" {
		t.Errorf("metadata %+v %v", m, err)
	}
	// The owner round-trips through the domain XML.
	owned := base
	owned.Metadata = vm.Owner{Host: "machine-1", StateDir: "/state"}.Stamp(base.Metadata, "qemu:///system")
	x, _ := DomainXML(owned)
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	back, err := ParseMetadata(d.Metadata.XML)
	if err != nil || back != owned.Metadata {
		t.Errorf("metadata round trip: %+v, want %+v (%v)", back, owned.Metadata, err)
	}
}

const kvmDomCaps = `<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain><machine>pc</machine><arch>x86_64</arch></domainCapabilities>`

func hostCaps(features string) string {
	return `<capabilities><host><uuid>x</uuid><cpu><arch>x86_64</arch><model>kvm64</model>` + features + `</cpu></host></capabilities>`
}

func TestDomainTypeFromCapabilities(t *testing.T) {
	tests := []struct {
		name              string
		domCaps, hostCaps string
		want              vm.Accel
		got               vm.DomainType
		warn, err         bool
	}{
		{"intel with vmx", kvmDomCaps, hostCaps(`<feature name="vmx"/>`), vm.AccelAuto, vm.DomainKVM, false, false},
		{"amd with svm features", kvmDomCaps, hostCaps(`<features><svm/></features>`), vm.AccelAuto, vm.DomainKVM, false, false},
		{"PVM: kvm offered, no vmx or svm", kvmDomCaps, hostCaps(`<feature name="hypervisor"/>`), vm.AccelAuto, vm.DomainQEMU, true, false},
		{"no KVM domains", "", hostCaps(`<feature name="vmx"/>`), vm.AccelAuto, vm.DomainQEMU, true, false},
		{"tcg asked", kvmDomCaps, hostCaps(`<feature name="vmx"/>`), vm.AccelTCG, vm.DomainQEMU, false, false},
		{"kvm asked and usable", kvmDomCaps, hostCaps(`<feature name="vmx"/>`), vm.AccelKVM, vm.DomainKVM, false, false},
		{"kvm asked, not usable", kvmDomCaps, hostCaps(""), vm.AccelKVM, "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRPC()
			f.domCaps, f.hostCaps = tt.domCaps, tt.hostCaps
			c := &Conn{l: f, uri: "qemu:///system"}
			got, warn, err := c.DomainType(context.Background(), tt.want)
			if got != tt.got || (warn != "") != tt.warn || (err != nil) != tt.err {
				t.Errorf("DomainType = %q, %q, %v", got, warn, err)
			}
			if err != nil && !fault.Is(err, fault.Input) {
				t.Errorf("class %v", fault.ClassOf(err))
			}
			if tt.name == "PVM: kvm offered, no vmx or svm" && !strings.Contains(warn, "no vmx or svm") {
				t.Errorf("warning %q", warn)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	tests := []struct {
		name, caps string
		want       vm.HostIdentity
		err        bool
	}{
		{"vendor and model", `<capabilities><host><cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model><vendor>Intel</vendor></cpu></host></capabilities>`,
			vm.HostIdentity{QEMU: "7.2.11", CPU: "Intel Skylake-Client-IBRS"}, false},
		{"model only", hostCaps(""), vm.HostIdentity{QEMU: "7.2.11", CPU: "kvm64"}, false},
		{"no CPU", "<capabilities><host></host></capabilities>", vm.HostIdentity{QEMU: "7.2.11"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRPC()
			f.hostCaps = tt.caps
			c := &Conn{l: f, uri: "qemu:///system"}
			got, err := c.Identity(context.Background())
			if (err != nil) != tt.err || (err == nil && got != tt.want) {
				t.Errorf("Identity = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestStorage(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	if dir, err := c.EnsurePool(ctx, "envctl-1", "/s/pool"); err != nil || dir != "/s/pool" {
		t.Fatal(err)
	}
	if p := f.pools["envctl-1"]; p == nil || !p.running || p.dir != "/s/pool" {
		t.Fatalf("pool %+v", p)
	}
	if dir, _ := c.EnsurePool(ctx, "envctl-1", "/elsewhere"); dir != "/s/pool" {
		t.Errorf("an existing pool's directory is %s, not where it was defined", dir)
	}
	f.pools["envctl-1"].running, f.pools["envctl-1"].built = false, false // stopped, directory gone
	if _, err := c.EnsurePool(ctx, "envctl-1", "/s/pool"); err != nil || !f.pools["envctl-1"].running {
		t.Fatalf("restart: %v", err)
	}
	path, err := c.CreateOverlay(ctx, "envctl-1", "e-disk.qcow2", "/cache/base.raw", "raw", 10<<30)
	if err != nil || path != "/s/pool/e-disk.qcow2" {
		t.Fatalf("overlay %s %v", path, err)
	}
	var vol libvirtxml.StorageVolume
	_ = vol.Unmarshal(f.pools["envctl-1"].vols["e-disk.qcow2"].xml)
	if vol.BackingStore == nil || vol.BackingStore.Path != "/cache/base.raw" || vol.BackingStore.Format.Type != "raw" || vol.Target.Format.Type != "qcow2" {
		t.Errorf("overlay volume %+v", vol)
	}
	if _, err := c.CreateVolume(ctx, "envctl-1", "e-seed.iso", []byte("seed")); err != nil {
		t.Fatal(err)
	}
	if string(f.pools["envctl-1"].vols["e-seed.iso"].data) != "seed" {
		t.Error("upload lost")
	}
	f.fail["StorageVolUpload"] = errors.New("stream broke")
	if _, err := c.CreateVolume(ctx, "envctl-1", "e-art.iso", []byte("x")); err == nil || f.pools["envctl-1"].vols["e-art.iso"] != nil {
		t.Errorf("failed upload left a volume: %v", err)
	}
	delete(f.fail, "StorageVolUpload")
	names, err := c.Volumes(ctx, "envctl-1")
	if err != nil || strings.Join(names, " ") != "e-disk.qcow2 e-seed.iso" {
		t.Errorf("volumes %v %v", names, err)
	}
	for _, v := range []string{"e-disk.qcow2", "e-seed.iso", "gone.iso"} {
		if err := c.DeleteVolume(ctx, "envctl-1", v); err != nil {
			t.Errorf("delete %s: %v", v, err)
		}
	}
	// Deleting from a missing pool is fine and never creates the pool.
	if err := c.DeleteVolume(ctx, "envctl-missing", "x"); err != nil || f.pools["envctl-missing"] != nil {
		t.Errorf("delete from a missing pool: %v", err)
	}
	if names, err := c.Volumes(ctx, "envctl-missing"); err != nil || len(names) != 0 {
		t.Errorf("volumes of a missing pool: %v %v", names, err)
	}
	if _, err := c.CreateOverlay(ctx, "envctl-missing", "x", "/b", "raw", 1); !fault.Is(err, fault.Infra) {
		t.Errorf("overlay in a missing pool: %v", err)
	}
}

// Cells booting at once race to make their state directory's pool: the
// pool another run defined or started in between is used, not an error.
func TestEnsurePoolRaces(t *testing.T) {
	for _, tc := range []struct {
		name, call string
		other      func(f *fakeRPC)
	}{
		{"started by another run", "StoragePoolCreate", func(f *fakeRPC) { f.pools["envctl-1"].running = true }},
		{"defined and started by another run", "StoragePoolDefineXML", func(f *fakeRPC) {
			f.pools["envctl-1"] = &fakePool{dir: "/s/pool", built: true, running: true, vols: map[string]*fakeVol{}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRPC()
			c := &Conn{l: f, uri: "qemu:///system"}
			once := false
			f.before = func(call string) {
				if call == tc.call && !once {
					once = true
					f.mu.Lock()
					tc.other(f)
					f.mu.Unlock()
				}
			}
			if dir, err := c.EnsurePool(context.Background(), "envctl-1", "/s/pool"); err != nil || dir != "/s/pool" || !f.pools["envctl-1"].running {
				t.Fatalf("dir %s err %v", dir, err)
			}
		})
	}
}

// A saved domain restores under its own name, with the new run's disks,
// metadata, SSH port and console; a missing save is an infrastructure
// error (the caller then boots cold).
func TestSaveAndRestore(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	spec := vm.DomainSpec{Name: "envctl-a", Type: vm.DomainQEMU, CPUs: 2, MemoryMiB: 2048, SSHPort: 40001, Network: vm.NetworkUser,
		Disks:      []vm.Disk{{Path: "/p/a-disk.qcow2", Format: "qcow2"}, {Path: "/p/a-seed.iso", Format: "raw", ReadOnly: true}},
		ConsoleLog: "/s/a/console.log", Metadata: vm.Metadata{ID: "a", Profile: "p", PID: 1}}
	if err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := c.SnapshotMemory(ctx, "envctl-a", "/w/mem.save", "/p/a-top.qcow2", 2, 2048); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.domains["envctl-a"]; !ok {
		t.Fatal("a live snapshot stopped the domain")
	}
	snap := f.snapshots[0]
	for _, want := range []string{`<memory snapshot="external" file="/w/mem.save">`, `<disk type="file" name="vda" snapshot="external">`, `<source file="/p/a-top.qcow2">`, `<disk name="vdb" snapshot="no">`} {
		if !strings.Contains(snap, want) {
			t.Errorf("snapshot XML lacks %s:\n%s", want, snap)
		}
	}
	delete(f.domains, "envctl-a") // the run ended
	next := spec
	next.Name, next.SSHPort, next.ConsoleLog = "envctl-b", 40777, "/s/b/console.log"
	next.Disks = []vm.Disk{{Path: "/p/b-disk.qcow2", Format: "qcow2"}, {Path: "/p/b-seed.iso", Format: "raw", ReadOnly: true}}
	next.Metadata = vm.Metadata{ID: "b", Profile: "p", PID: 2}
	name, err := c.RestoreDomain(ctx, "/w/mem.save", next)
	if err != nil || name != "envctl-a" {
		t.Fatalf("restore: %s %v", name, err)
	}
	x := f.domains["envctl-a"].xml
	for _, want := range []string{"/p/b-disk.qcow2", "/p/b-seed.iso", "hostfwd=tcp:127.0.0.1:40777-:22", "/s/b/console.log", "<envctl:id>b</envctl:id>"} {
		if !strings.Contains(x, want) {
			t.Errorf("restored XML lacks %s:\n%s", want, x)
		}
	}
	if strings.Contains(x, "40001") || strings.Contains(x, "a-disk") {
		t.Errorf("the old run's port or disk survived:\n%s", x)
	}
	// A restored post-boot state gets the artifact disk hot-plugged.
	art := vm.Disk{Path: "/c/blobs/sha256/ab", Format: "raw", ReadOnly: true, Serial: "envctl-artifacts"}
	if err := c.AttachDisk(ctx, "envctl-a", art, 2); err != nil {
		t.Fatal(err)
	}
	x = f.domains["envctl-a"].xml
	for _, want := range []string{`<source file="/c/blobs/sha256/ab">`, `<target dev="vdc" bus="virtio">`, "<readonly></readonly>", "<serial>envctl-artifacts</serial>"} {
		if !strings.Contains(x, want) {
			t.Errorf("after the hot-plug the domain lacks %s:\n%s", want, x)
		}
	}
	if err := c.AttachDisk(ctx, "envctl-gone", art, 2); !fault.Is(err, fault.Infra) {
		t.Errorf("hot-plug into a missing domain: %v", err)
	}
	if _, err := c.RestoreDomain(ctx, "/w/missing.save", next); !fault.Is(err, fault.Infra) {
		t.Errorf("missing save: %v", err)
	}
	next.Disks = next.Disks[:1]
	if _, err := c.RestoreDomain(ctx, "/w/mem.save", next); err == nil || !strings.Contains(err.Error(), "the save has 2 disks") {
		t.Errorf("disk count: %v", err)
	}
}

func TestDomains(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	if err := c.Start(ctx, base); err != nil {
		t.Fatal(err)
	}
	if st, err := c.State(ctx, "envctl-x"); err != nil || st != vm.DomainRunning {
		t.Errorf("state %s %v", st, err)
	}
	if _, err := f.DomainDefineXMLFlags("<domain type='qemu'><name>other</name></domain>", 0); err != nil {
		t.Fatal(err)
	}
	doms, err := c.Domains(ctx)
	if err != nil || len(doms) != 1 || doms[0].Meta.ID != "x-1" || doms[0].Meta.Owner != "/state" || doms[0].State != vm.DomainRunning {
		t.Errorf("domains %+v %v (the domain without envctl metadata must not be listed)", doms, err)
	}
	f.domains["envctl-x"].cpuNs = 2_500_000_000
	if used, err := c.CPUTime(ctx, "envctl-x"); err != nil || used != 2500*time.Millisecond {
		t.Errorf("CPU time %s %v, want 2.5s", used, err)
	}
	if _, err := c.CPUTime(ctx, "envctl-missing"); !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "envctl-missing") {
		t.Errorf("CPU time of a missing domain: %v", err)
	}
	f.domains["envctl-x"].state = golibvirt.DomainPaused
	if st, _ := c.State(ctx, "envctl-x"); st != vm.DomainPaused {
		t.Errorf("paused domain is %s", st)
	}
	if err := c.Remove(ctx, "envctl-x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "envctl-x"); err != nil {
		t.Errorf("removing a missing domain: %v", err)
	}
	if err := c.Remove(ctx, "other"); err != nil {
		t.Errorf("removing a shut-off domain: %v", err)
	}
	if st, err := c.State(ctx, "envctl-x"); err != nil || st != vm.DomainMissing {
		t.Errorf("missing domain: %s %v", st, err)
	}
	f.fail["DomainCreateWithFlags"] = lverr(golibvirt.ErrInternalError, "qemu died")
	if err := c.Start(ctx, base); !fault.Is(err, fault.Infra) || f.domains["envctl-x"] != nil {
		t.Errorf("failed start left a definition: %v", err)
	}
}

// A domain that is not kept is transient and bound to the connection:
// when envctl's connection ends, however it dies, libvirt destroys it.
func TestAutoDestroy(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	spec := base
	spec.AutoDestroy = true
	if err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.calls, "DomainCreateXML") || slices.Contains(f.calls, "DomainDefineXMLFlags") {
		t.Errorf("calls %v: an autodestroy domain must be created transient", f.calls)
	}
	if d := f.domains["envctl-x"]; d == nil || !d.autodestroy {
		t.Fatal("domain not started with AUTODESTROY")
	}
	// Remove of a transient domain: destroy makes it vanish, and the
	// undefine that follows finds nothing, which is fine.
	if err := c.Remove(ctx, "envctl-x"); err != nil || f.domains["envctl-x"] != nil {
		t.Errorf("remove transient: %v", err)
	}
	if err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if f.domains["envctl-x"] != nil {
		t.Error("the domain outlived its connection")
	}
}

func TestLeaseIP(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	nat := base
	nat.Network = vm.NetworkNAT
	x, _ := DomainXML(nat)
	x = strings.Replace(x, `<interface type="network">`, `<interface type="network"><mac address="52:54:00:AA:BB:CC"></mac>`, 1)
	if _, err := f.DomainDefineXMLFlags(x, 0); err != nil {
		t.Fatal(err)
	}
	if ip, err := c.LeaseIP(ctx, "default", "envctl-x"); err != nil || ip != "" {
		t.Errorf("before a lease: %q %v", ip, err)
	}
	f.leases["52:54:00:aa:bb:cc"] = "192.0.2.10"
	if ip, err := c.LeaseIP(ctx, "default", "envctl-x"); err != nil || ip != "192.0.2.10" {
		t.Errorf("lease: %q %v", ip, err)
	}
	if _, err := c.LeaseIP(ctx, "nonet", "envctl-x"); err == nil || !strings.Contains(err.Error(), "--network user") {
		t.Errorf("missing network: %v", err)
	}
}

// TestEveryCallHasADeadline: a daemon that stops answering fails the call
// when its context ends, instead of hanging envctl.
func TestEveryCallHasADeadline(t *testing.T) {
	f := newFakeRPC()
	f.block = make(chan struct{})
	defer close(f.block)
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Domains(ctx)
	if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "did not answer") || time.Since(start) > 2*time.Second {
		t.Errorf("err %v after %s", err, time.Since(start))
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Connect(ctx, "not a uri"); !fault.Is(err, fault.Input) {
		t.Errorf("bad uri: %v", err)
	}
	_, err := Connect(ctx, "qemu:///system?socket=/nonexistent/libvirt-sock")
	if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "cannot reach libvirt") {
		t.Errorf("no daemon: %v", err)
	}
}

func TestCapacityAndVolumes(t *testing.T) {
	f := newFakeRPC()
	c := &Conn{l: f, uri: "qemu:///system"}
	ctx := context.Background()
	cp, err := c.Capacity(ctx)
	if err != nil || cp.CPUs != 2 || cp.Memory != 24<<30 || cp.Available != 20<<30 {
		t.Fatalf("capacity %+v %v", cp, err)
	}
	if !c.Local() {
		t.Error("qemu:///system is local")
	}
	if (&Conn{uri: "qemu+ssh://h/system", host: &hostSSH{}}).Local() {
		t.Error("qemu+ssh is not local")
	}
	if _, err := c.EnsurePool(ctx, "p", "/pool"); err != nil {
		t.Fatal(err)
	}
	opened := 0
	open := func() (io.ReadCloser, error) { opened++; return io.NopCloser(strings.NewReader("base image")), nil }
	for range 2 {
		path, err := c.EnsureVolume(ctx, "p", "envctl-base-disk-abc", "raw", 10, open)
		if err != nil || path != "/pool/envctl-base-disk-abc" {
			t.Fatalf("ensure %s %v", path, err)
		}
	}
	if opened != 1 || string(f.pools["p"].vols["envctl-base-disk-abc"].data) != "base image" {
		t.Errorf("uploaded %d times", opened)
	}
	b, err := c.ReadVolume(ctx, "p", "envctl-base-disk-abc", 4)
	if err != nil || string(b) != "base" {
		t.Errorf("read %q %v", b, err)
	}
	if _, err := c.ReadVolume(ctx, "p", "missing", 4); err == nil {
		t.Error("read a missing volume")
	}
	conn, err := c.Dial(ctx, "tcp", "127.0.0.1:1")
	if err == nil {
		conn.Close()
	}
}

func TestSSHTargets(t *testing.T) {
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	_ = os.WriteFile(kh, nil, 0o600)
	u, _ := url.Parse("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&known_hosts=" + kh)
	tg, err := parseSSHTarget(u)
	if err != nil || tg.host != "127.0.0.1" || tg.port != "2222" || tg.user != "root" || tg.keyFile != "/k" || tg.knownHosts != kh {
		t.Errorf("target %+v %v", tg, err)
	}
	for _, bad := range []string{
		"qemu+ssh://root@h/system?no_verify=1",
		"qemu+ssh://root@h/system?known_hosts=/nonexistent",
	} {
		u, _ := url.Parse(bad)
		if _, err := parseSSHTarget(u); !fault.Is(err, fault.Input) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if !vm.IsRemote("qemu+ssh://h/system") || vm.IsRemote("qemu:///system") {
		t.Error("IsRemote")
	}
}

// A host that accepts the TCP connection and says nothing (sshd at
// MaxStartups, a half-dead link) must not hang the run: the whole SSH
// handshake is bounded by the context.
func TestSSHHandshakeIsBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	_ = os.WriteFile(kh, nil, 0o600)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	h := &hostSSH{target: sshTarget{host: "127.0.0.1", port: port, user: "root", knownHosts: kh, keyFile: "/nonexistent"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := h.dial(ctx, "tcp", "127.0.0.1:22"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !fault.Is(err, fault.Infra) {
			t.Errorf("err %v, want an infrastructure error", err)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("returned after %s, the context allowed 2s", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the SSH handshake with a silent host did not end with its context")
	}
}

// known_hosts names an IPv6 host as [addr]:port; the lookup must too.
func TestKnownHostsIPv6(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	signer, _ := ssh.NewSignerFromKey(priv)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize("[fd00::1]:2222")}, signer.PublicKey())
	_ = os.WriteFile(kh, []byte(line+"\n"), 0o600)
	h := &hostSSH{target: sshTarget{host: "fd00::1", port: "2222", knownHosts: kh, keyFile: "/nonexistent"}}
	cfg, err := h.config()
	if err != nil {
		t.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 2222}
	if err := cfg.HostKeyCallback(h.target.addr(), remote, signer.PublicKey()); err != nil {
		t.Errorf("the host key of [fd00::1]:2222 is in known_hosts, yet: %v", err)
	}
}

// Saves and restores get more time for more memory; one that overruns is
// waited for before it is reported, so that nothing is deleted while
// libvirtd still reads or writes the files; one that never comes back is
// an UnsettledError, and its files are left alone.
func TestSettledCalls(t *testing.T) {
	if a, b := vm.SaveLimit(1024), vm.SaveLimit(16<<10); a >= b || a < time.Minute {
		t.Errorf("limits %s for 1 GiB, %s for 16 GiB", a, b)
	}
	c := &Conn{uri: "qemu:///system"}
	defer func(g time.Duration) { settleGrace = g }(settleGrace)
	settleGrace = 300 * time.Millisecond
	tests := []struct {
		name      string
		takes     time.Duration
		unsettled bool
		returns   time.Duration // at least
	}{
		{"in time", 10 * time.Millisecond, false, 0},
		{"late, within the grace time", 200 * time.Millisecond, false, 200 * time.Millisecond},
		{"never back", time.Hour, true, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ended := make(chan struct{})
			start := time.Now()
			err := c.callSettled(context.Background(), "restore domain", 100*time.Millisecond, func() error {
				select {
				case <-time.After(tt.takes):
					close(ended)
				case <-time.After(5 * time.Second):
				}
				return nil
			})
			took := time.Since(start)
			var ue *vm.UnsettledError
			switch {
			case tt.takes < 100*time.Millisecond && err != nil:
				t.Errorf("in time: %v", err)
			case tt.takes >= 100*time.Millisecond && !tt.unsettled:
				if err == nil || errors.As(err, &ue) {
					t.Errorf("late: %v, want an overrun that came back", err)
				}
				select {
				case <-ended:
				default:
					t.Error("returned before the call came back")
				}
			case tt.unsettled && !errors.As(err, &ue):
				t.Errorf("never back: %v, want an UnsettledError", err)
			}
			if took < tt.returns {
				t.Errorf("returned after %s, want at least %s", took, tt.returns)
			}
		})
	}
}

// A restore runs the network as the restoring run asks for it: its SSH
// port, and restrict=on unless it is online, whatever the saved run had.
func TestRestoreXMLTakesTheNetworkOfThisRun(t *testing.T) {
	base := vm.DomainSpec{Name: "envctl-a", Type: vm.DomainQEMU, CPUs: 2, MemoryMiB: 2048, SSHPort: 40001, Network: vm.NetworkUser,
		Disks: []vm.Disk{{Path: "/p/a.qcow2", Format: "qcow2"}}, ConsoleLog: "/s/a/console.log", Metadata: vm.Metadata{ID: "a"}}
	tests := []struct {
		name          string
		saved, now    bool // online
		want, notWant string
	}{
		{"offline saved, online now", false, true, "user,id=n0,hostfwd=tcp:127.0.0.1:40777-:22", "restrict=on"},
		{"online saved, offline now", true, false, "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40777-:22", "40001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saved := base
			saved.Online = tt.saved
			x, err := DomainXML(saved)
			if err != nil {
				t.Fatal(err)
			}
			next := base
			next.Online, next.SSHPort = tt.now, 40777
			got, _, err := RestoreXML(x, next)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got, tt.want) || strings.Contains(got, tt.notWant) {
				t.Errorf("restored netdev: want %q and no %q in\n%s", tt.want, tt.notWant, got)
			}
		})
	}
}
