package guest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
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
	sess, err := c.ssh.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = in, out, errw
	if term != "" {
		if err := sess.RequestPty(term, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
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
	err = sess.Wait()
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Cmd: cmd, Status: ee.ExitStatus()}
	}
	return err
}

// Upload is one file to copy into the guest, with the sha256 (hex) it was
// verified to have when it entered the host's cache.
type Upload struct {
	Local, Remote string
	SHA256        string
}

// ChangedError is a host file whose bytes, as they were streamed to the
// guest, were not the ones recorded for it: it changed after it was
// verified. Nothing of it is left in the guest.
type ChangedError struct {
	Path             string
	Recorded, Actual string
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s changed after it was verified (recorded sha256 %s, streamed %s); it was not installed: run again to fetch or build it anew, and `envctl cache verify` to check the rest", e.Path, e.Recorded, e.Actual)
}

// Upload copies files to the guest over SFTP, each through a temporary
// name that is renamed into place only when the bytes sent hash to the
// recorded digest (when one is given).
func (c *Client) Upload(ctx context.Context, files []Upload, mode os.FileMode) error {
	sc, err := sftp.NewClient(c.ssh, sftp.MaxConcurrentRequestsPerFile(64))
	if err != nil {
		return fmt.Errorf("sftp %s: %w", c.Addr, err)
	}
	defer sc.Close()
	// SFTP calls do not take a context: closing the client ends them.
	stop := context.AfterFunc(ctx, func() { _ = sc.Close() })
	defer stop()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := uploadOne(ctx, sc, f, mode); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var changed *ChangedError
			if errors.As(err, &changed) {
				return err
			}
			return fmt.Errorf("upload %s to %s:%s: %w", f.Local, c.Addr, f.Remote, err)
		}
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	size int64
}

// Size lets SFTP plan concurrent writes as it would for the file itself.
func (r ctxReader) Size() int64 { return r.size }

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func uploadOne(ctx context.Context, sc *sftp.Client, f Upload, mode os.FileMode) error {
	in, err := os.Open(f.Local)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := sc.MkdirAll(path.Dir(f.Remote)); err != nil {
		return err
	}
	tmp := f.Remote + ".envctl-upload"
	out, err := sc.Create(tmp)
	if err != nil {
		return err
	}
	var size int64 = -1
	if st, err := in.Stat(); err == nil {
		size = st.Size()
	}
	h := sha256.New()
	n, err := out.ReadFrom(ctxReader{ctx, io.TeeReader(in, h), size})
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("short upload: wrote %d of %d bytes", n, size)
	}
	if err == nil {
		err = out.Chmod(mode)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && f.SHA256 != "" && got != f.SHA256 {
		err = &ChangedError{Path: f.Local, Recorded: f.SHA256, Actual: got}
	}
	if err != nil {
		_ = sc.Remove(tmp)
		return err
	}
	return sc.PosixRename(tmp, f.Remote)
}

// UploadVerified uploads files and then checks each one's sha256 in the
// guest against its recorded digest, retrying a mismatching file once.
// Every file must have a recorded digest.
func (c *Client) UploadVerified(ctx context.Context, files []Upload, mode os.FileMode) error {
	for _, f := range files {
		if f.SHA256 == "" {
			return fmt.Errorf("upload %s: no recorded digest to verify it against", f.Local)
		}
	}
	pending := files
	for attempt := 1; ; attempt++ {
		if err := c.Upload(ctx, pending, mode); err != nil {
			return err
		}
		bad, err := c.mismatched(ctx, pending)
		if err != nil {
			return err
		}
		if len(bad) == 0 {
			return nil
		}
		if attempt == 2 {
			var names []string
			for _, f := range bad {
				names = append(names, f.Local+" → "+f.Remote)
			}
			return fmt.Errorf("upload to %s: sha256 differs after upload for %s", c.Addr, strings.Join(names, ", "))
		}
		pending = bad
	}
}

// SHA256 hashes files in the guest: path → hex digest ("" when missing).
func (c *Client) SHA256(ctx context.Context, paths ...string) (map[string]string, error) {
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = Quote(p)
	}
	// sha256sum exits 1 when a file is missing: the others still count.
	out, err := c.Output(ctx, "sha256sum "+strings.Join(quoted, " "))
	var exit *ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, fmt.Errorf("sha256sum on %s: %w: %s", c.Addr, err, out)
	}
	got := map[string]string{}
	for _, p := range paths {
		got[p] = ""
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			got[f[1]] = f[0]
		}
	}
	return got, nil
}

func (c *Client) mismatched(ctx context.Context, files []Upload) ([]Upload, error) {
	var remotes []string
	for _, f := range files {
		remotes = append(remotes, f.Remote)
	}
	got, err := c.SHA256(ctx, remotes...)
	if err != nil {
		return nil, fmt.Errorf("verify upload: %w", err)
	}
	var bad []Upload
	for _, f := range files {
		if got[f.Remote] != f.SHA256 {
			bad = append(bad, f)
		}
	}
	return bad, nil
}

// File is a file to write into the guest.
type File struct {
	Path string
	Data []byte
}

// WriteFile writes data to a path in the guest.
func (c *Client) WriteFile(ctx context.Context, remote string, data []byte, mode os.FileMode) error {
	return c.WriteFiles(ctx, []File{{Path: remote, Data: data}}, mode)
}

// WriteFiles writes files into the guest in one SFTP session (each new
// session starts a process in the guest, which software emulation makes
// slow), making their directories.
func (c *Client) WriteFiles(ctx context.Context, files []File, mode os.FileMode) error {
	sc, err := sftp.NewClient(c.ssh)
	if err != nil {
		return fmt.Errorf("sftp %s: %w", c.Addr, err)
	}
	defer sc.Close()
	// SFTP calls do not take a context: closing the client ends them.
	stop := context.AfterFunc(ctx, func() { _ = sc.Close() })
	defer stop()
	made := map[string]bool{}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dir := path.Dir(f.Path); !made[dir] {
			if err := sc.MkdirAll(dir); err != nil {
				return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
			}
			made[dir] = true
		}
		w, err := sc.Create(f.Path)
		if err != nil {
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if _, err := w.Write(f.Data); err != nil {
			w.Close()
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if err := w.Chmod(mode); err != nil {
			w.Close()
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
	}
	return nil
}

// ForwardRemote listens on remoteAddr inside the guest (e.g.
// "127.0.0.1:5000") and connects each accepted connection to localAddr on
// the host. Close the returned closer to stop.
func (c *Client) ForwardRemote(remoteAddr, localAddr string) (io.Closer, error) {
	l, err := c.ssh.Listen("tcp", remoteAddr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: remote forward %s: %w", c.Addr, remoteAddr, err)
	}
	go func() {
		for {
			rc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				lc, err := net.Dial("tcp", localAddr)
				if err != nil {
					rc.Close()
					return
				}
				pipe(rc, lc)
			}()
		}
	}()
	return l, nil
}

func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
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
