package enginetest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Forwarder passes TCP connections from its own address to a server's until it is cut, so that a
// test can make an engine unreachable (a network partition, an engine that went away) and bring it
// back on the same address. It counts the bytes the server sends, so that a program (the
// benchmark) can tell how much went through a server.
type Forwarder struct {
	t      testing.TB // nil for a program's (Listen)
	target string
	served atomic.Int64
	mu     sync.Mutex
	addr   string // where it listens; fixed by the first Start
	l      net.Listener
	conns  []net.Conn
}

// Forward starts a forwarder to target (host:port) on a free loopback port; it is cut when the test
// ends.
func Forward(t testing.TB, target string) *Forwarder {
	f, err := Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	f.t = t
	t.Cleanup(f.Cut)
	return f
}

// Listen is Forward for a program: the caller cuts the forwarder when it is done.
func Listen(target string) (*Forwarder, error) {
	f := &Forwarder{target: target, addr: "127.0.0.1:0"}
	return f, f.start()
}

// Served is how many bytes the server has sent through the forwarder so far.
func (f *Forwarder) Served() int64 { return f.served.Load() }

// Addr is the forwarder's host:port.
func (f *Forwarder) Addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr
}

// Start listens again, on the same address, after a Cut, and forwards every connection; it fails
// the test that made the forwarder (Forward) if it cannot.
func (f *Forwarder) Start() {
	if err := f.start(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *Forwarder) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
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
			go func() { io.Copy(counter{c, &f.served}, s); c.Close() }()
		}
	}()
	return nil
}

// counter is a writer that counts what it writes.
type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
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
