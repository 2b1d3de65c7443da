package libvirt

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/envctl/envctl/profiles/base/fault"
)

func TestSessionSocketDir(t *testing.T) {
	for _, tc := range []struct {
		name, runtime, cache, home, want string
	}{
		{"runtime dir first", "/rt", "/c", "/h", "/rt/libvirt"},
		{"else the cache dir", "", "/c", "/h", "/c/libvirt"},
		{"else ~/.cache", "", "", "/h", "/h/.cache/libvirt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", tc.runtime)
			t.Setenv("XDG_CACHE_HOME", tc.cache)
			t.Setenv("HOME", tc.home)
			got, err := SessionSocketDir()
			if err != nil || got != tc.want {
				t.Errorf("SessionSocketDir() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestConnectErrorAdvice(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	missing := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)}
	denied := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}
	polkit := golibvirt.Error{Code: uint32(golibvirt.ErrInternalError), Message: "internal error: Unable to get system bus connection"}
	for _, tc := range []struct {
		name   string
		local  bool
		err    error
		want   []string
		unwant string
	}{
		{"no socket", true, missing, []string{"no daemon listens", "start it"}, "libvirt group"},
		{"nobody accepts", true, fmt.Errorf("wrapped: %w", refused), []string{"no daemon listens"}, "libvirt group"},
		{"socket permissions", true, denied, []string{"may not use qemu:///system", "libvirt group", "--connect qemu:///session"}, "start it"},
		{"polkit without D-Bus", true, polkit, []string{"libvirt group", "system bus"}, "start it"},
		{"remote", false, missing, []string{"check the host's daemon"}, "libvirt group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectError(SystemURI, tc.local, tc.err)
			if !fault.Is(err, fault.Infra) {
				t.Fatalf("not an infrastructure error: %v", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, tc.unwant) || strings.Contains(msg, "\n") {
				t.Errorf("%q: has %q or is not one line", msg, tc.unwant)
			}
		})
	}
}

func TestChooseURIHonoursLibvirtDefaultURI(t *testing.T) {
	t.Setenv("LIBVIRT_DEFAULT_URI", "qemu+ssh://h/system")
	if uri, why := ChooseURI(context.Background()); uri != "qemu+ssh://h/system" || !strings.Contains(why, "LIBVIRT_DEFAULT_URI") {
		t.Errorf("ChooseURI() = %q, %q", uri, why)
	}
}

func TestSessionDaemonThatFailsToStart(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho 'cannot bind the socket' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "libvirtd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	_, err := Connect(context.Background(), SessionURI)
	if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "cannot bind the socket") || !strings.Contains(err.Error(), "per-user daemon") {
		t.Errorf("Connect(session) with a failing daemon: %v", err)
	}
}
