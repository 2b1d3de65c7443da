package guest

import (
	"fmt"
	"io"
	"net"
	"sync"
)

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
