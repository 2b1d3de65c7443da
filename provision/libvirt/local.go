package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/base/fault"
)

// The local daemons' URIs.
const (
	SystemURI  = "qemu:///system"
	SessionURI = "qemu:///session"
)

// systemSocketDir is where the system daemon listens.
const systemSocketDir = "/var/run/libvirt"

// sessionIdleTimeout is how long a per-user daemon that envctl started
// waits, with no client, before it exits: virsh's choice.
const sessionIdleTimeout = 120 * time.Second

// sessionStartLimit bounds the wait for a per-user daemon to answer.
const sessionStartLimit = 30 * time.Second

// socketNames are the local daemons' sockets, the monolithic daemon's
// first, then the modular QEMU daemon's.
var socketNames = []string{"libvirt-sock", "virtqemud-sock"}

// SessionSocketDir is where the per-user daemon puts its sockets, found as
// libvirt finds it (glib's user runtime directory): $XDG_RUNTIME_DIR/libvirt,
// else libvirt/ in the user's cache directory ($XDG_CACHE_HOME or ~/.cache).
func SessionSocketDir() (string, error) {
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		return filepath.Join(rt, "libvirt"), nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fault.Inputf("qemu:///session: no runtime directory: set XDG_RUNTIME_DIR or HOME (%v)", err)
	}
	return filepath.Join(cache, "libvirt"), nil
}

// daemonAbsent reports whether a local dial failed because no daemon
// listens (no socket, or a socket nobody accepts on), as opposed to a
// daemon that refused this user.
func daemonAbsent(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// dialLocal connects to a local daemon's sockets in dir. When none
// answers, the error is a daemon's refusal if one refused, else why no
// daemon listens.
func dialLocal(dir string, u *url.URL) (*golibvirt.Libvirt, error) {
	var absent []error
	for _, sock := range socketNames {
		path := filepath.Join(dir, sock)
		l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(10*time.Second)))
		err := l.ConnectToURI(golibvirt.RemoteURI(u))
		switch {
		case err == nil:
			return l, nil
		case !daemonAbsent(err):
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		absent = append(absent, err)
	}
	return nil, errors.Join(absent...)
}

// dialSession connects to this user's daemon and, when none runs, starts
// it as virsh does: under a lock next to its socket (so that concurrent
// envctl runs start one daemon), with an idle timeout, detached from
// envctl, then waits for it to answer.
func dialSession(ctx context.Context, u *url.URL) (*golibvirt.Libvirt, error) {
	dir, err := SessionSocketDir()
	if err != nil {
		return nil, err
	}
	l, err := dialLocal(dir, u)
	if err == nil || !daemonAbsent(err) {
		return l, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fault.Infraf("qemu:///session: %v; set XDG_RUNTIME_DIR to a directory of yours", err)
	}
	lock := flock.New(filepath.Join(dir, socketNames[0]+".lock"))
	ctx, cancel := context.WithTimeout(ctx, sessionStartLimit)
	defer cancel()
	if ok, err := lock.TryLockContext(ctx, 100*time.Millisecond); err != nil || !ok {
		return nil, fault.Infraf("qemu:///session: cannot lock %s to start the per-user daemon: %v", lock.Path(), err)
	}
	defer func() { _ = lock.Unlock() }()
	if l, err := dialLocal(dir, u); err == nil || !daemonAbsent(err) {
		return l, err // another run started it meanwhile
	}
	if err := startSessionDaemon(ctx, dir); err != nil {
		return nil, err
	}
	for {
		l, err := dialLocal(dir, u)
		if err == nil || !daemonAbsent(err) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fault.Infraf("qemu:///session: the per-user daemon envctl started did not answer on %s within %s: %v", dir, sessionStartLimit, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// daemonSearchPath is where the libvirt daemons are looked for after
// PATH: a normal user's PATH often lacks the sbin directories.
var daemonSearchPath = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// sessionDaemon finds the per-user daemon's binary: the monolithic
// libvirtd, else the modular virtqemud.
func sessionDaemon() (string, error) {
	for _, name := range []string{"libvirtd", "virtqemud"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, d := range daemonSearchPath {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fault.Infraf("qemu:///session: neither libvirtd nor virtqemud is installed; install libvirt-daemon-system (`sudo make host`)")
}

// startSessionDaemon starts the per-user daemon in its own session, so that
// it outlives envctl and a Ctrl-C to envctl does not reach it; it exits by
// itself once idle. The daemon finds the same runtime directory (it reads
// the same environment).
func startSessionDaemon(ctx context.Context, dir string) error {
	bin, err := sessionDaemon()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "--daemon", fmt.Sprintf("--timeout=%d", int(sessionIdleTimeout.Seconds())))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fault.Infraf("qemu:///session: starting the per-user daemon (%s) for %s failed: %v: %s", bin, dir, err, oneLine(out.String()))
	}
	return nil
}

// ChooseURI picks the connection for a run without --connect, and says
// why: LIBVIRT_DEFAULT_URI when it is set (as virsh does); the system
// daemon for root, or for a user whom it accepts (a member of the libvirt
// group on a host with polkit); else this user's session daemon, which
// needs no privilege.
func ChooseURI(ctx context.Context) (uri, why string) {
	if env := os.Getenv("LIBVIRT_DEFAULT_URI"); env != "" {
		return env, "LIBVIRT_DEFAULT_URI is set"
	}
	if os.Geteuid() == 0 {
		return SystemURI, "envctl runs as root"
	}
	name := currentUser()
	u, _ := url.Parse(SystemURI)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch := make(chan error, 1)
	go func() {
		l, err := dialLocal(systemSocketDir, u)
		if err == nil {
			_ = l.Disconnect()
		}
		ch <- err
	}()
	var err error
	select {
	case err = <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		return SystemURI, name + " may use the system daemon"
	}
	if daemonAbsent(err) {
		return SessionURI, "no system daemon runs; " + name + "'s own daemon needs no privilege"
	}
	return SessionURI, name + " may not use " + SystemURI + " (" + firstLine(err) + ")"
}

// accessAdvice is what to do about a local daemon that refused this user.
func accessAdvice(uri string) string {
	return fmt.Sprintf("%s may not use %s: join the libvirt group (`sudo usermod -aG libvirt %s`, then log in again) on a host with polkit, or use --connect %s", currentUser(), uri, currentUser(), SessionURI)
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return fmt.Sprintf("uid %d", os.Getuid())
}

// firstLine is an error's first line, without the joined alternatives.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
