package ociartifact

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Timeouts holds every wait on a registry: a registry that accepts a
// connection and then says nothing ends a pull within these, whatever the
// caller's context allows.
type Timeouts struct {
	// Dial bounds the TCP connect, TLS the handshake.
	Dial, TLS time.Duration
	// Header bounds the wait for a response's headers after the request.
	Header time.Duration
	// Idle bounds the wait for each next byte of a body.
	Idle time.Duration
}

// DefaultTimeouts are the registry timeouts envctl uses.
var DefaultTimeouts = Timeouts{Dial: 15 * time.Second, TLS: 15 * time.Second, Header: 30 * time.Second, Idle: 60 * time.Second}

// timeouts is what registryTransport uses; tests shorten it.
var timeouts = DefaultTimeouts

// registryTransport is the HTTP transport for registries: proxy settings
// as Go's default, every wait bounded by timeouts, and manifests capped at
// MaxManifestBytes.
func registryTransport() http.RoundTripper {
	t := timeouts
	d := &net.Dialer{Timeout: t.Dial, KeepAlive: 30 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, idle: t.Idle}, nil
	}
	tr.TLSHandshakeTimeout = t.TLS
	tr.ResponseHeaderTimeout = t.Header
	tr.IdleConnTimeout = t.Idle
	return manifestCap{tr}
}

// idleConn fails a read or a write that makes no progress for idle.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// manifestCap bounds every manifest a registry sends: go-containerregistry
// would read up to 100 MiB into memory.
type manifestCap struct{ next http.RoundTripper }

func (m manifestCap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := m.next.RoundTrip(req)
	if err != nil || !strings.Contains(req.URL.Path, "/manifests/") {
		return resp, err
	}
	if resp.ContentLength > MaxManifestBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: the manifest has %d bytes, more than envctl reads (%d)", req.URL.Redacted(), resp.ContentLength, MaxManifestBytes)
	}
	resp.Body = cappedBody{Reader: &boundedReader{r: resp.Body, n: MaxManifestBytes}, Closer: resp.Body}
	return resp, nil
}

type cappedBody struct {
	io.Reader
	io.Closer
}
