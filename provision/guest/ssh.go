package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Client is an SSH connection to a guest.
type Client struct {
	ssh  *ssh.Client
	Addr string
	User string
}

// Config says how to reach a guest.
type Config struct {
	Addr    string // host:port
	User    string
	Signer  ssh.Signer
	HostKey ssh.PublicKey // pinned; anything else is refused
	// Dial reaches Addr; nil dials directly. A guest on a remote
	// hypervisor is reached through an SSH connection to that host.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (cfg Config) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if cfg.Dial != nil {
		return cfg.Dial(ctx, "tcp", cfg.Addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", cfg.Addr)
}

// HostKeyMismatch reports a guest presenting a host key other than the pinned one.
type HostKeyMismatch struct {
	Addr      string
	Want, Got string
}

func (e *HostKeyMismatch) Error() string {
	return fmt.Sprintf("ssh %s: host key mismatch: expected %s, got %s; refusing to connect (something else answers on this port)", e.Addr, e.Want, e.Got)
}

func (cfg Config) clientConfig() *ssh.ClientConfig {
	want := cfg.HostKey
	return &ssh.ClientConfig{
		User: cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if want == nil || !bytes.Equal(key.Marshal(), want.Marshal()) {
				w := "(none pinned)"
				if want != nil {
					w = ssh.FingerprintSHA256(want)
				}
				return &HostKeyMismatch{Addr: cfg.Addr, Want: w, Got: ssh.FingerprintSHA256(key)}
			}
			return nil
		},
		HostKeyAlgorithms: []string{want.Type()},
		Timeout:           10 * time.Second,
	}
}

// Dial connects once.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	conn, err := cfg.dial(ctx, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	}
	// The handshake does not watch ctx: closing the socket ends it at once.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, cfg.Addr, cfg.clientConfig())
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	cl := &Client{ssh: ssh.NewClient(c, chans, reqs), Addr: cfg.Addr, User: cfg.User}
	go cl.keepalive(KeepaliveInterval, 3)
	return cl, nil
}

// KeepaliveInterval is how often a client asks the guest's sshd whether it
// is still there; after three unanswered asks the connection is closed, so
// a frozen guest fails every command in flight instead of hanging it.
var KeepaliveInterval = 15 * time.Second

func (c *Client) keepalive(every time.Duration, misses int) {
	t := time.NewTicker(every)
	defer t.Stop()
	missed := 0
	for range t.C {
		done := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				return // closed
			}
			missed = 0
		case <-time.After(every):
			missed++
			if missed >= misses {
				_ = c.ssh.Close()
				return
			}
		}
	}
}

// banner reports whether an SSH server greets on addr within a short time.
// Behind QEMU's user-mode forward a connection is accepted at once even
// while the guest is still booting, and a full handshake attempt can then
// hang for seconds; probing for the "SSH-" greeting with short timeouts
// notices sshd as soon as it listens.
func banner(ctx context.Context, cfg Config) bool {
	conn, err := cfg.dial(ctx, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	return err == nil && string(buf) == "SSH-"
}

// Wait dials until the guest answers with the pinned key, until ctx ends.
// It first waits for sshd's greeting with cheap probes, then handshakes. A
// wrong host key fails at once.
func Wait(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	delay := 250 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		if !banner(ctx, cfg) {
			last = fmt.Errorf("no SSH greeting yet")
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("ssh %s: no answer (last error: %v): %w", cfg.Addr, last, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		c, err := Dial(actx, cfg)
		cancel()
		if err == nil {
			return c, nil
		}
		var hk *HostKeyMismatch
		if errors.As(err, &hk) {
			return nil, err
		}
		last = err
		if log != nil {
			log.Debug("ssh not ready", "addr", cfg.Addr, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ssh %s: no answer (last error: %v): %w", cfg.Addr, last, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay = delay * 3 / 2
		}
	}
}

// Close ends the connection.
func (c *Client) Close() error { return c.ssh.Close() }

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Cmd    string
	Status int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("command %q exited with status %d", e.Cmd, e.Status)
}

// Run runs cmd, streaming its output, and returns its exit status. A
// non-zero exit gives *ExitError. ctx cancels the command.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	sess, err := c.ssh.NewSession()
	if err != nil {
		return fmt.Errorf("ssh %s: new session: %w", c.Addr, err)
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	if err := sess.Start(cmd); err != nil {
		return fmt.Errorf("ssh %s: start %q: %w", c.Addr, cmd, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		// Let the output copies finish (briefly: the guest may be gone).
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case werr := <-done:
			slog.Debug("ssh session ended after cancel", "addr", c.Addr, "err", werr)
		case <-t.C:
		}
		return fmt.Errorf("ssh %s: %q: %w", c.Addr, cmd, ctx.Err())
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Cmd: cmd, Status: ee.ExitStatus()}
	}
	if err != nil {
		return fmt.Errorf("ssh %s: %q: %w", c.Addr, cmd, err)
	}
	return nil
}

// Output runs cmd and returns its combined output. stdout and stderr are
// copied by two goroutines, so they share the buffer through a lock (and
// never through bytes.Buffer.ReadFrom, whose concurrent use loses data).
func (c *Client) Output(ctx context.Context, cmd string) (string, error) {
	var buf bytes.Buffer
	var mu sync.Mutex
	w := &lockedWriter{&mu, &buf}
	err := c.Run(ctx, cmd, nil, w, w)
	mu.Lock() // a cancelled command's copies may still be writing
	defer mu.Unlock()
	return buf.String(), err
}

// Split runs cmd and returns its stdout and its combined output separately.
func (c *Client) Split(ctx context.Context, cmd string) (stdout, combined string, err error) {
	var out, all bytes.Buffer
	var mu sync.Mutex
	err = c.Run(ctx, cmd, nil, &lockedWriter{&mu, io.MultiWriter(&out, &all)}, &lockedWriter{&mu, &all})
	mu.Lock()
	defer mu.Unlock()
	return out.String(), all.String(), err
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Shell runs an interactive login shell (or cmd) wired to the given terminal files.
func (c *Client) Shell(ctx context.Context, cmd string, in io.Reader, out, errw io.Writer, term string, w, h int) error {
	return c.ShellResized(ctx, cmd, in, out, errw, term, WindowSize{W: w, H: h}, nil)
}

// WindowSize is a terminal's size in columns and rows.
type WindowSize struct{ W, H int }

// ShellResized is Shell whose terminal follows the local one: each size
// sent on resize is passed on as an SSH window-change request, so less,
// vim and top redraw when the window changes.
func (c *Client) ShellResized(ctx context.Context, cmd string, in io.Reader, out, errw io.Writer, term string, size WindowSize, resize <-chan WindowSize) error {
	sess, err := c.ssh.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = in, out, errw
	if term != "" {
		if err := sess.RequestPty(term, size.H, size.W, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return err
		}
	}
	if cmd == "" {
		err = sess.Shell()
	} else {
		err = sess.Start(cmd)
	}
	if err != nil {
		return err
	}
	if resize != nil && term != "" {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case sz := <-resize:
					_ = sess.WindowChange(sz.H, sz.W)
				}
			}
		}()
	}
	err = sess.Wait()
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Cmd: cmd, Status: ee.ExitStatus()}
	}
	return err
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CommandLine joins command arguments into one remote command line: a
// single argument is taken as a whole shell command line ("ls | wc -l");
// several are quoted one by one where needed, so sh -c 'exit 7' stays
// three words.
func CommandLine(args []string) string {
	if len(args) <= 1 {
		return strings.Join(args, "")
	}
	q := make([]string, len(args))
	for i, s := range args {
		q[i] = s
		if s == "" || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") != "" {
			q[i] = Quote(s)
		}
	}
	return strings.Join(q, " ")
}
