package guest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// server is an in-process SSH server: it runs "echo X" and "exit N"
// commands and accepts remote forwards.
type server struct {
	addr    string
	hostKey ssh.Signer
}

func newServer(t *testing.T, authorized ssh.PublicKey) *server {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewSignerFromKey(priv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), authorized.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("denied")
	}}
	cfg.AddHostKey(hk)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveConn(c, cfg)
		}
	}()
	return &server{addr: l.Addr().String(), hostKey: hk}
}

func serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go func() {
		for r := range reqs {
			if r.Type != "tcpip-forward" {
				r.Reply(false, nil)
				continue
			}
			var req struct {
				Addr string
				Port uint32
			}
			ssh.Unmarshal(r.Payload, &req)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				r.Reply(false, nil)
				continue
			}
			port := uint32(l.Addr().(*net.TCPAddr).Port)
			forwardMu.Lock()
			forwardAddr = l.Addr().String()
			forwardMu.Unlock()
			r.Reply(true, ssh.Marshal(struct{ Port uint32 }{port}))
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					payload := ssh.Marshal(struct {
						Addr       string
						Port       uint32
						OriginAddr string
						OriginPort uint32
					}{req.Addr, req.Port, "127.0.0.1", 1})
					ch, creqs, err := sc.OpenChannel("forwarded-tcpip", payload)
					if err != nil {
						conn.Close()
						continue
					}
					go ssh.DiscardRequests(creqs)
					go func() { io.Copy(ch, conn); ch.CloseWrite() }()
					go func() { io.Copy(conn, ch); conn.Close() }()
				}
			}()
		}
	}()
	for nc := range chans {
		ch, creqs, _ := nc.Accept()
		go func() {
			for r := range creqs {
				if r.Type != "exec" {
					r.Reply(false, nil)
					continue
				}
				var p struct{ Cmd string }
				ssh.Unmarshal(r.Payload, &p)
				r.Reply(true, nil)
				code := 0
				switch {
				case strings.HasPrefix(p.Cmd, "echo "):
					fmt.Fprintln(ch, strings.TrimPrefix(p.Cmd, "echo "))
				case p.Cmd == "both":
					fmt.Fprintln(ch, "out")
					fmt.Fprintln(ch.Stderr(), "err")
				case strings.HasPrefix(p.Cmd, "exit "):
					fmt.Sscan(strings.TrimPrefix(p.Cmd, "exit "), &code)
					fmt.Fprintln(ch.Stderr(), "failing")
				}
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
				ch.Close()
			}
		}()
	}
}

var (
	forwardMu   sync.Mutex
	forwardAddr string
)

func TestClient(t *testing.T) {
	_, upriv, _ := ed25519.GenerateKey(rand.Reader)
	user, _ := ssh.NewSignerFromKey(upriv)
	srv := newServer(t, user.PublicKey())
	ctx := context.Background()

	t.Run("pinned key accepted, commands and exit status", func(t *testing.T) {
		c, err := Wait(ctx, Config{Addr: srv.addr, User: "root", Signer: user, HostKey: srv.hostKey.PublicKey()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		out, err := c.Output(ctx, "echo hello")
		if err != nil || strings.TrimSpace(out) != "hello" {
			t.Errorf("echo: %q %v", out, err)
		}
		out, err = c.Output(ctx, "exit 3")
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Status != 3 || !strings.Contains(out, "failing") {
			t.Errorf("exit 3: %q %v", out, err)
		}
	})

	t.Run("combined output keeps both streams", func(t *testing.T) {
		c, err := Dial(ctx, Config{Addr: srv.addr, User: "root", Signer: user, HostKey: srv.hostKey.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < 50; i++ {
			out, err := c.Output(ctx, "both")
			if err != nil || !strings.Contains(out, "out") || !strings.Contains(out, "err") {
				t.Fatalf("run %d: output %q, %v (stdout and stderr must both survive)", i, out, err)
			}
		}
	})

	t.Run("wrong host key refused at once", func(t *testing.T) {
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		os, _ := ssh.NewSignerFromKey(other)
		start := time.Now()
		_, err := Wait(ctx, Config{Addr: srv.addr, User: "root", Signer: user, HostKey: os.PublicKey()}, nil)
		var hk *HostKeyMismatch
		if !errors.As(err, &hk) {
			t.Fatalf("err = %v, want host key mismatch", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Error("a wrong host key was retried")
		}
		if !strings.Contains(err.Error(), ssh.FingerprintSHA256(srv.hostKey.PublicKey())) {
			t.Errorf("error does not show the presented key: %v", err)
		}
	})

	t.Run("no answer times out", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := Wait(cctx, Config{Addr: addr, User: "root", Signer: user, HostKey: srv.hostKey.PublicKey()}, nil)
		if err == nil || !strings.Contains(err.Error(), "no answer") {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("remote forward", func(t *testing.T) {
		c, err := Dial(ctx, Config{Addr: srv.addr, User: "root", Signer: user, HostKey: srv.hostKey.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		backend, _ := net.Listen("tcp", "127.0.0.1:0")
		defer backend.Close()
		go func() {
			conn, err := backend.Accept()
			if err == nil {
				conn.Write([]byte("from host"))
				conn.Close()
			}
		}()
		fwd, err := c.ForwardRemote("127.0.0.1:5000", backend.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer fwd.Close()
		forwardMu.Lock()
		addr := forwardAddr
		forwardMu.Unlock()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(conn)
		if string(b) != "from host" {
			t.Errorf("forwarded %q", b)
		}
	})
}
