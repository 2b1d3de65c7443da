package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cidata"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/libvirt"
)

// PoolName is envctl's libvirt storage pool.
const PoolName = "envctl"

// Options configure how machines are made.
type Options struct {
	URI         string        // libvirt URI
	Accel       string        // kvm, tcg or auto
	Network     string        // user or nat
	BootTimeout time.Duration // until SSH answers
	CloudInit   string        // auto, full or fast
	Online      bool          // let the guest reach the outside network
	KernelArgs  string        // extra kernel command line (direct boot only)
	Log         *slog.Logger
	// Step reports progress lines for humans (stderr); may be nil.
	Step func(format string, args ...any)
}

func (o Options) step(format string, args ...any) {
	if o.Step != nil {
		o.Step(format, args...)
	}
}

// BootSpec is what to boot.
type BootSpec struct {
	Profile string
	Cell    string
	CPUs    int
	Memory  uint64 // bytes
	Disk    uint64 // bytes
	Image   images.Files
}

// Machine is a booted (or booting) environment.
type Machine struct {
	Env     *env.Env
	SSH     *guest.Client
	Timings map[string]time.Duration
	opts    Options
	conn    *libvirt.Conn
	unlock  func()
	signer  ssh.Signer
	hostKey ssh.PublicKey
}

// BootError is a VM that did not come up; it carries the console's tail.
type BootError struct {
	Env     string
	Reason  string
	Tail    string
	LogPath string
}

func (e *BootError) Error() string {
	return fmt.Sprintf("VM %s: %s; last lines of the serial console:\n%s\n(full log: %s)", e.Env, e.Reason, e.Tail, e.LogPath)
}

// Boot creates and starts a VM and waits until SSH answers with the pinned
// host key. On any error everything it created is removed again.
func Boot(ctx context.Context, opts Options, spec BootSpec) (m *Machine, err error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	e, err := env.New(spec.Profile)
	if err != nil {
		return nil, err
	}
	e.Cell = spec.Cell
	m = &Machine{Env: e, opts: opts, Timings: map[string]time.Duration{}}
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx)); terr != nil {
				opts.Log.Warn("teardown after failed boot", "env", e.ID, "err", terr)
			}
		}
	}()
	if m.unlock, err = e.Lock(ctx); err != nil {
		return m, err
	}
	start := time.Now()
	if m.conn, err = libvirt.Connect(ctx, opts.URI); err != nil {
		return m, err
	}
	domType, warning, err := libvirt.Accel(opts.Accel)
	if err != nil {
		return m, fault.AsInput(err)
	}
	if warning != "" {
		fmt.Fprintf(os.Stderr, "envctl: warning: %s\n", warning)
	}
	user, err := cidata.NewKeyPair("envctl@" + e.ID)
	if err != nil {
		return m, fault.AsInfra(err)
	}
	host, err := cidata.NewKeyPair("envctl-host@" + e.ID)
	if err != nil {
		return m, fault.AsInfra(err)
	}
	if err := os.WriteFile(e.KeyPath(), user.PrivatePEM, 0o600); err != nil {
		return m, fault.Infraf("write %s: %w", e.KeyPath(), err)
	}
	if m.signer, err = ssh.ParsePrivateKey(user.PrivatePEM); err != nil {
		return m, fault.AsInfra(err)
	}
	m.hostKey = host.Public
	e.HostKey, e.Accel, e.URI, e.Pool = host.Authorized, domType, m.conn.URI, PoolName
	network := opts.Network
	if network == "" {
		network = "user"
	}
	if network == "user" {
		if e.SSHPort, err = freePort(); err != nil {
			return m, fault.Infraf("pick an SSH port on 127.0.0.1: %w", err)
		}
	}
	if err := e.Save(); err != nil {
		return m, err
	}

	pool, err := m.conn.EnsurePool(PoolName, env.PoolDir())
	if err != nil {
		return m, err
	}
	diskVol := e.ID + "-disk.qcow2"
	e.Volumes = append(e.Volumes, diskVol)
	_ = e.Save()
	diskPath, err := m.conn.CreateOverlay(pool, diskVol, spec.Image.Disk, spec.Image.Format, spec.Disk)
	if err != nil {
		return m, err
	}
	seed, err := cidata.ISO(cidata.Config{InstanceID: e.ID, Hostname: "envctl-" + shortID(e.ID), UserKey: user.Authorized, HostKey: host})
	if err != nil {
		return m, fault.AsInfra(err)
	}
	seedVol := e.ID + "-seed.iso"
	e.Volumes = append(e.Volumes, seedVol)
	_ = e.Save()
	seedPath, err := m.conn.UploadVolume(pool, seedVol, seed)
	if err != nil {
		return m, err
	}

	fast := opts.CloudInit == "fast" || (opts.CloudInit != "full" && spec.Image.FastSeed)
	cmdline := "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"
	if fast {
		cmdline += " cloud-init=disabled"
	}
	if opts.KernelArgs != "" {
		cmdline += " " + opts.KernelArgs
	}
	xml, err := libvirt.DomainXML(libvirt.DomainSpec{
		Name: e.Domain, Type: domType, CPUs: spec.CPUs, MemoryMiB: spec.Memory >> 20,
		Disk: diskPath, Seed: seedPath, Kernel: spec.Image.Kernel, Initrd: spec.Image.Initrd, Cmdline: cmdline,
		ConsoleLog: e.ConsoleLog(), Network: network, SSHPort: e.SSHPort, Online: opts.Online,
		Metadata: libvirt.Metadata{ID: e.ID, Profile: spec.Profile, PID: os.Getpid(), Created: libvirt.Now()},
	})
	if err != nil {
		return m, fault.AsInfra(err)
	}
	if err := os.WriteFile(e.Path("domain.xml"), []byte(xml), 0o600); err != nil {
		return m, fault.Infraf("write %s: %w", e.Path("domain.xml"), err)
	}
	m.Timings["prepare"] = time.Since(start)
	bootStart := time.Now()
	opts.step("booting %s (%s, %d vCPU, %d MiB) from %s", e.Domain, accelName(domType), spec.CPUs, spec.Memory>>20, shortPath(spec.Image.Disk))
	if err := m.conn.Start(xml); err != nil {
		return m, err
	}
	e.State = "booting"
	_ = e.Save()
	if network == "nat" {
		if err := m.waitLease(ctx); err != nil {
			return m, err
		}
	}
	if err := m.waitSSH(ctx); err != nil {
		return m, err
	}
	m.Timings["boot"] = time.Since(bootStart)
	e.State = "ready"
	_ = e.Save()
	opts.step("%s answers on ssh %s:%d (host key %s) after %s", e.Domain, e.SSHHost, e.SSHPort, ssh.FingerprintSHA256(m.hostKey), m.Timings["boot"].Round(100*time.Millisecond))
	return m, nil
}

func (m *Machine) waitSSH(ctx context.Context) error {
	timeout := m.opts.BootTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	wctx, cancel := context.WithTimeoutCause(ctx, timeout, errBootTimeout)
	defer cancel()
	// Fail fast when the domain dies instead of waiting out the timeout.
	dead := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if !m.conn.Running(m.Env.Domain) {
					close(dead)
					cancel()
					return
				}
			}
		}
	}()
	c, err := guest.Wait(wctx, m.sshConfig(), m.opts.Log)
	if err == nil {
		m.SSH = c
		return nil
	}
	var hk *guest.HostKeyMismatch
	if errors.As(err, &hk) {
		return fault.AsInfra(err)
	}
	if ctx.Err() != nil {
		return fault.Infraf("VM %s: boot interrupted: %w", m.Env.ID, ctx.Err())
	}
	reason := fmt.Sprintf("SSH did not answer on %s:%d within %s (--boot-timeout)", m.Env.SSHHost, m.Env.SSHPort, timeout)
	select {
	case <-dead:
		reason = "the domain stopped before SSH answered"
	default:
	}
	return &fault.Error{Kind: fault.Infra, Err: &BootError{Env: m.Env.ID, Reason: reason, Tail: Tail(m.Env.ConsoleLog(), 30), LogPath: m.keepConsole()}}
}

var errBootTimeout = errors.New("boot timeout")

// waitLease finds the guest's address on libvirt's default NAT network.
func (m *Machine) waitLease(ctx context.Context) error {
	timeout := m.opts.BootTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		ip, err := m.conn.LeaseIP("default", m.Env.Domain)
		if err != nil {
			return err
		}
		if ip != "" {
			m.Env.SSHHost, m.Env.SSHPort = ip, 22
			return m.Env.Save()
		}
		if time.Now().After(deadline) {
			return &fault.Error{Kind: fault.Infra, Err: &BootError{Env: m.Env.ID, Reason: "no DHCP lease on libvirt's default network within " + timeout.String(), Tail: Tail(m.Env.ConsoleLog(), 30), LogPath: m.keepConsole()}}
		}
		select {
		case <-ctx.Done():
			return fault.Infraf("VM %s: boot interrupted: %w", m.Env.ID, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// keepConsole copies the console log out of the environment directory,
// which teardown removes, and returns the copy's path.
func (m *Machine) keepConsole() string {
	b, err := os.ReadFile(m.Env.ConsoleLog())
	if err != nil {
		return m.Env.ConsoleLog()
	}
	dst := fmt.Sprintf("%s/envctl-%s-console.log", os.TempDir(), m.Env.ID)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return m.Env.ConsoleLog()
	}
	return dst
}

func (m *Machine) sshConfig() guest.Config {
	return guest.Config{Addr: net.JoinHostPort(m.Env.SSHHost, fmt.Sprint(m.Env.SSHPort)), User: m.Env.User, Signer: m.signer, HostKey: m.hostKey}
}

// Keep leaves the VM running and releases it; `envctl ssh` and `envctl down` take over.
func (m *Machine) Keep() error {
	m.Env.Kept, m.Env.State = true, "kept"
	err := m.Env.Save()
	m.release()
	return err
}

func (m *Machine) release() {
	if m.SSH != nil {
		m.SSH.Close()
		m.SSH = nil
	}
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
	if m.unlock != nil {
		m.unlock()
		m.unlock = nil
	}
}

// Teardown destroys and undefines the domain, deletes its volumes and
// removes the environment directory. It is safe to call more than once.
func (m *Machine) Teardown(ctx context.Context) error {
	start := time.Now()
	if m.SSH != nil {
		m.SSH.Close()
		m.SSH = nil
	}
	m.Env.State = "tearing-down"
	_ = m.Env.Save()
	var errs []error
	if m.conn == nil {
		c, err := libvirt.Connect(ctx, firstNonEmpty(m.Env.URI, m.opts.URI))
		if err != nil {
			m.release()
			return fmt.Errorf("teardown %s: %w; run `envctl gc` once libvirt answers", m.Env.ID, err)
		}
		m.conn = c
	}
	if err := removeEnv(ctx, m.conn, m.Env); err != nil {
		errs = append(errs, err)
	}
	m.release()
	if m.Timings != nil {
		m.Timings["teardown"] = time.Since(start)
	}
	return errors.Join(errs...)
}

// removeEnv deletes an environment's domain, volumes and directory.
func removeEnv(ctx context.Context, conn *libvirt.Conn, e *env.Env) error {
	var errs []error
	if err := conn.Remove(e.Domain); err != nil {
		errs = append(errs, err)
	}
	pool, err := conn.EnsurePool(PoolName, env.PoolDir())
	if err == nil {
		names, _ := conn.Volumes(pool)
		for _, n := range names {
			if strings.HasPrefix(n, e.ID+"-") {
				if err := conn.DeleteVolume(pool, n); err != nil {
					errs = append(errs, err)
				}
			}
		}
	} else {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := e.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Attach connects to a kept environment over SSH, holding its lock.
func Attach(ctx context.Context, opts Options, id string) (*Machine, error) {
	e, err := env.Load(id)
	if err != nil {
		return nil, err
	}
	m := &Machine{Env: e, opts: opts}
	if m.unlock, err = e.Lock(ctx); err != nil {
		return nil, err
	}
	key, err := os.ReadFile(e.KeyPath())
	if err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: key %s: %w", e.ID, e.KeyPath(), err)
	}
	if m.signer, err = ssh.ParsePrivateKey(key); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: key %s: %w", e.ID, e.KeyPath(), err)
	}
	if m.hostKey, _, _, _, err = ssh.ParseAuthorizedKey([]byte(e.HostKey)); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: pinned host key: %w", e.ID, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if m.SSH, err = guest.Wait(cctx, m.sshConfig(), opts.Log); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: %v; `envctl status` shows its state", e.ID, err)
	}
	return m, nil
}

// SaveConsole copies the serial console log to dst (before teardown removes it).
func (m *Machine) SaveConsole(dst string) error {
	b, err := os.ReadFile(m.Env.ConsoleLog())
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// Release lets go of an attached machine without tearing it down.
func (m *Machine) Release() { m.release() }

// Down tears an environment down by ID.
func Down(ctx context.Context, opts Options, id string) error {
	e, err := env.Load(id)
	if err != nil {
		return err
	}
	unlock, err := e.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	conn, err := libvirt.Connect(ctx, firstNonEmpty(e.URI, opts.URI))
	if err != nil {
		return err
	}
	defer conn.Close()
	return removeEnv(ctx, conn, e)
}

// Collected is one thing gc removed.
type Collected struct {
	Kind string `json:"kind"` // domain, volume, directory
	Name string `json:"name"`
	Why  string `json:"why"`
}

// GC removes every envctl-tagged domain, volume and directory whose owning
// envctl process is gone, except kept environments whose VM still runs.
func GC(ctx context.Context, opts Options) ([]Collected, error) {
	conn, err := libvirt.Connect(ctx, opts.URI)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	envs, err := env.List()
	if err != nil {
		return nil, err
	}
	byID := map[string]*env.Env{}
	for _, e := range envs {
		byID[e.ID] = e
	}
	live := func(id string, running bool) bool {
		e, ok := byID[id]
		if !ok {
			return false
		}
		if e.Kept && running {
			return true
		}
		return !e.Kept && e.OwnerAlive()
	}
	var out []Collected
	var errs []error
	doms, err := conn.EnvDomains()
	if err != nil {
		return nil, err
	}
	running := map[string]bool{}
	for _, d := range doms {
		running[d.Meta.ID] = d.Running
		if live(d.Meta.ID, d.Running) || env.ProcessAlive(d.Meta.PID) && !byIDKept(byID, d.Meta.ID) {
			continue
		}
		if err := conn.Remove(d.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Collected{"domain", d.Name, fmt.Sprintf("owner pid %d is gone", d.Meta.PID)})
	}
	pool, err := conn.EnsurePool(PoolName, env.PoolDir())
	if err != nil {
		return out, err
	}
	names, _ := conn.Volumes(pool)
	for _, n := range names {
		id := volumeEnvID(n)
		if live(id, running[id]) {
			continue
		}
		if e, ok := byID[id]; ok && !e.Kept && e.OwnerAlive() {
			continue
		}
		if err := conn.DeleteVolume(pool, n); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Collected{"volume", n, "its environment is gone"})
	}
	for _, e := range envs {
		if live(e.ID, running[e.ID]) {
			continue
		}
		if err := e.Remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		why := fmt.Sprintf("owner pid %d is gone", e.PID)
		if e.Kept {
			why = "kept VM no longer runs"
		}
		out = append(out, Collected{"directory", e.Dir, why})
	}
	return out, errors.Join(errs...)
}

func byIDKept(m map[string]*env.Env, id string) bool {
	e, ok := m[id]
	return ok && e.Kept
}

func volumeEnvID(vol string) string {
	for _, suffix := range []string{"-disk.qcow2", "-seed.iso", "-artifacts.img"} {
		if strings.HasSuffix(vol, suffix) {
			return strings.TrimSuffix(vol, suffix)
		}
	}
	return vol
}

// Status is an environment as `envctl status` shows it.
type Status struct {
	ID      string    `json:"id"`
	Profile string    `json:"profile"`
	State   string    `json:"state"`
	Running bool      `json:"running"`
	Created time.Time `json:"created"`
	Age     string    `json:"age"`
	SSH     string    `json:"ssh"`
	Accel   string    `json:"accel"`
}

// List reports every environment with its domain's state.
func List(ctx context.Context, opts Options) ([]Status, error) {
	envs, err := env.List()
	if err != nil {
		return nil, err
	}
	running := map[string]bool{}
	if conn, err := libvirt.Connect(ctx, opts.URI); err == nil {
		doms, _ := conn.EnvDomains()
		for _, d := range doms {
			running[d.Meta.ID] = d.Running
		}
		conn.Close()
	}
	var out []Status
	for _, e := range envs {
		s := Status{ID: e.ID, Profile: e.Profile, State: e.State, Running: running[e.ID], Created: e.Created, Age: e.Age().String(), Accel: e.Accel}
		if e.SSHPort > 0 {
			s.SSH = fmt.Sprintf("%s:%d", e.SSHHost, e.SSHPort)
		}
		if !s.Running && e.State != "creating" {
			s.State += " (VM not running)"
		}
		if !e.Kept && !e.OwnerAlive() && e.State != "kept" {
			s.State += ", orphaned: `envctl gc` removes it"
		}
		out = append(out, s)
	}
	return out, nil
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no console log at %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func shortID(id string) string {
	if i := strings.LastIndex(id, "-"); i >= 0 {
		return id[i+1:]
	}
	return id
}

func shortPath(p string) string {
	if len(p) > 60 {
		return "…" + p[len(p)-59:]
	}
	return p
}

func accelName(t string) string {
	if t == "kvm" {
		return "KVM"
	}
	return "TCG"
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
