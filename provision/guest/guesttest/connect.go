package guesttest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/provision/guest"
)

// Connect starts a guest and returns it with an envctl SSH client that
// has the guest's host key pinned; both end with the test.
func Connect(t testing.TB) (*Server, *guest.Client) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	user, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	srv := Start(t, Options{Authorized: user.PublicKey()})
	c, err := guest.Dial(context.Background(), guest.Config{Addr: srv.Addr, User: "root", Signer: user, HostKey: srv.HostKey.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return srv, c
}
