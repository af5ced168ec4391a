package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/metadata/sqlite"
)

const directory = "https://ca.example/dir"

func openStore(t *testing.T) Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func keyring(t *testing.T) *crypt.Keyring {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if _, err := crypt.GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	k, err := crypt.LoadKeyring(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCache(st Store, sealer Sealer, holder string) *Cache {
	c := NewCache(st, sealer, directory, holder, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.poll = 10 * time.Millisecond
	return c
}

// entryFor is a certificate entry as autocert writes it (its EC key, then the certificate),
// valid from notBefore to notAfter.
func entryFor(t *testing.T, domain string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return b.Bytes()
}

// TestCacheEntries: what autocert stores comes back; a missing entry is autocert's miss; with
// a keyring the entries are sealed at rest (no key material readable in the store), bound to
// their key, and a store sealed without the key configured says so.
func TestCacheEntries(t *testing.T) {
	ctx := context.Background()
	for _, sealed := range []bool{false, true} {
		t.Run(map[bool]string{false: "clear", true: "sealed"}[sealed], func(t *testing.T) {
			st := openStore(t)
			var sealer Sealer
			if sealed {
				sealer = keyring(t)
			}
			c := newCache(st, sealer, "a")
			cert := entryFor(t, "registry.example.com", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
			for key, value := range map[string][]byte{
				"acme_account+key":           []byte("-----BEGIN EC PRIVATE KEY-----\naccount\n"),
				"registry.example.com":       cert,
				"registry.example.com+token": []byte("-----BEGIN EC PRIVATE KEY-----\ntoken\n"),
				"tok3n+http-01":              []byte("tok3n.thumbprint"),
			} {
				if _, err := c.Get(ctx, key); !errors.Is(err, autocert.ErrCacheMiss) && key != "registry.example.com" {
					t.Fatalf("Get(%s) before Put = %v, want ErrCacheMiss", key, err)
				}
				if err := c.Put(ctx, key, value); err != nil {
					t.Fatalf("Put(%s): %v", key, err)
				}
				got, err := c.Get(ctx, key)
				if err != nil || !bytes.Equal(got, value) {
					t.Fatalf("Get(%s) = %q, %v; want what was put", key, got, err)
				}
				raw, err := st.Setting(ctx, "acme/ca.example/dir/"+key)
				if err != nil {
					t.Fatalf("the setting of %s: %v", key, err)
				}
				if clear := bytes.Contains(raw, value) || strings.Contains(string(raw), base64.StdEncoding.EncodeToString(value)); clear == sealed {
					t.Errorf("sealed %v, but the stored %s is in the clear: %v (%s)", sealed, key, clear, raw)
				}
			}
			if err := c.Delete(ctx, "tok3n+http-01"); err != nil {
				t.Fatal(err)
			}
			if err := c.Delete(ctx, "tok3n+http-01"); err != nil {
				t.Fatalf("deleting a missing entry: %v", err)
			}
			if _, err := c.Get(ctx, "tok3n+http-01"); !errors.Is(err, autocert.ErrCacheMiss) {
				t.Fatalf("Get after Delete = %v, want ErrCacheMiss", err)
			}
			if !sealed {
				return
			}
			if _, err := newCache(st, nil, "a").Get(ctx, "acme_account+key"); err == nil || !strings.Contains(err.Error(), "encryption.key_file") {
				t.Fatalf("reading sealed entries without the key: %v, want an error naming encryption.key_file", err)
			}
			// A sealed value moved under another key does not open.
			raw, _ := st.Setting(ctx, "acme/ca.example/dir/acme_account+key")
			st.SetSetting(ctx, "acme/ca.example/dir/registry.example.com+token", raw)
			if _, err := c.Get(ctx, "registry.example.com+token"); err == nil {
				t.Fatal("a sealed entry copied under another key opened")
			}
		})
	}
}

// TestCacheResealed: entries stored in the clear are sealed once encryption is turned on, by
// Reseal (berth encryption rotate) and by reading them.
func TestCacheResealed(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clear := newCache(st, nil, "a")
	clear.Put(ctx, "acme_account+key", []byte("account key"))
	clear.Put(ctx, "x+token", []byte("token cert"))
	k := keyring(t)
	if _, err := newCache(st, k, "a").Get(ctx, "x+token"); err != nil {
		t.Fatal(err)
	}
	n, err := Reseal(ctx, st, k)
	if err != nil || n != 1 {
		t.Fatalf("Reseal = %d, %v; want the 1 entry not read since", n, err)
	}
	all, _ := st.Settings(ctx, Prefix)
	for key, raw := range all {
		if !bytes.Contains(raw, []byte(`"sealed":true`)) {
			t.Errorf("%s is not sealed: %s", key, raw)
		}
	}
	if n, err := Reseal(ctx, st, k); err != nil || n != 0 {
		t.Fatalf("Reseal again = %d, %v; want 0", n, err)
	}
}

// TestCacheAccountKeyOnce: two replicas making the account key at once keep one.
func TestCacheAccountKeyOnce(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, b := newCache(st, nil, "a"), newCache(st, nil, "b")
	if err := a.Put(ctx, "acme_account+key", []byte("a's key")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "acme_account+key", []byte("b's key")); err == nil {
		t.Fatal("a second account key replaced the first")
	}
	if got, _ := b.Get(ctx, "acme_account+key"); string(got) != "a's key" {
		t.Fatalf("b reads %q, want a's key", got)
	}
}

// TestCacheOneOrder: of two replicas without the certificate, one is told to order it (a miss)
// and the other waits for it, then reads what the first stored; when the first never stores
// it, the other's handshake fails after its wait rather than ordering a second certificate.
func TestCacheOneOrder(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, b := newCache(st, nil, "a"), newCache(st, nil, "b")
	const domain = "registry.example.com"
	if _, err := a.Get(ctx, domain); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("the first replica's read = %v, want ErrCacheMiss (it orders)", err)
	}
	got := make(chan error, 1)
	var read []byte
	go func() {
		var err error
		read, err = b.Get(ctx, domain)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the second replica's read returned (%v) while the first is ordering", err)
	case <-time.After(100 * time.Millisecond):
	}
	cert := entryFor(t, domain, time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour))
	if err := a.Put(ctx, domain, cert); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil || !bytes.Equal(read, cert) {
		t.Fatalf("the second replica's read = %v; want the certificate the first stored", err)
	}

	// Another domain whose order never ends: the waiting replica gives up, without a miss.
	const other = "mirror.example.com"
	if _, err := a.Get(ctx, other); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatal(err)
	}
	b.missWait = 50 * time.Millisecond
	if _, err := b.Get(ctx, other); err == nil || errors.Is(err, autocert.ErrCacheMiss) || !strings.Contains(err.Error(), "another replica") {
		t.Fatalf("waiting for an order that does not end: %v, want an error that is not a miss", err)
	}
	// The holder's own reads go on getting the miss (it orders again after a failure).
	if _, err := a.Get(ctx, other); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("the holder's next read = %v, want ErrCacheMiss", err)
	}
}

// TestCacheOneRenewal: a due certificate is served as it is on its first read (a process
// starting), and at renewal (the next reads) one replica gets it back, to renew, while the
// other waits for the renewed certificate instead of renewing too.
func TestCacheOneRenewal(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, b := newCache(st, nil, "a"), newCache(st, nil, "b")
	const domain = "registry.example.com"
	// A third of its 3 h lifetime is left: due.
	old := entryFor(t, domain, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
	if err := st.SetSetting(ctx, "acme/ca.example/dir/"+domain, mustEncode(t, domain, old)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Cache{a, b} {
		if got, err := c.Get(ctx, domain); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("%s's first read of a due certificate = %v; want it served as it is", c.holder, err)
		}
	}
	if got, err := a.Get(ctx, domain); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("a's renewal read = %v, want the due certificate (a renews)", err)
	}
	got := make(chan []byte, 1)
	go func() {
		data, err := b.Get(ctx, domain)
		if err != nil {
			t.Error(err)
		}
		got <- data
	}()
	select {
	case <-got:
		t.Fatal("b's renewal read returned while a renews")
	case <-time.After(100 * time.Millisecond):
	}
	renewed := entryFor(t, domain, time.Now().Add(-time.Minute), time.Now().Add(3*time.Hour))
	if err := a.Put(ctx, domain, renewed); err != nil {
		t.Fatal(err)
	}
	if data := <-got; !bytes.Equal(data, renewed) {
		t.Fatal("b did not get the certificate a renewed")
	}
	// Not due: served without a lease.
	if got, err := b.Get(ctx, domain); err != nil || !bytes.Equal(got, renewed) {
		t.Fatalf("b's next read = %v", err)
	}
	// Both serve the renewed certificate, and say when it expires.
	for _, c := range []*Cache{a, b} {
		if got, want := c.Expiry()[domain], leaf(renewed).NotAfter; !got.Equal(want) {
			t.Errorf("%s's Expiry = %v, want the renewed certificate's %v", c.holder, got, want)
		}
	}

	// An expired certificate is not served: it is ordered again, by one replica.
	expired := entryFor(t, "old.example.com", time.Now().Add(-3*time.Hour), time.Now().Add(-time.Hour))
	st.SetSetting(ctx, "acme/ca.example/dir/old.example.com", mustEncode(t, "old.example.com", expired))
	if _, err := a.Get(ctx, "old.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("an expired certificate's first read = %v, want ErrCacheMiss", err)
	}
}

func mustEncode(t *testing.T, key string, data []byte) []byte {
	t.Helper()
	b, err := encode("acme/ca.example/dir/"+key, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
