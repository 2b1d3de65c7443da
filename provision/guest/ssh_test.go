package guest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/guest/guesttest"
)

func signer(t *testing.T) ssh.Signer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func start(t *testing.T) (*guesttest.Server, guest.Config) {
	user := signer(t)
	srv := guesttest.Start(t, guesttest.Options{Authorized: user.PublicKey()})
	srv.Reply(`^both$`, guesttest.Reply{Stdout: "out\n", Stderr: "err\n"})
	return srv, guest.Config{Addr: srv.Addr, User: "root", Signer: user, HostKey: srv.HostKey.PublicKey()}
}

func TestClient(t *testing.T) {
	srv, cfg := start(t)
	ctx := context.Background()

	t.Run("pinned key accepted, commands and exit status", func(t *testing.T) {
		c, err := guest.Wait(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		out, err := c.Output(ctx, "echo hello")
		if err != nil || strings.TrimSpace(out) != "hello" {
			t.Errorf("echo: %q %v", out, err)
		}
		out, err = c.Output(ctx, "exit 3")
		var ee *guest.ExitError
		if !errors.As(err, &ee) || ee.Status != 3 || !strings.Contains(out, "exiting 3") {
			t.Errorf("exit 3: %q %v", out, err)
		}
		stdout, all, err := c.Split(ctx, "both")
		if err != nil || stdout != "out\n" || !strings.Contains(all, "err") {
			t.Errorf("split: %q %q %v", stdout, all, err)
		}
	})

	t.Run("combined output keeps both streams", func(t *testing.T) {
		c, err := guest.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range 50 {
			out, err := c.Output(ctx, "both")
			if err != nil || !strings.Contains(out, "out") || !strings.Contains(out, "err") {
				t.Fatalf("run %d: output %q, %v (stdout and stderr must both survive)", i, out, err)
			}
		}
	})

	t.Run("wrong host key refused at once", func(t *testing.T) {
		bad := cfg
		bad.HostKey = signer(t).PublicKey()
		start := time.Now()
		_, err := guest.Wait(ctx, bad, nil)
		var hk *guest.HostKeyMismatch
		if !errors.As(err, &hk) {
			t.Fatalf("err = %v, want host key mismatch", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Error("a wrong host key was retried")
		}
		if !strings.Contains(err.Error(), ssh.FingerprintSHA256(srv.HostKey.PublicKey())) {
			t.Errorf("error does not show the presented key: %v", err)
		}
	})

	t.Run("no answer times out", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		gone := cfg
		gone.Addr = addr
		_, err := guest.Wait(cctx, gone, nil)
		if err == nil || !strings.Contains(err.Error(), "no answer") {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("remote forward", func(t *testing.T) {
		c, err := guest.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		backend, _ := net.Listen("tcp", "127.0.0.1:0")
		defer backend.Close()
		go func() {
			conn, err := backend.Accept()
			if err == nil {
				_, _ = conn.Write([]byte("from host"))
				conn.Close()
			}
		}()
		fwd, err := c.ForwardRemote("127.0.0.1:5000", backend.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer fwd.Close()
		conn, err := net.Dial("tcp", srv.Forward("127.0.0.1:5000"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(conn)
		if string(b) != "from host" {
			t.Errorf("forwarded %q", b)
		}
	})
}

func TestUploads(t *testing.T) {
	srv, cfg := start(t)
	ctx := context.Background()
	c, err := guest.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := t.TempDir()
	local := filepath.Join(dir, "crio")
	data := []byte(strings.Repeat("binary", 100000))
	if err := os.WriteFile(local, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	up := []guest.Upload{{Local: local, Remote: "/usr/local/bin/crio", SHA256: hex.EncodeToString(sum[:])}}
	if err := c.UploadVerified(ctx, up, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := srv.ReadFile("/usr/local/bin/crio")
	if err != nil || string(got) != string(data) {
		t.Fatalf("uploaded %d bytes, %v", len(got), err)
	}
	if st, _ := os.Stat(srv.Path("/usr/local/bin/crio")); st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := c.WriteFile(ctx, "/etc/crio/crio.conf.d/10-envctl.conf", []byte("[crio]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := srv.ReadFile("/etc/crio/crio.conf.d/10-envctl.conf"); string(b) != "[crio]\n" {
		t.Errorf("written %q", b)
	}

	// A guest whose copy never matches: the upload is retried once, then
	// refused naming the file.
	srv.Reply(`^sha256sum `, guesttest.Reply{Stdout: strings.Repeat("0", 64) + "  /usr/local/bin/crio\n"})
	err = c.UploadVerified(ctx, up, 0o755)
	if err == nil || !strings.Contains(err.Error(), "sha256 differs") || !strings.Contains(err.Error(), local) {
		t.Errorf("mismatch: %v", err)
	}
	n := 0
	for _, cmd := range srv.Commands() {
		if strings.HasPrefix(cmd, "sha256sum") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d checks, want 3 (one good upload, then two tries)", n)
	}

	// Cancellation stops an upload.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Upload(cctx, []guest.Upload{{Local: local, Remote: "/x"}}, 0o644); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled upload: %v", err)
	}
	if err := c.Upload(ctx, []guest.Upload{{Local: filepath.Join(dir, "missing"), Remote: "/x"}}, 0o644); err == nil {
		t.Error("uploaded a missing file")
	}
	// Every upload needs a recorded digest.
	if err := c.UploadVerified(ctx, []guest.Upload{{Local: local, Remote: "/y"}}, 0o644); err == nil {
		t.Error("uploaded without a recorded digest")
	}
}

// A host file that changed after it was verified (a flipped byte in the
// cache) is refused while it streams, naming the file and both digests,
// and nothing of it stays in the guest.
func TestUploadOfAChangedFile(t *testing.T) {
	srv, cfg := start(t)
	ctx := context.Background()
	c, err := guest.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := filepath.Join(t.TempDir(), "crictl")
	data := []byte(strings.Repeat("crictl", 50000))
	sum := sha256.Sum256(data)
	data[1000] ^= 1
	if err := os.WriteFile(local, data, 0o755); err != nil {
		t.Fatal(err)
	}
	err = c.UploadVerified(ctx, []guest.Upload{{Local: local, Remote: "/usr/local/bin/crictl", SHA256: hex.EncodeToString(sum[:])}}, 0o755)
	var changed *guest.ChangedError
	if !errors.As(err, &changed) || !strings.Contains(err.Error(), local) || !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
		t.Fatalf("changed file: %v", err)
	}
	for _, p := range []string{"/usr/local/bin/crictl", "/usr/local/bin/crictl.envctl-upload"} {
		if _, err := srv.ReadFile(p); err == nil {
			t.Errorf("%s is in the guest", p)
		}
	}
}

func TestShellExitStatus(t *testing.T) {
	_, cfg := start(t)
	c, err := guest.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out strings.Builder
	err = c.Shell(context.Background(), "sh -c 'exit 7'", strings.NewReader(""), &out, io.Discard, "", 80, 24)
	var ee *guest.ExitError
	if !errors.As(err, &ee) || ee.Status != 7 {
		t.Errorf("shell: %v", err)
	}
	if err := c.Shell(context.Background(), "echo ok", nil, &out, io.Discard, "xterm", 80, 24); err != nil || !strings.Contains(out.String(), "ok") {
		t.Errorf("shell with a pty: %q %v", out.String(), err)
	}
}

func TestRunCancelled(t *testing.T) {
	srv, cfg := start(t)
	release := make(chan struct{})
	defer close(release)
	srv.Handle(`^sleep`, func(string, []string) guesttest.Reply { <-release; return guesttest.Reply{} })
	c, err := guest.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Output(ctx, "sleep 100"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{"a": "'a'", "it's": `'it'\''s'`, "": "''"} {
		if got := guest.Quote(in); got != want {
			t.Errorf("Quote(%q) = %s", in, got)
		}
	}
}

func TestCommandLine(t *testing.T) {
	tests := map[string][]string{
		"":                     nil,
		"ls | wc -l":           {"ls | wc -l"},
		"sh -c 'exit 7'":       {"sh", "-c", "exit 7"},
		"uname -a":             {"uname", "-a"},
		`echo 'it'\''s' a=b/c`: {"echo", "it's", "a=b/c"},
		"printf ''":            {"printf", ""},
	}
	for want, args := range tests {
		if got := guest.CommandLine(args); got != want {
			t.Errorf("CommandLine(%q) = %q, want %q", args, got, want)
		}
	}
}

// A terminal session passes the local window's changes on (less and vim
// redraw), while the command runs.
func TestShellForwardsWindowChanges(t *testing.T) {
	srv, cfg := start(t)
	release := make(chan struct{})
	srv.Handle(`^vim`, func(string, []string) guesttest.Reply { <-release; return guesttest.Reply{Stdout: "done\n"} })
	c, err := guest.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resize := make(chan guest.WindowSize, 1)
	errc := make(chan error, 1)
	var out strings.Builder
	go func() {
		errc <- c.ShellResized(context.Background(), "vim", nil, &out, io.Discard, "xterm", guest.WindowSize{W: 80, H: 24}, resize)
	}()
	resize <- guest.WindowSize{W: 132, H: 50}
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.WindowChanges()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := srv.WindowChanges(); len(got) != 1 || got[0] != [2]int{132, 50} {
		t.Errorf("window changes %v, want [[132 50]]", got)
	}
}
