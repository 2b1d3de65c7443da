package libvirt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/envctl/envctl/profiles/base/fault"
)

// sshTarget is the hypervisor host of a qemu+ssh:// URI and how to log in:
// user, port, an optional ?keyfile= and ?known_hosts= (default
// ~/.ssh/known_hosts). Host keys are always checked against known_hosts.
type sshTarget struct {
	host, port, user, keyFile, knownHosts string
}

// addr is host:port, an IPv6 host in brackets, as known_hosts has it.
func (t sshTarget) addr() string { return net.JoinHostPort(t.host, t.port) }

func parseSSHTarget(u *url.URL) (sshTarget, error) {
	t := sshTarget{host: u.Hostname(), port: cmp.Or(u.Port(), "22"), user: u.User.Username(),
		keyFile: u.Query().Get("keyfile"), knownHosts: u.Query().Get("known_hosts")}
	if u.Query().Get("no_verify") != "" || u.Query().Get("known_hosts_verify") != "" {
		return t, fault.Inputf("--connect %s: envctl always verifies the host key against known_hosts; drop no_verify and known_hosts_verify", u.Redacted())
	}
	if t.user == "" {
		if cur, err := user.Current(); err == nil {
			t.user = cur.Username
		}
	}
	if t.knownHosts == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return t, fault.Inputf("--connect %s: no home directory for ~/.ssh/known_hosts; pass ?known_hosts=FILE", u.Redacted())
		}
		t.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	if _, err := os.Stat(t.knownHosts); err != nil {
		return t, fault.Inputf("--connect %s: known_hosts file %s: %v; add the host's key there (ssh-keyscan) or pass ?known_hosts=FILE", u.Redacted(), t.knownHosts, err)
	}
	return t, nil
}

// dialSSH connects go-libvirt through its SSH dialer, with known_hosts
// checking.
func dialSSH(u *url.URL) (*golibvirt.Libvirt, error) {
	t, err := parseSSHTarget(u)
	if err != nil {
		return nil, err
	}
	opts := []dialers.SSHOption{dialers.UseSSHPort(t.port), dialers.UseSSHUsername(t.user), dialers.UseKnownHostsFile(t.knownHosts)}
	if t.keyFile != "" {
		opts = append(opts, dialers.UseKeyFile(t.keyFile))
	}
	if s := u.Query().Get("socket"); s != "" {
		opts = append(opts, dialers.WithRemoteSocket(s))
	}
	l := golibvirt.NewWithDialer(dialers.NewSSH(t.host, opts...))
	if err := l.ConnectToURI(golibvirt.RemoteURI(u)); err != nil {
		return nil, err
	}
	return l, nil
}

// hostSSH is envctl's own SSH connection to a remote hypervisor host, for
// reaching the guests' forwarded ports on that host's loopback.
type hostSSH struct {
	target sshTarget
	mu     sync.Mutex
	client *ssh.Client
}

func (h *hostSSH) config() (*ssh.ClientConfig, error) {
	check, err := knownhosts.New(h.target.knownHosts)
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", h.target.knownHosts, err)
	}
	var auth []ssh.AuthMethod
	keys := []string{h.target.keyFile}
	if h.target.keyFile == "" {
		if home, err := os.UserHomeDir(); err == nil {
			for _, k := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				keys = append(keys, filepath.Join(home, ".ssh", k))
			}
		}
	}
	var signers []ssh.Signer
	for _, k := range keys {
		if b, err := os.ReadFile(k); err == nil {
			if s, err := ssh.ParsePrivateKey(b); err == nil {
				signers = append(signers, s)
			}
		}
	}
	if len(signers) > 0 {
		auth = append(auth, ssh.PublicKeys(signers...))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
		}
	}
	return &ssh.ClientConfig{User: h.target.user, Auth: auth, HostKeyCallback: check, Timeout: 20 * time.Second}, nil
}

// dial reaches an address on the remote host through SSH.
func (h *hostSSH) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h.mu.Lock()
	c := h.client
	h.mu.Unlock()
	if c == nil {
		var err error
		if c, err = h.connect(ctx); err != nil {
			return nil, err
		}
		h.mu.Lock()
		if h.client == nil {
			h.client = c
		} else {
			_ = c.Close()
			c = h.client
		}
		h.mu.Unlock()
	}
	return c.DialContext(ctx, network, addr)
}

// handshakeTimeout bounds the SSH handshake when ctx has no deadline.
const handshakeTimeout = 20 * time.Second

// connect opens the SSH connection to the host. Every wait is bounded by
// ctx: the TCP dial, and the whole handshake, through a deadline on the
// raw connection (cleared once it is done) and its closing when ctx ends
// (a host that accepts and says nothing would otherwise hang the run).
func (h *hostSSH) connect(ctx context.Context) (*ssh.Client, error) {
	cfg, err := h.config()
	if err != nil {
		return nil, fault.Infraf("ssh to %s: %w", h.target.host, err)
	}
	hostport := h.target.addr()
	d := net.Dialer{Timeout: handshakeTimeout}
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, fault.Infraf("ssh to %s: %w", h.target.host, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(handshakeTimeout)
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, hostport, cfg)
	if !stop() && err == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		_ = conn.Close()
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			return nil, fault.Inputf("ssh to %s: the host key is not the one in %s: %v", h.target.host, h.target.knownHosts, err)
		}
		if ctx.Err() != nil {
			return nil, fault.Infraf("ssh to %s: no SSH handshake before %v: %w", h.target.host, context.Cause(ctx), err)
		}
		return nil, fault.Infraf("ssh to %s: %w", h.target.host, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

func (h *hostSSH) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client != nil {
		_ = h.client.Close()
		h.client = nil
	}
}
