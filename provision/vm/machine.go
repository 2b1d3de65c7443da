package vm

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cidata"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/guest"
)

// Options say how machines are made and found.
type Options struct {
	URI         string        // libvirt URI
	Accel       Accel         // kvm, tcg or auto
	Network     Network       // user or nat
	BootTimeout time.Duration // until SSH answers
	Seed        SeedMode      // how the seed is applied
	Online      bool          // let a user-mode guest reach the outside
	KernelArgs  string        // extra kernel command line (direct boot only)
	Store       env.Store     // the state directory
	Connect     Connector     // opens the hypervisor connection
	Log         *slog.Logger
	// Step reports progress lines for humans; may be nil.
	Step func(format string, args ...any)
}

func (o Options) step(format string, args ...any) {
	if o.Step != nil {
		o.Step(format, args...)
	}
}

func (o Options) log() *slog.Logger { return cmp.Or(o.Log, slog.Default()) }

// Validate checks options that do not need a connection.
func (o Options) Validate() error {
	var a Accel
	if err := a.Set(string(cmp.Or(o.Accel, AccelAuto))); err != nil {
		return fault.Inputf("--accel: %v", err)
	}
	var n Network
	if err := n.Set(string(cmp.Or(o.Network, NetworkUser))); err != nil {
		return fault.Inputf("--network: %v", err)
	}
	var s SeedMode
	if err := s.Set(string(cmp.Or(o.Seed, SeedAuto))); err != nil {
		return fault.Inputf("--cloud-init: %v", err)
	}
	if o.BootTimeout < 0 {
		return fault.Inputf("--boot-timeout %s: use a positive duration such as 5m", o.BootTimeout)
	}
	if o.Connect == nil {
		return fault.Inputf("no hypervisor connector configured")
	}
	return nil
}

// BootSpec is what to boot.
type BootSpec struct {
	Profile string
	Cell    string
	CPUs    int
	Memory  uint64 // bytes
	Disk    uint64 // bytes
	Image   images.Files
	// ArtifactDisk is a read-only raw file attached as a disk with serial
	// ArtifactSerial (the artifact disk); "" attaches none.
	ArtifactDisk   string
	ArtifactSerial string
	// From is where the guest comes from: the base image, or a saved
	// guest (the zero value boots the image).
	From Source
	// Keep makes a persistent domain that outlives this process; any other
	// is destroyed by libvirt as soon as this process's connection ends,
	// even when the process is killed.
	Keep bool
}

// SourceKind is where a guest comes from.
type SourceKind string

// The kinds of source.
const (
	// FromImage boots the base image with the artifact disk attached.
	FromImage SourceKind = "image"
	// FromImageToShare boots the base image without the artifact disk,
	// under a slot's domain name, so that it can be saved as a post-boot
	// state first (SaveBoot); AttachArtifactDisk then hot-plugs the disk.
	FromImageToShare SourceKind = "image-to-share"
	// FromWarm restores a warm state: disk, memory and the keys of a guest
	// with the stack installed and CRI-O running.
	FromWarm SourceKind = "warm"
	// FromPostBoot restores a post-boot state: the guest as it was when
	// SSH first answered, before any artifact disk; AttachArtifactDisk
	// then hot-plugs it.
	FromPostBoot SourceKind = "post-boot"
)

// Source is where a guest comes from, as one value: the kind, the saved
// guest a restore starts from, and the domain name of a boot to share.
type Source struct {
	Kind   SourceKind
	Saved  WarmState // FromWarm, FromPostBoot
	Domain string    // FromImageToShare
}

// ImageSource boots the base image.
func ImageSource() Source { return Source{Kind: FromImage} }

// ShareSource boots the base image under domain, to be saved as a
// post-boot state.
func ShareSource(domain string) Source { return Source{Kind: FromImageToShare, Domain: domain} }

// WarmSource restores a warm state.
func WarmSource(ws WarmState) Source { return Source{Kind: FromWarm, Saved: ws} }

// PostBootSource restores a post-boot state.
func PostBootSource(ws WarmState) Source { return Source{Kind: FromPostBoot, Saved: ws} }

// restores reports whether the guest comes from a saved state.
func (s Source) restores() bool { return s.Kind == FromWarm || s.Kind == FromPostBoot }

// saved is the saved guest a restore starts from (nil for a boot).
func (s Source) saved() *WarmState {
	if !s.restores() {
		return nil
	}
	return &s.Saved
}

// lateDisk reports whether the artifact disk is hot-plugged after start.
func (s Source) lateDisk() bool { return s.Kind == FromImageToShare || s.Kind == FromPostBoot }

// Machine is a booted (or booting) environment, held by this process.
type Machine struct {
	Env *env.Env
	// releasePort gives the SSH port back to this process's pool.
	releasePort func()
	// poolPath is the pool's directory on the hypervisor host.
	poolPath string
	// SSH is the connection to the guest, once it answers.
	SSH *guest.Client
	// Type is the domain type the accelerator decision gave.
	Type    DomainType
	Timings map[string]time.Duration
	// keepable is set when the domain was made to outlive this process.
	keepable bool
	opts     Options
	drv      Driver
	unlock   func()
	signer   ssh.Signer
	hostKey  ssh.PublicKey
	// ds is the domain as started; user and host the guest's keys; from
	// where the guest came from.
	ds         DomainSpec
	diskSize   uint64
	user, host cidata.KeyPair
	from       Source
	// late is the artifact disk still to hot-plug; chain the saved disks
	// the guest's disk is backed by (beyond the base image).
	late  *Disk
	chain []string
}

// NameTakenError is a domain that could not start because another
// environment's domain has its name: a saved guest restores only under its
// own name, so a save is not damaged when this happens.
type NameTakenError struct {
	Domain string
	Err    error
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("domain name %s is taken by another environment's domain: %v", e.Domain, e.Err)
}

func (e *NameTakenError) Unwrap() error { return e.Err }

// FaultClass implements fault.Classed.
func (e *NameTakenError) FaultClass() fault.Class { return fault.Infra }

// BootError is a VM that did not come up; it carries the console's tail.
type BootError struct {
	Env     string
	Reason  string
	Tail    string
	LogPath string
	// Hung is set when the domain kept running but SSH never answered.
	Hung bool
}

func (e *BootError) Error() string {
	return fmt.Sprintf("VM %s: %s; last lines of the serial console:\n%s\n(full log: %s)", e.Env, e.Reason, e.Tail, e.LogPath)
}

// FaultClass implements fault.Classed.
func (e *BootError) FaultClass() fault.Class { return fault.Infra }

// Boot creates and starts a VM (or restores a saved guest, as spec.From
// says) and waits until SSH answers with the pinned host key. On any
// error everything it created is removed again.
func Boot(ctx context.Context, opts Options, spec BootSpec) (m *Machine, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if spec.From.Kind == "" {
		spec.From.Kind = FromImage
	}
	e, unlock, err := opts.Store.New(spec.Profile)
	if err != nil {
		return nil, err
	}
	e.Cell = spec.Cell
	m = &Machine{Env: e, opts: opts, Timings: map[string]time.Duration{}, unlock: unlock, keepable: spec.Keep, from: spec.From, diskSize: spec.Disk}
	defer func() {
		// A panic while booting is torn down like any failure.
		if p := recover(); p != nil {
			err = fault.Infraf("internal error while booting %s: %v (please report this)", e.ID, p)
			opts.log().Error("panic while booting", "env", e.ID, "panic", p, "stack", string(debug.Stack()))
		}
		if err != nil {
			tctx, cancel := TeardownContext(ctx, 2*time.Minute)
			defer cancel()
			if terr := m.Teardown(tctx); terr != nil {
				opts.log().Warn("teardown after failed boot", "env", e.ID, "err", terr)
			}
		}
	}()
	start := time.Now()
	if err := m.connect(ctx); err != nil {
		return m, err
	}
	if err := m.identity(spec.From); err != nil {
		return m, err
	}
	ds, err := m.prepare(ctx, spec)
	if err != nil {
		return m, err
	}
	m.Timings["prepare"] = time.Since(start)
	return m, m.run(ctx, ds, spec)
}

// connect opens the hypervisor and decides the accelerator.
func (m *Machine) connect(ctx context.Context) error {
	var err error
	if m.drv, err = m.opts.Connect(ctx, m.opts.URI); err != nil {
		return err
	}
	var warning string
	if m.Type, warning, err = m.drv.DomainType(ctx, cmp.Or(m.opts.Accel, AccelAuto)); err != nil {
		return err
	}
	if warning != "" {
		m.opts.step("warning: %s", warning)
	}
	return nil
}

// identity gives the guest its keys (fresh, or those a saved guest
// trusts) and its domain name (a save restores only under its own), and
// records them.
func (m *Machine) identity(from Source) error {
	e := m.Env
	user, host, err := keys(e.ID, from.saved())
	if err != nil {
		return fault.AsInfra(err)
	}
	m.user, m.host = user, host
	switch {
	case from.restores():
		e.Domain = from.Saved.Domain
	case from.Domain != "":
		e.Domain = from.Domain
	}
	if err := os.WriteFile(e.KeyPath(), user.PrivatePEM, 0o600); err != nil {
		return fault.Infraf("write %s: %w", e.KeyPath(), err)
	}
	if m.signer, err = ssh.ParsePrivateKey(user.PrivatePEM); err != nil {
		return fault.AsInfra(err)
	}
	m.hostKey = host.Public
	e.HostKey, e.Accel, e.URI, e.Pool = host.Authorized, string(m.Type), m.drv.URI(), PoolName(m.opts.Store, m.drv.Local())
	return e.Save()
}

// prepare makes the guest's volumes (the overlay on the base image or the
// saved disk, the seed, the artifact disk on a remote host) and returns
// the domain to start.
func (m *Machine) prepare(ctx context.Context, spec BootSpec) (DomainSpec, error) {
	e := m.Env
	var err error
	if m.poolPath, err = m.drv.EnsurePool(ctx, e.Pool, m.poolDir()); err != nil {
		return DomainSpec{}, err
	}
	img, err := m.baseImage(ctx, spec.Image)
	if err != nil {
		return DomainSpec{}, err
	}
	disks, err := m.artifactDisk(ctx, spec)
	if err != nil {
		return DomainSpec{}, err
	}
	diskPath, backing, err := m.overlay(ctx, img, spec)
	if err != nil {
		return DomainSpec{}, err
	}
	seed, err := cidata.ISO(cidata.Config{InstanceID: e.ID, Hostname: "envctl-" + shortID(e.ID), UserKey: m.user.Authorized, HostKey: m.host})
	if err != nil {
		return DomainSpec{}, fault.AsInfra(err)
	}
	seedVol, err := e.AddVolume(env.VolumeSeed)
	if err != nil {
		return DomainSpec{}, err
	}
	seedPath, err := m.drv.CreateVolume(ctx, e.Pool, seedVol, seed)
	if err != nil {
		return DomainSpec{}, err
	}
	console, err := m.consolePath()
	if err != nil {
		return DomainSpec{}, err
	}
	return DomainSpec{
		Name: e.Domain, Type: m.Type, CPUs: spec.CPUs, MemoryMiB: spec.Memory >> 20,
		Disks:  append([]Disk{{Path: diskPath, Format: "qcow2", Backing: backing}, {Path: seedPath, Format: "raw", ReadOnly: true}}, disks...),
		Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: m.cmdline(spec.Image),
		ConsoleLog: console, Network: cmp.Or(m.opts.Network, NetworkUser), Online: m.opts.Online, AutoDestroy: !spec.Keep,
		Metadata: OwnerOf(m.opts.Store).Stamp(Metadata{ID: e.ID, Profile: spec.Profile, PID: os.Getpid(), Created: time.Now().UTC().Format(time.RFC3339)}, m.drv.URI()),
	}, nil
}

// artifactDisk is the artifact disk to attach at start (none when it is
// hot-plugged later: m.late).
func (m *Machine) artifactDisk(ctx context.Context, spec BootSpec) ([]Disk, error) {
	if spec.ArtifactDisk == "" {
		return nil, nil
	}
	p, err := m.hostFile(ctx, "artifacts", spec.ArtifactDisk, "raw")
	if err != nil {
		return nil, err
	}
	d := Disk{Path: p, Format: "raw", ReadOnly: true, Serial: spec.ArtifactSerial}
	if spec.From.lateDisk() {
		m.late = &d
		return nil, nil
	}
	return []Disk{d}, nil
}

// overlay is the guest's disk: a qcow2 on the base image, or on the disk
// of the saved guest it restores.
// It returns the overlay and its backing chain.
func (m *Machine) overlay(ctx context.Context, img images.Files, spec BootSpec) (string, []string, error) {
	diskVol, err := m.Env.AddVolume(env.VolumeDisk)
	if err != nil {
		return "", nil, err
	}
	base, baseFormat := img.Disk, img.Format
	backing := []string{img.Disk}
	if saved := spec.From.saved(); saved != nil {
		base, baseFormat = saved.Disk, "qcow2"
		m.chain = append(slices.Clone(saved.Needs), saved.Disk)
		backing = m.chain
	}
	p, err := m.drv.CreateOverlay(ctx, m.Env.Pool, diskVol, base, baseFormat, spec.Disk)
	return p, backing, err
}

// cmdline is the kernel command line of a directly booted image.
func (m *Machine) cmdline(img images.Files) string {
	seedMode := cmp.Or(m.opts.Seed, SeedAuto)
	cmdline := "root=/dev/vda rw console=ttyS0 net.ifnames=0"
	if seedMode == SeedFast || (seedMode == SeedAuto && img.FastSeed) {
		cmdline += " cloud-init=disabled"
	}
	if m.opts.KernelArgs != "" {
		cmdline += " " + m.opts.KernelArgs
	}
	return cmdline
}

// consolePath is where the serial console goes: the environment's
// directory, or a volume on a remote host.
func (m *Machine) consolePath() (string, error) {
	if m.drv.Local() {
		return m.Env.ConsoleLog(), nil
	}
	name, err := m.Env.AddVolume(env.VolumeConsole)
	if err != nil {
		return "", err
	}
	return m.poolPath + "/" + name, nil
}

// run starts the domain and waits until the guest answers SSH.
func (m *Machine) run(ctx context.Context, ds DomainSpec, spec BootSpec) error {
	e := m.Env
	bootStart := time.Now()
	m.opts.step("booting %s (%s, %d vCPU, %d MiB) on %s from %s", e.Domain, m.Type.Label(), spec.CPUs, spec.Memory>>20, m.drv.URI(), shortPath(spec.Image.Disk))
	e.State = env.StateBooting
	if err := e.Save(); err != nil {
		return err
	}
	m.ds = ds
	if err := m.start(ctx, &m.ds); err != nil {
		return err
	}
	m.Timings["start"] = time.Since(bootStart)
	if m.ds.Network == NetworkNAT {
		if err := m.waitLease(ctx); err != nil {
			return err
		}
	}
	if err := m.waitSSH(ctx); err != nil {
		return err
	}
	m.Timings["boot"] = time.Since(bootStart)
	m.Timings["answer"] = m.Timings["boot"] - m.Timings["start"]
	e.State = env.StateReady
	if err := e.Save(); err != nil {
		return err
	}
	m.opts.step("%s answers on ssh %s:%d (host key %s) after %s", e.Domain, e.SSHHost, e.SSHPort, ssh.FingerprintSHA256(m.hostKey), m.Timings["boot"].Round(100*time.Millisecond))
	return nil
}

func (m *Machine) bootTimeout() time.Duration { return cmp.Or(m.opts.BootTimeout, 5*time.Minute) }

// RemotePoolRoot is where a remote host keeps envctl's pools.
const RemotePoolRoot = "/var/lib/libvirt/images"

// poolDir is the pool's directory on the hypervisor host.
func (m *Machine) poolDir() string {
	if m.drv.Local() {
		return m.opts.Store.PoolDir()
	}
	return RemotePoolRoot + "/" + m.Env.Pool
}

// baseImage returns the image's files as the hypervisor sees them: the
// cached files in place on this machine; on a remote host, volumes
// uploaded once under content-addressed names.
func (m *Machine) baseImage(ctx context.Context, img images.Files) (images.Files, error) {
	if m.drv.Local() {
		return img, nil
	}
	out := img
	for _, f := range []struct {
		src    string
		dst    *string
		kind   string
		format string
	}{{img.Disk, &out.Disk, "disk", img.Format}, {img.Kernel, &out.Kernel, "kernel", "raw"}, {img.Initrd, &out.Initrd, "initrd", "raw"}} {
		if f.src == "" {
			continue
		}
		p, err := m.hostFile(ctx, f.kind, f.src, f.format)
		if err != nil {
			return out, err
		}
		*f.dst = p
	}
	return out, nil
}

// hostFile returns a cached file as the hypervisor sees it: in place on
// this machine; on a remote host, a volume uploaded once under a
// content-addressed name (cached blobs are named by their digest).
func (m *Machine) hostFile(ctx context.Context, kind, src, format string) (string, error) {
	if m.drv.Local() {
		return src, nil
	}
	st, err := os.Stat(src)
	if err != nil {
		return "", fault.Infraf("%s %s: %w", kind, src, err)
	}
	name := "envctl-base-" + kind + "-" + filepath.Base(src)
	if len(name) > 60 {
		name = name[:60]
	}
	m.opts.step("uploading %s (%d MiB) to %s once, as volume %s", kind, st.Size()>>20, m.drv.URI(), name)
	return m.drv.EnsureVolume(ctx, m.Env.Pool, name, format, st.Size(), func() (io.ReadCloser, error) { return os.Open(src) })
}

// portPool hands out SSH ports so that cells booting at once in one
// process never pick the same port.
type portPool struct {
	mu    sync.Mutex
	taken map[int]bool
}

var ports = &portPool{taken: map[int]bool{}}

// reserve picks a port no one listens on (on this machine; a remote host
// gets a random high port, and Start retries when it is taken).
func (p *portPool) reserve(local bool) (int, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 100 {
		port := 20000 + rand.IntN(40000)
		if local {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return 0, nil, err
			}
			port = l.Addr().(*net.TCPAddr).Port
			_ = l.Close()
		}
		if !p.taken[port] {
			p.taken[port] = true
			return port, func() { p.mu.Lock(); delete(p.taken, port); p.mu.Unlock() }, nil
		}
	}
	return 0, nil, fmt.Errorf("no free port found")
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
