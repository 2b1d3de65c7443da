package guesttest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/provision/guest"
)

// Reply is what the fake shell answers to one command.
type Reply struct {
	Stdout, Stderr string
	Exit           int
}

// Handler answers one command; m holds the pattern's submatches.
type Handler func(cmd string, m []string) Reply

type rule struct {
	re *regexp.Regexp
	fn Handler
}

// Options configure a Server.
type Options struct {
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
	// HostKey is the server's host key; default a fresh ed25519 key.
	HostKey ssh.Signer
	// Authorized is the one client key accepted; nil accepts any key.
	Authorized ssh.PublicKey
}

// Server is an in-process SSH guest.
type Server struct {
	Addr    string
	HostKey ssh.Signer
	// Root is the guest's file system as SFTP and the default handlers see it.
	Root string

	l        net.Listener
	mu       sync.Mutex
	rules    []rule
	commands []string
	forwards map[string]string // requested "addr:port" → where the test can connect
	windows  [][2]int          // window-change requests: columns, rows
	conns    []*ssh.ServerConn
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New runs a server whose file system lives under root.
func New(opts Options, root string) (*Server, error) {
	hk := opts.HostKey
	if hk == nil {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		var err error
		if hk, err = ssh.NewSignerFromKey(priv); err != nil {
			return nil, err
		}
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if opts.Authorized == nil || bytes.Equal(k.Marshal(), opts.Authorized.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("key not authorized")
	}}
	cfg.AddHostKey(hk)
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: l.Addr().String(), HostKey: hk, Root: root, l: l, forwards: map[string]string{}}
	s.defaults()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c, cfg)
		}
	}()
	return s, nil
}

// Close stops the server and drops every connection.
func (s *Server) Close() {
	_ = s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// Handle answers commands matching the regular expression pattern. Later
// rules win over earlier ones and over the defaults.
func (s *Server) Handle(pattern string, fn Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = append(s.rules, rule{regexp.MustCompile(pattern), fn})
}

// Reply answers commands matching pattern with a fixed reply.
func (s *Server) Reply(pattern string, r Reply) {
	s.Handle(pattern, func(string, []string) Reply { return r })
}

// WindowChanges lists the window-change requests seen (columns, rows).
func (s *Server) WindowChanges() [][2]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.windows)
}

// Commands lists every command run so far, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Forward returns where the test can connect to a remote forward the
// client requested for addr ("127.0.0.1:5000"), or "".
func (s *Server) Forward(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forwards[addr]
}

// Path maps a guest path to the file under Root.
func (s *Server) Path(guestPath string) string {
	return filepath.Join(s.Root, filepath.FromSlash(strings.TrimPrefix(guestPath, "/")))
}

// ReadFile reads a file the client wrote into the guest.
func (s *Server) ReadFile(guestPath string) ([]byte, error) { return os.ReadFile(s.Path(guestPath)) }

// WriteFile puts a file into the guest's file system.
func (s *Server) WriteFile(guestPath string, data []byte) error {
	p := s.Path(guestPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o755)
}

// defaults are a few shell commands every test needs: sha256sum and cat on
// the guest's files, true, echo, and exit N.
func (s *Server) defaults() {
	s.Handle(`^sha256sum (.+)$`, func(_ string, m []string) Reply {
		var out bytes.Buffer
		exit := 0
		for _, f := range splitQuoted(m[1]) {
			b, err := s.ReadFile(f)
			if err != nil {
				exit = 1
				continue
			}
			sum := sha256.Sum256(b)
			fmt.Fprintf(&out, "%s  %s\n", hex.EncodeToString(sum[:]), f)
		}
		return Reply{Stdout: out.String(), Exit: exit}
	})
	s.Handle(`^cat (\S+)$`, func(_ string, m []string) Reply {
		b, err := s.ReadFile(m[1])
		if err != nil {
			return Reply{Stderr: "cat: " + m[1] + ": No such file or directory\n", Exit: 1}
		}
		return Reply{Stdout: string(b)}
	})
	s.Handle(`^mkdir -p (\S+)$`, func(_ string, m []string) Reply {
		if err := os.MkdirAll(s.Path(m[1]), 0o755); err != nil {
			return Reply{Stderr: err.Error() + "\n", Exit: 1}
		}
		return Reply{}
	})
	s.Reply(`^true$`, Reply{})
	s.Handle(`^echo (.*)$`, func(_ string, m []string) Reply { return Reply{Stdout: m[1] + "\n"} })
	s.Handle(`^(?:sh -c ')?exit (\d+)'?$`, func(_ string, m []string) Reply {
		n, _ := strconv.Atoi(m[1])
		return Reply{Stderr: "exiting " + m[1] + "\n", Exit: n}
	})
}

// splitQuoted splits a command line into words, honouring single quotes.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	in, have := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			in, have = !in, true
		case r == ' ' && !in:
			if have {
				out = append(out, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func (s *Server) run(cmd string) Reply {
	if nonce, cmds, ok := guest.SplitBatchScript(cmd); ok {
		// A batch answers every command as the rules do, framed.
		s.mu.Lock()
		s.commands = append(s.commands, cmd)
		s.mu.Unlock()
		var out strings.Builder
		for i, c := range cmds {
			r := s.run(c)
			out.WriteString(guest.FrameResult(nonce, i, guest.Result{Output: r.Stdout + r.Stderr, Exit: r.Exit}))
		}
		return Reply{Stdout: out.String()}
	}
	s.mu.Lock()
	s.commands = append(s.commands, cmd)
	rules := append([]rule(nil), s.rules...)
	s.mu.Unlock()
	for i := len(rules) - 1; i >= 0; i-- {
		if m := rules[i].re.FindStringSubmatch(cmd); m != nil {
			return rules[i].fn(cmd, m)
		}
	}
	return Reply{Stderr: "sh: " + cmd + ": command not found\n", Exit: 127}
}

func (s *Server) serve(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.conns = append(s.conns, sc)
	s.mu.Unlock()
	go s.globalRequests(sc, reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go s.session(ch, creqs)
	}
}

func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for r := range reqs {
		switch r.Type {
		case "exec":
			var p struct{ Cmd string }
			_ = ssh.Unmarshal(r.Payload, &p)
			_ = r.Reply(true, nil)
			// The command runs while the session's requests are still
			// read (a window change comes in while it runs).
			go func() {
				rep := s.run(p.Cmd)
				_, _ = io.WriteString(ch, rep.Stdout)
				_, _ = io.WriteString(ch.Stderr(), rep.Stderr)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(rep.Exit)}))
				_ = ch.Close()
			}()
		case "window-change":
			var p struct{ W, H, PW, PH uint32 }
			if ssh.Unmarshal(r.Payload, &p) == nil {
				s.mu.Lock()
				s.windows = append(s.windows, [2]int{int(p.W), int(p.H)})
				s.mu.Unlock()
			}
			if r.WantReply {
				_ = r.Reply(true, nil)
			}
		case "subsystem":
			var p struct{ Name string }
			_ = ssh.Unmarshal(r.Payload, &p)
			if p.Name != "sftp" {
				_ = r.Reply(false, nil)
				continue
			}
			_ = r.Reply(true, nil)
			root, err := os.OpenRoot(s.Root)
			if err != nil {
				return
			}
			srv := sftp.NewRequestServer(ch, rootHandlers(root))
			_ = srv.Serve()
			_ = root.Close()
			return
		case "pty-req", "env":
			_ = r.Reply(true, nil)
		default:
			_ = r.Reply(false, nil)
		}
	}
}

func (s *Server) globalRequests(sc *ssh.ServerConn, reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case "tcpip-forward":
			var req struct {
				Addr string
				Port uint32
			}
			_ = ssh.Unmarshal(r.Payload, &req)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				_ = r.Reply(false, nil)
				continue
			}
			s.mu.Lock()
			s.forwards[net.JoinHostPort(req.Addr, strconv.Itoa(int(req.Port)))] = l.Addr().String()
			s.mu.Unlock()
			_ = r.Reply(true, ssh.Marshal(struct{ Port uint32 }{req.Port}))
			go forward(sc, l, req.Addr, req.Port)
		case "keepalive@openssh.com":
			_ = r.Reply(true, nil)
		default:
			_ = r.Reply(false, nil)
		}
	}
}

func forward(sc *ssh.ServerConn, l net.Listener, addr string, port uint32) {
	go func() {
		_ = sc.Wait()
		_ = l.Close()
	}()
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
		}{addr, port, "127.0.0.1", 1})
		ch, creqs, err := sc.OpenChannel("forwarded-tcpip", payload)
		if err != nil {
			_ = conn.Close()
			continue
		}
		go ssh.DiscardRequests(creqs)
		go func() { _, _ = io.Copy(ch, conn); _ = ch.CloseWrite() }()
		go func() { _, _ = io.Copy(conn, ch); _ = conn.Close() }()
	}
}
