package vm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/vm/vmtest"
)

func setup(t *testing.T) (*vmtest.Driver, vm.Options) {
	t.Helper()
	d := vmtest.New()
	opts := vm.Options{URI: "fake:///system", Store: env.Store{Dir: t.TempDir()}, Connect: d.Connect, BootTimeout: 20 * time.Second}
	return d, opts
}

var spec = vm.BootSpec{Profile: "p", Cell: "p", CPUs: 2, Memory: 2 << 30, Disk: 10 << 30, Image: images.Files{Disk: "/base.raw", Format: "raw", Kernel: "/vmlinuz", Initrd: "/initrd", FastSeed: true}}

// keepSpec boots a domain that may outlive its process.
var keepSpec = func() vm.BootSpec { s := spec; s.Keep = true; return s }()

// assertNothingLeft checks the fake hypervisor and the state directory are empty.
func assertNothingLeft(t *testing.T, d *vmtest.Driver, opts vm.Options) {
	t.Helper()
	if doms := d.DomainNames(); len(doms) != 0 {
		t.Errorf("domains left: %v", doms)
	}
	if vols := d.VolumeNames(); len(vols) != 0 {
		t.Errorf("volumes left: %v", vols)
	}
	if envs, _ := opts.Store.List(); len(envs) != 0 {
		t.Errorf("environments left: %v", envs[0].Dir)
	}
	if d.Opened != d.Closed {
		t.Errorf("%d connections opened, %d closed", d.Opened, d.Closed)
	}
}

func TestBootAnswersSSHAndTearsDown(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, func(g *guesttest.Server) { g.Reply(`^uname -a$`, guesttest.Reply{Stdout: "Linux envctl\n"}) })
	var steps []string
	opts.Step = func(f string, a ...any) { steps = append(steps, f) }
	m, err := vm.Boot(context.Background(), opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.SSH.Output(context.Background(), "uname -a")
	if err != nil || !strings.Contains(out, "Linux") {
		t.Errorf("ssh: %q %v", out, err)
	}
	if m.Env.State != env.StateReady || m.Type != vm.DomainQEMU || len(m.Env.Volumes) != 2 || m.Env.Pool != vm.PoolName(opts.Store, true) {
		t.Errorf("env %+v", m.Env)
	}
	dom := d.Domains[m.Env.Domain]
	if !vm.OwnerOf(opts.Store).Owns(dom.Spec.Metadata) || dom.Spec.Metadata.URI == "" || dom.Spec.Metadata.ID != m.Env.ID || !strings.Contains(dom.Spec.Cmdline, "cloud-init=disabled") || dom.Spec.SSHPort != m.Env.SSHPort {
		t.Errorf("domain spec %+v", dom.Spec)
	}
	if m.Timings["boot"] <= 0 {
		t.Error("no boot timing")
	}
	if err := m.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(context.Background()); err != nil {
		t.Errorf("second teardown: %v", err)
	}
	assertNothingLeft(t, d, opts)
}

// TestBootCleansUpAtEveryFailurePoint fails each step of a boot in turn
// and checks that nothing it made is left behind.
func TestBootCleansUpAtEveryFailurePoint(t *testing.T) {
	tests := []struct {
		method string
		class  fault.Class
	}{
		{"DomainType", fault.Infra},
		{"EnsurePool", fault.Infra},
		{"CreateOverlay", fault.Infra},
		{"CreateVolume", fault.Infra},
		{"Start", fault.Infra},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			d, opts := setup(t)
			d.BootGuests(t, nil)
			d.Fail[tt.method] = fault.Infraf("%s: %w", tt.method, vmtest.ErrInjected)
			_, err := vm.Boot(context.Background(), opts, spec)
			if !errors.Is(err, vmtest.ErrInjected) || fault.ClassOf(err) != tt.class {
				t.Fatalf("err = %v", err)
			}
			delete(d.Fail, tt.method)
			assertNothingLeft(t, d, opts)
		})
	}
	t.Run("Connect", func(t *testing.T) {
		d, opts := setup(t)
		d.Fail["Connect"] = fault.Infraf("no daemon")
		if _, err := vm.Boot(context.Background(), opts, spec); err == nil {
			t.Fatal("no error")
		}
		delete(d.Fail, "Connect")
		if envs, _ := opts.Store.List(); len(envs) != 0 {
			t.Errorf("environment left: %v", envs)
		}
	})
}

func TestBootTimeoutKeepsTheConsole(t *testing.T) {
	d, opts := setup(t)
	opts.BootTimeout = 1500 * time.Millisecond
	d.OnStart = func(spec vm.DomainSpec, _ []byte) error {
		return os.WriteFile(spec.ConsoleLog, []byte("[    0.0] Linux version\n[    1.0] stuck in initramfs\n"), 0o600)
	}
	_, err := vm.Boot(context.Background(), opts, spec)
	var be *vm.BootError
	if !errors.As(err, &be) || fault.ClassOf(err) != fault.Infra {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "SSH did not answer") || !strings.Contains(be.Tail, "stuck in initramfs") {
		t.Errorf("boot error %v", err)
	}
	if b, err := os.ReadFile(be.LogPath); err != nil || !strings.Contains(string(b), "stuck") {
		t.Errorf("kept console %s: %v", be.LogPath, err)
	}
	assertNothingLeft(t, d, opts)
}

func TestBootNoticesADeadDomain(t *testing.T) {
	d, opts := setup(t)
	d.OnStart = func(spec vm.DomainSpec, _ []byte) error {
		go func() {
			time.Sleep(100 * time.Millisecond)
			d.SetState(spec.Name, vm.DomainShutOff)
		}()
		return nil
	}
	start := time.Now()
	_, err := vm.Boot(context.Background(), opts, spec)
	if err == nil || !strings.Contains(err.Error(), "stopped before SSH answered") {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s to notice", time.Since(start))
	}
	assertNothingLeft(t, d, opts)
}

func TestBootInterrupted(t *testing.T) {
	d, opts := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	d.OnStart = func(vm.DomainSpec, []byte) error { go cancel(); return nil }
	_, err := vm.Boot(ctx, opts, spec)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, d, opts)
}

func TestNATWaitsForALease(t *testing.T) {
	d, opts := setup(t)
	opts.Network, opts.BootTimeout = vm.NetworkNAT, time.Second
	_, err := vm.Boot(context.Background(), opts, spec)
	if err == nil || !strings.Contains(err.Error(), "no DHCP lease") {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, d, opts)
}

func TestKeepAttachDown(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	m, err := vm.Boot(context.Background(), opts, keepSpec)
	if err != nil {
		t.Fatal(err)
	}
	id := m.Env.ID
	if err := m.Keep(); err != nil {
		t.Fatal(err)
	}
	list, err := vm.List(context.Background(), opts)
	if err != nil || len(list) != 1 || list[0].State != env.StateKept || list[0].Domain != vm.DomainRunning || list[0].Busy {
		t.Fatalf("list %+v %v", list, err)
	}
	a, err := vm.Attach(context.Background(), opts, id[:len(id)-2])
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.SSH.Output(context.Background(), "echo hi"); err != nil || out != "hi\n" {
		t.Errorf("attached ssh: %q %v", out, err)
	}
	// While attached, the environment is busy: down says so at once.
	start := time.Now()
	err = vm.Down(context.Background(), opts, id)
	var busy *env.BusyError
	if !errors.As(err, &busy) || time.Since(start) > time.Second {
		t.Errorf("down on a busy environment: %v after %s", err, time.Since(start))
	}
	if list, _ := vm.List(context.Background(), opts); !list[0].Busy {
		t.Error("status does not show the environment busy")
	}
	a.Release()
	if err := vm.Down(context.Background(), opts, id); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, opts)
	if err := vm.Down(context.Background(), opts, id); !fault.Is(err, fault.Input) {
		t.Errorf("down of a gone environment: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	_, opts := setup(t)
	tests := []struct {
		name   string
		mutate func(*vm.Options)
		want   string
	}{
		{"accel", func(o *vm.Options) { o.Accel = "hvf" }, "--accel"},
		{"network", func(o *vm.Options) { o.Network = "bridge" }, "--network"},
		{"seed", func(o *vm.Options) { o.Seed = "sometimes" }, "--cloud-init"},
		{"timeout", func(o *vm.Options) { o.BootTimeout = -time.Second }, "--boot-timeout"},
		{"connector", func(o *vm.Options) { o.Connect = nil }, "connector"},
	}
	for _, tt := range tests {
		o := opts
		tt.mutate(&o)
		if err := o.Validate(); !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if err := opts.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	var a vm.Accel
	if err := a.Set("kvm"); err != nil || a != vm.AccelKVM || a.Type() == "" || a.String() != "kvm" {
		t.Errorf("accel %v %v", a, err)
	}
	if err := a.Set("x"); err == nil || !strings.Contains(err.Error(), "auto, kvm, tcg") {
		t.Errorf("accel error %v", err)
	}
}

func TestPoolPerStateDirectory(t *testing.T) {
	a, b := env.Store{Dir: "/state/a"}, env.Store{Dir: "/state/b"}
	for _, local := range []bool{true, false} {
		if vm.PoolName(a, local) == vm.PoolName(b, local) || !strings.HasPrefix(vm.PoolName(a, local), "envctl-") || vm.PoolName(a, local) != vm.PoolName(env.Store{Dir: "/state/a/"}, local) {
			t.Errorf("pools %s %s", vm.PoolName(a, local), vm.PoolName(b, local))
		}
	}
	// A remote host's pools are shared by every machine that connects:
	// the same path on two machines must not meet there.
	if vm.PoolName(a, true) == vm.PoolName(a, false) {
		t.Error("a remote pool is named by the state directory alone")
	}
	o := vm.OwnerOf(env.Store{Dir: "rel"})
	if o.StateDir != filepath.Join(mustWd(t), "rel") || o.Host == "" || o.Host != vm.HostID() {
		t.Errorf("owner %+v", o)
	}
}

func mustWd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// TestBootOnARemoteHost: the base image goes up once as content-addressed
// volumes, the console sits in the pool, and SSH goes through the host.
func TestBootOnARemoteHost(t *testing.T) {
	d, opts := setup(t)
	d.Remote = true
	d.BootGuests(t, nil)
	dir := t.TempDir()
	img := spec
	img.Image.Disk, img.Image.Kernel, img.Image.Initrd = filepath.Join(dir, "aaaa"), filepath.Join(dir, "bbbb"), filepath.Join(dir, "cccc")
	for _, p := range []string{img.Image.Disk, img.Image.Kernel, img.Image.Initrd} {
		_ = os.WriteFile(p, []byte(filepath.Base(p)), 0o644)
	}
	for range 2 {
		m, err := vm.Boot(context.Background(), opts, img)
		if err != nil {
			t.Fatal(err)
		}
		dom := d.Domains[m.Env.Domain]
		if !strings.HasPrefix(dom.Spec.Kernel, "/fake/") || !strings.HasPrefix(dom.Spec.ConsoleLog, vm.RemotePoolRoot+"/") || !strings.HasPrefix(dom.Spec.Disks[0].Path, "/fake/") {
			t.Errorf("remote domain spec %+v", dom.Spec)
		}
		if err := m.Teardown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	uploads, dials := 0, 0
	for _, c := range d.Calls {
		if strings.HasPrefix(c, "EnsureVolume") {
			uploads++
		}
		if strings.HasPrefix(c, "Dial") {
			dials++
		}
	}
	if uploads != 6 || dials == 0 {
		t.Errorf("%d EnsureVolume calls (3 per boot), %d dials through the host", uploads, dials)
	}
	// The base volumes stay for the next run; everything else is gone.
	if vols := d.VolumeNames(); len(vols) != 3 {
		t.Errorf("volumes %v", vols)
	}
}

func TestRemoteBootTimeoutReadsTheConsoleVolume(t *testing.T) {
	d, opts := setup(t)
	d.Remote = true
	opts.BootTimeout = time.Second
	d.OnStart = func(spec vm.DomainSpec, _ []byte) error {
		name := filepath.Base(spec.ConsoleLog)
		d.AddVolume(vm.PoolName(opts.Store, false), name)
		d.Pools[vm.PoolName(opts.Store, false)][name].Data = []byte("kernel panic on the remote host\n")
		return nil
	}
	img := spec
	img.Image.Disk, img.Image.Kernel, img.Image.Initrd = filepath.Join(t.TempDir(), "disk"), "", ""
	_ = os.WriteFile(img.Image.Disk, []byte("disk"), 0o644)
	_, err := vm.Boot(context.Background(), opts, img)
	var be *vm.BootError
	if !errors.As(err, &be) || !strings.Contains(be.Tail, "kernel panic on the remote host") {
		t.Fatalf("err %v", err)
	}
	// The console copy is the environment's own, readable by its owner only.
	st, err := os.Stat(be.LogPath)
	if err != nil || st.Mode().Perm() != 0o600 || !strings.Contains(be.LogPath, be.Env) {
		t.Errorf("console copy %s: %v", be.LogPath, err)
	}
	if dir, err := os.Stat(filepath.Dir(be.LogPath)); err != nil || dir.Mode().Perm() != 0o700 {
		t.Errorf("console copy's directory: %v", err)
	}
}

// TestBootRetriesATakenPort: QEMU could not bind the picked port; boot
// picks another instead of failing.
func TestBootRetriesATakenPort(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	failed := false
	start := d.OnStart
	d.OnStart = func(spec vm.DomainSpec, seed []byte) error {
		if !failed {
			failed = true
			delete(d.Domains, spec.Name)
			return fault.Infraf("start domain %s: internal error: qemu unexpectedly closed the monitor: Could not set up host forwarding rule 'tcp:127.0.0.1:%d-:22'", spec.Name, spec.SSHPort)
		}
		return start(spec, seed)
	}
	m, err := vm.Boot(context.Background(), opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Error("the first start did not fail")
	}
	if err := m.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, opts)
}

func TestCapacitySlots(t *testing.T) {
	tests := []struct {
		cap  vm.Capacity
		cpus int
		mem  uint64
		want int
	}{
		{vm.Capacity{CPUs: 2, Available: 20 << 30}, 2, 2 << 30, 1},
		{vm.Capacity{CPUs: 16, Available: 20 << 30}, 2, 2 << 30, 8},
		{vm.Capacity{CPUs: 16, Available: 5 << 30}, 2, 2 << 30, 2},
		{vm.Capacity{CPUs: 1, Available: 1 << 30}, 2, 2 << 30, 1},
		// Under KVM two vCPUs share a host CPU; memory still bounds.
		{vm.Capacity{CPUs: 2, Available: 20 << 30, Type: vm.DomainKVM}, 2, 2 << 30, 2},
		{vm.Capacity{CPUs: 16, Available: 20 << 30, Type: vm.DomainKVM}, 2, 2 << 30, 8},
		{vm.Capacity{CPUs: 2, Available: 20 << 30, Type: vm.DomainQEMU}, 2, 2 << 30, 1},
	}
	for _, tt := range tests {
		if got := tt.cap.Slots(tt.cpus, tt.mem); got != tt.want {
			t.Errorf("%+v slots for %d vCPU %d MiB = %d, want %d", tt.cap, tt.cpus, tt.mem>>20, got, tt.want)
		}
	}
}

// A domain booted to be thrown away is bound to the connection: when the
// process lets go of it without a teardown (it was killed), the domain
// is gone at once; gc removes the files. It cannot be kept afterwards.
func TestAutoDestroy(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	m, err := vm.Boot(context.Background(), opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Domains[m.Env.Domain].Spec.AutoDestroy {
		t.Error("a throwaway domain without AutoDestroy")
	}
	if err := m.Keep(); err == nil {
		t.Error("kept a throwaway domain")
	}
	m.Release()
	if len(d.DomainNames()) != 0 {
		t.Errorf("domains %v outlived their connection", d.DomainNames())
	}
	removed, _, err := vm.GC(context.Background(), opts)
	if err != nil || len(removed) != 3 {
		t.Errorf("gc removed %v %v, want 2 volumes and the directory", removed, err)
	}
	assertNothingLeft(t, d, opts)
}
