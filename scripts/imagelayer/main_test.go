package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRun: the layer is the same bytes from the same inputs, holds the user, its data
// directory and the binary, and refuses a CA bundle that holds no certificate.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bin := write("berth", "\x7fELF not really")
	ca := write("ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	mtime := time.Unix(1700000000, 0)
	layer := func(name string) []byte {
		out := filepath.Join(dir, name)
		if err := run(bin, ca, out, mtime); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := layer("a.tar")
	time.Sleep(10 * time.Millisecond) // a clock read anywhere would show now
	if b := layer("b.tar"); !bytes.Equal(a, b) {
		t.Fatal("two layers from the same inputs differ")
	}
	got := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: mtime %v", h.Name, h.ModTime)
		}
		got[h.Name] = h
	}
	for name, want := range map[string]struct {
		mode int64
		uid  int
	}{"usr/local/bin/berth": {0o755, 0}, "data/": {0o700, uid}, "etc/passwd": {0o644, 0}, "etc/ssl/certs/ca-certificates.crt": {0o644, 0}} {
		h := got[name]
		if h == nil || h.Mode != want.mode || h.Uid != want.uid || h.Gid != want.uid {
			t.Errorf("%s: %+v, want mode %o owner %d", name, h, want.mode, want.uid)
		}
	}

	notPEM := write("empty.crt", "")
	if err := run(bin, notPEM, filepath.Join(dir, "c.tar"), mtime); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("an empty CA bundle: %v", err)
	}
	if err := run(bin, filepath.Join(dir, "missing.crt"), filepath.Join(dir, "c.tar"), mtime); err == nil || !strings.Contains(err.Error(), "ca-certificates") {
		t.Errorf("a missing CA bundle: %v", err)
	}
}
