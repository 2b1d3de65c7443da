package libvirt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/vm"
)

// callTimeout bounds every libvirt call that has no tighter deadline.
const callTimeout = 60 * time.Second

// Conn is a libvirt connection; it implements vm.Driver.
type Conn struct {
	l   rpc
	uri string
	// host reaches the remote hypervisor's own addresses; nil when local.
	host *hostSSH
	// QEMU's user under a local system daemon, read once (reach.go).
	reachOnce sync.Once
	qemu      qemuIdentity
	reaches   bool
	reachErr  error
}

var _ vm.Driver = (*Conn)(nil)

// Connect dials a libvirt URI (qemu:///system, qemu:///session,
// qemu+ssh://host/system and the other go-libvirt transports) through
// go-libvirt's dialers. It is a vm.Connector.
// An empty uri is ChooseURI's choice.
func Connect(ctx context.Context, uri string) (vm.Driver, error) {
	if uri == "" {
		uri, _ = ChooseURI(ctx)
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fault.Inputf("--connect %q is not a libvirt URI; use qemu:///system, qemu:///session or qemu+ssh://user@host/system", uri)
	}
	type result struct {
		l   *golibvirt.Libvirt
		err error
	}
	ch := make(chan result, 1)
	var host *hostSSH
	if strings.HasSuffix(u.Scheme, "+ssh") {
		t, err := parseSSHTarget(u)
		if err != nil {
			return nil, err
		}
		host = &hostSSH{target: t}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+sessionStartLimit)
	defer cancel()
	go func() {
		var l *golibvirt.Libvirt
		var err error
		if host != nil {
			l, err = dialSSH(u)
		} else {
			l, err = dial(ctx, u)
		}
		ch <- result{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, connectError(uri, local(u), r.err)
		}
		return &Conn{l: r.l, uri: uri, host: host}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.l != nil {
				_ = r.l.Disconnect()
			}
		}()
		return nil, fault.Infraf("libvirt at %s did not answer: %w", uri, ctx.Err())
	}
}

// local reports whether a URI names a daemon on this machine through its
// default socket.
func local(u *url.URL) bool {
	return !strings.Contains(u.Scheme, "+") && u.Host == "" && u.Query().Get("socket") == ""
}

// dial connects with the dialer the URI asks for. A local URI tries the
// monolithic daemon's socket, then the modular one's; the session daemon
// is started when it does not run.
func dial(ctx context.Context, u *url.URL) (*golibvirt.Libvirt, error) {
	switch {
	case !local(u):
		return golibvirt.ConnectToURI(u)
	case u.Path == "/session":
		return dialSession(ctx, u)
	default:
		return dialLocal(systemSocketDir, u)
	}
}

// connectError says why a connection failed and what to do: start the
// daemon only when none listens; join the group or use the session when a
// running daemon refused this user.
func connectError(uri string, isLocal bool, err error) error {
	var fe *fault.Error
	switch {
	case errors.As(err, &fe):
		return err
	case !isLocal:
		return fault.Infraf("cannot reach libvirt at %s (%v); check the host's daemon and the URI, or pass another --connect", uri, firstLine(err))
	case daemonAbsent(err):
		return fault.Infraf("cannot reach libvirt at %s: no daemon listens (%v); start it (`sudo make host` runs scripts/host-setup.sh) or use --connect %s", uri, firstLine(err), SessionURI)
	default:
		return fault.Infraf("%s (%v)", accessAdvice(uri), firstLine(err))
	}
}

var _ socket.Dialer = (*dialers.Local)(nil)

// URI is the connection's libvirt URI.
func (c *Conn) URI() string { return c.uri }

// Close ends the connection.
func (c *Conn) Close() error {
	if c.host != nil {
		c.host.close()
	}
	return c.l.Disconnect()
}

// Local reports whether the daemon runs on this machine.
func (c *Conn) Local() bool { return c.host == nil && !strings.Contains(c.uri, "+") }

// Dial reaches an address on the hypervisor host: directly when local,
// else through an SSH connection to the host.
func (c *Conn) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.host != nil {
		return c.host.dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Identity reads the hypervisor's version and the host CPU's model from
// the daemon.
func (c *Conn) Identity(ctx context.Context) (vm.HostIdentity, error) {
	var id vm.HostIdentity
	err := c.call(ctx, "hypervisor identity", 0, func() error {
		v, err := c.l.ConnectGetVersion()
		if err != nil {
			return fault.Infraf("hypervisor version: %w", err)
		}
		id.QEMU = fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
		host, err := c.l.ConnectGetCapabilities()
		if err != nil {
			return fault.Infraf("host capabilities: %w", err)
		}
		var caps libvirtxml.Caps
		if err := caps.Unmarshal(host); err != nil || caps.Host.CPU == nil {
			return fault.Infraf("host capabilities name no CPU")
		}
		id.CPU = strings.TrimSpace(caps.Host.CPU.Vendor + " " + caps.Host.CPU.Model)
		return nil
	})
	return id, err
}

// Capacity reports the host's CPUs and the memory it can still give:
// free plus reclaimable page cache.
func (c *Conn) Capacity(ctx context.Context) (vm.Capacity, error) {
	var out vm.Capacity
	err := c.call(ctx, "node info", 0, func() error {
		_, memKiB, cpus, _, _, _, _, _, err := c.l.NodeGetInfo()
		if err != nil {
			return fault.Infraf("node info: %w", err)
		}
		out.CPUs, out.Memory = int(cpus), memKiB<<10
		out.Available = out.Memory / 2 // when the daemon gives no memory stats
		var stats []golibvirt.NodeGetMemoryStats
		if _, n, serr := c.l.NodeGetMemoryStats(0, -1, 0); serr == nil && n > 0 {
			stats, _, _ = c.l.NodeGetMemoryStats(n, -1, 0)
		}
		var avail uint64
		for _, s := range stats {
			switch s.Field {
			case "free", "buffers", "cached":
				avail += s.Value << 10
			}
		}
		if avail > 0 {
			out.Available = avail
		}
		return nil
	})
	return out, err
}

// call runs one libvirt call with a deadline: the context's, or callTimeout.
// settleGrace is how long a save or restore that overran its limit is
// waited for before envctl gives up on it (and leaves its files alone).
var settleGrace = 2 * time.Minute

// callSettled is call for a save or a restore: libvirtd reads or writes
// files the caller removes when the call fails, so after the limit it is
// waited for (settleGrace more) before this returns. A call that comes
// back late is reported as having overrun its limit, with what it said
// (its side effects have happened: the caller tears them down); one that
// does not come back at all is an *vm.UnsettledError.
func (c *Conn) callSettled(ctx context.Context, what string, limit time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	tctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	select {
	case err := <-done:
		return err
	case <-tctx.Done():
	}
	select {
	case err := <-done:
		return fault.Infraf("libvirt at %s: %s did not end within %s (it came back after it: %v)", c.uri, what, limit, err)
	case <-time.After(settleGrace):
		return &vm.UnsettledError{What: "libvirt at " + c.uri + ": " + what, Limit: limit}
	}
}

func (c *Conn) call(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(timeout, callTimeout))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fault.Infraf("libvirt at %s: %s did not answer: %w", c.uri, what, ctx.Err())
	}
}

func isNotFound(err error) bool {
	var le golibvirt.Error
	if errors.As(err, &le) {
		switch golibvirt.ErrorNumber(le.Code) {
		case golibvirt.ErrNoDomain, golibvirt.ErrNoStoragePool, golibvirt.ErrNoStorageVol, golibvirt.ErrNoNetwork:
			return true
		}
	}
	return false
}

func isNotRunning(err error) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && golibvirt.ErrorNumber(le.Code) == golibvirt.ErrOperationInvalid
}

// DomainType decides the domain type from the daemon's own capabilities,
// so it is right for remote hosts too: KVM only when the daemon offers KVM
// domains and the host CPU has vmx or svm. Nested setups such as PVM
// expose /dev/kvm to QEMU yet crash KVM guests; they have neither flag.
func (c *Conn) DomainType(ctx context.Context, want vm.Accel) (vm.DomainType, string, error) {
	if want == vm.AccelTCG {
		return vm.DomainQEMU, "", nil
	}
	why := c.kvmUnusable(ctx)
	switch {
	case why == "":
		return vm.DomainKVM, "", nil
	case want == vm.AccelKVM:
		return "", "", fault.Inputf("--accel kvm: KVM is not usable on %s (%s); use --accel tcg or auto", c.uri, why)
	}
	return vm.DomainQEMU, "KVM unavailable on " + c.uri + " (" + why + "): using TCG software emulation, expect boots 5-10x slower", nil
}

func (c *Conn) kvmUnusable(ctx context.Context) string {
	var dom, host string
	err := c.call(ctx, "domain capabilities", 0, func() (err error) {
		dom, err = c.l.ConnectGetDomainCapabilities(nil, golibvirt.OptString{"x86_64"}, nil, golibvirt.OptString{"kvm"}, 0)
		return err
	})
	if err != nil {
		return "the daemon offers no KVM domains: " + oneLine(err.Error())
	}
	var dc libvirtxml.DomainCaps
	if err := dc.Unmarshal(dom); err != nil || dc.Domain != "kvm" {
		return "the daemon offers no KVM domains"
	}
	if err := c.call(ctx, "host capabilities", 0, func() (err error) {
		host, err = c.l.ConnectGetCapabilities()
		return err
	}); err != nil {
		return "host capabilities: " + oneLine(err.Error())
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(host); err != nil || caps.Host.CPU == nil {
		return "the host capabilities name no CPU"
	}
	if f := caps.Host.CPU.Features; f != nil && (f.VMX != nil || f.SVM != nil) {
		return ""
	}
	for _, f := range caps.Host.CPU.FeatureFlags {
		if f.Name == "vmx" || f.Name == "svm" {
			return ""
		}
	}
	return "the host CPU has no vmx or svm flag: nested virtualisation without hardware support"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
