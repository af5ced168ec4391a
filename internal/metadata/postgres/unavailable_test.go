package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
)

// forwarder passes TCP connections from its address to the server's until it is cut.
type forwarder struct {
	t      *testing.T
	addr   string // where it listens
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
}

func (f *forwarder) start() {
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.l, f.addr = l, l.Addr().String()
	f.mu.Unlock()
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

// cut closes the listener and every connection: the database is unreachable.
func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.l.Close()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// A database that cannot be reached is metadata.ErrUnavailable (the registry answers 503 and
// /readyz fails), on reads and writes; once it is back, the store works again.
func TestUnavailable(t *testing.T) {
	dsn := enginetest.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{t: t, addr: "127.0.0.1:0", target: u.Host}
	f.start()
	t.Cleanup(f.cut)
	u.Host = f.addr
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	s := openAt(t, u.String())
	defer s.Close()
	m := fill(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	f.cut()
	for what, op := range map[string]func() error{
		"Ping":         func() error { return s.Ping(ctx) },
		"BlobSize":     func() error { _, err := s.BlobSize(ctx, "library/app", digest.FromString("config")); return err },
		"GetManifest":  func() error { _, err := s.GetManifest(ctx, "library/app", "latest"); return err },
		"Tags":         func() error { _, _, err := s.Tags(ctx, "library/app", metadata.Page{N: -1}); return err },
		"LinkBlob":     func() error { return s.LinkBlob(ctx, "library/app", digest.FromString("new"), 3) },
		"PutManifest":  func() error { return s.PutManifest(ctx, "library/app", m, "again") },
		"CreateUpload": func() error { return s.CreateUpload(ctx, "library/app", "upload-2") },
		"Account":      func() error { _, err := s.Account(ctx, "alice"); return err },
		"AcquireLease": func() error { _, err := s.AcquireLease(ctx, "purge", "me", time.Minute); return err },
	} {
		if err := op(); !errors.Is(err, metadata.ErrUnavailable) {
			t.Errorf("%s with the database unreachable: %v; want ErrUnavailable", what, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the calls took until the deadline")
	}

	f.start() // the same address again
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping once the database is back: %v", err)
	}
	check(t, s, m)
	if err := s.LinkBlob(ctx, "library/app", digest.FromString("new"), 3); err != nil {
		t.Errorf("LinkBlob once the database is back: %v", err)
	}
}
