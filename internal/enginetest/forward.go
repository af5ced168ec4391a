package enginetest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Forwarder passes TCP connections from its own address to a server's until it is cut, so that a
// test can make an engine unreachable (a network partition, an engine that went away) and bring it
// back on the same address.
type Forwarder struct {
	t      testing.TB
	target string
	mu     sync.Mutex
	addr   string // where it listens; fixed by the first Start
	l      net.Listener
	conns  []net.Conn
}

// Forward starts a forwarder to target (host:port) on a free loopback port; it is cut when the test
// ends.
func Forward(t testing.TB, target string) *Forwarder {
	f := &Forwarder{t: t, target: target, addr: "127.0.0.1:0"}
	f.Start()
	t.Cleanup(f.Cut)
	return f
}

// Addr is the forwarder's host:port.
func (f *Forwarder) Addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr
}

// Start listens (again, on the same address after a Cut) and forwards every connection.
func (f *Forwarder) Start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.l, f.addr = l, l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
}

// Cut closes the listener and every connection: the server is unreachable.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.l != nil {
		f.l.Close()
		f.l = nil
	}
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}
