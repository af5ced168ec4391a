// Package certs obtains and renews berth's TLS certificates from an ACME directory (Let's
// Encrypt, or a private CA) with golang.org/x/crypto/acme/autocert. Everything autocert keeps
// (the account key, the certificates with their keys, the challenges' tokens) lives in the
// metadata store: replicas sharing the store serve the same certificates, and any of them
// answers a challenge that another one's order started, whichever the CA's connection reaches.
package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/berth/berth/internal/metadata"
)

// Store is what the cache keeps its entries in: named settings, and the leases that let one
// replica at a time order a given certificate.
type Store interface {
	Setting(ctx context.Context, key string) ([]byte, error)
	SetSetting(ctx context.Context, key string, value []byte) error
	CreateSetting(ctx context.Context, key string, value []byte) error
	Settings(ctx context.Context, prefix string) (map[string][]byte, error)
	DeleteSetting(ctx context.Context, key string) error
	metadata.Leases
}

// Sealer encrypts secrets under the key-encryption key (package crypt's Keyring implements it,
// as for the token signing keys). Without one, entries are stored as they are.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// Prefix starts the key of every setting the cache writes.
const Prefix = "acme/"

// orderLease is how long a replica may order a certificate before another one may start (it
// gives the lease up when it stores the certificate). An order takes seconds; a replica that
// died in one holds the others back this long at most.
const orderLease = 5 * time.Minute

// maxRenewBefore is autocert's own bound: it renews at most 30 days ahead.
const maxRenewBefore = 30 * 24 * time.Hour

// Cache is an autocert.Cache in the metadata store, under Prefix and the directory (a switch
// from a staging CA to production does not serve the staging certificates), with the values
// sealed when there is a Sealer.
//
// It also makes the replicas take turns ordering a certificate. autocert reads a certificate's
// entry right before it orders one (the first time, when the read misses, and at renewal, when
// the certificate read is due): that read takes the certificate's lease. The replica that gets
// it is answered as autocert asked (and orders); the others wait until the certificate the
// holder stores appears, or until the lease is free again (the holder failed or died). The
// holder gives the lease up when it stores the certificate. So one order per certificate, not
// one per replica: Let's Encrypt allows 5 certificates a week for the same set of names.
type Cache struct {
	store       Store
	sealer      Sealer
	prefix      string
	holder      string
	renewBefore time.Duration
	log         *slog.Logger

	// Test seams: the clock, how often a waiting replica looks again, how long a replica without
	// the certificate waits for another's order before its handshake fails. (autocert makes that
	// first read under a lock every handshake takes: the wait is short, and happens only while
	// the replicas have no certificate at all.)
	now      func() time.Time
	poll     time.Duration
	missWait time.Duration

	mu sync.Mutex
	// read holds the certificate keys this process has read a valid certificate of. autocert
	// reads a certificate the first time under a lock that every handshake takes (so the read
	// must not wait for another replica's renewal: the certificate read is valid, serve it),
	// and afterwards only to renew it (then a due certificate waits for the lease).
	read map[string]bool
	// holding holds the certificate keys whose lease this process took and has not given up.
	holding map[string]bool
	// expiry is the NotAfter of the certificate last read or stored per certificate key: what
	// autocert serves (it takes its certificates from the cache's answers and what it puts).
	expiry map[string]time.Time
}

// noteExpiry records the certificate of key's entry as the one served.
func (c *Cache) noteExpiry(key string, data []byte) {
	if l := leaf(data); l != nil {
		c.mu.Lock()
		c.expiry[key] = l.NotAfter
		c.mu.Unlock()
	}
}

// Expiry returns when each certificate this process serves expires, by autocert's key (the
// domain; "+rsa" after it for the RSA certificate of clients without ECDSA): for a metric to
// alert on when renewals fail.
func (c *Cache) Expiry() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.expiry)
}

// NewCache is the cache for directory's entries in store. holder names this process among the
// replicas; renewBefore is autocert.Manager's RenewBefore (0: a third of the lifetime).
func NewCache(store Store, sealer Sealer, directory, holder string, renewBefore time.Duration, log *slog.Logger) *Cache {
	return &Cache{
		store: store, sealer: sealer, prefix: Prefix + directoryName(directory) + "/", holder: holder,
		renewBefore: renewBefore, log: log,
		now: time.Now, poll: time.Second, missWait: 30 * time.Second,
		read: map[string]bool{}, holding: map[string]bool{}, expiry: map[string]time.Time{},
	}
}

// directoryName is the directory URL without its scheme: readable in a listing of settings.
func directoryName(directory string) string {
	if u, err := url.Parse(directory); err == nil && u.Host != "" {
		return strings.TrimSuffix(u.Host+u.Path, "/")
	}
	return directory
}

// isCertificate tells autocert's certificate entries ("example.com", "example.com+rsa") from
// its account key ("acme_account+key") and challenge tokens ("example.com+token" for TLS-ALPN-01,
// "<token>+http-01").
func isCertificate(key string) bool {
	return !strings.HasPrefix(key, "acme_account") && !strings.HasSuffix(key, "+token") && !strings.HasSuffix(key, "+http-01")
}

// Get implements autocert.Cache.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.load(ctx, key)
	if !isCertificate(key) || err != nil && !errors.Is(err, autocert.ErrCacheMiss) {
		return data, err
	}
	if err == nil && c.valid(data) {
		c.mu.Lock()
		first := !c.read[key]
		c.read[key] = true
		c.mu.Unlock()
		if first || !c.due(data) {
			c.noteExpiry(key, data)
			return data, nil
		}
		return c.turn(ctx, key, data, 0) // a renewal: it may wait as long as autocert lets it
	}
	// None, or expired: autocert orders one at the first handshake, which waits for it.
	return c.turn(ctx, key, nil, c.missWait)
}

// turn answers the read that precedes an order of key's certificate: with current (ErrCacheMiss
// when nil), so that autocert orders, once this replica holds the certificate's lease; with the
// certificate another replica stored meanwhile; or, after limit (0: none) or when ctx ends,
// with an error, so that nothing is ordered.
func (c *Cache) turn(ctx context.Context, key string, current []byte, limit time.Duration) ([]byte, error) {
	var deadline <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		deadline = t.C
	}
	waiting := false
	for {
		got, err := c.store.AcquireLease(ctx, c.prefix+key, c.holder, orderLease)
		if err != nil {
			return nil, fmt.Errorf("acme: taking the lease to order the certificate for %s: %w", key, err)
		}
		// Without a certificate, any valid one will do (a due one is renewed after); at renewal,
		// only one that is not due.
		if fresh, ok := c.fresh(ctx, key, current == nil); ok {
			if got {
				c.release(key) // stored between the read and the lease
			}
			if waiting {
				c.log.Info("tls.acme: using the certificate another replica obtained", "key", key)
			}
			return fresh, nil
		}
		if got {
			c.mu.Lock()
			again := c.holding[key]
			c.holding[key] = true
			c.mu.Unlock()
			if !again { // autocert may read again before it orders (its renewal timer's random delay)
				c.log.Info("tls.acme: this replica orders the certificate", "key", key, "renewal", current != nil)
			}
			if current == nil {
				return nil, autocert.ErrCacheMiss
			}
			return current, nil
		}
		if !waiting {
			c.log.Info("tls.acme: another replica orders the certificate; waiting for it", "key", key, "renewal", current != nil)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("acme: another replica is obtaining the certificate for %s; try again shortly", key)
		case <-time.After(c.poll):
		}
	}
}

// fresh returns key's certificate if the store has one that is valid, and not due unless
// dueToo.
func (c *Cache) fresh(ctx context.Context, key string, dueToo bool) ([]byte, bool) {
	data, err := c.load(ctx, key)
	if err != nil || !c.valid(data) || !dueToo && c.due(data) {
		return nil, false
	}
	c.mu.Lock()
	c.read[key] = true
	c.mu.Unlock()
	c.noteExpiry(key, data)
	return data, true
}

// leaf is the first certificate of an entry autocert wrote (its private key, then its chain).
func leaf(data []byte) *x509.Certificate {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return cert
		}
	}
}

// valid: the entry holds a certificate that has not expired. (autocert checks the rest, and
// treats anything else as missing.)
func (c *Cache) valid(data []byte) bool {
	l := leaf(data)
	return l != nil && c.now().Before(l.NotAfter)
}

// due reports whether autocert may renew the entry's certificate now: its renewal timer fires
// at NotAfter - threshold plus a random delay of up to a tenth of threshold, threshold being
// RenewBefore or a third of the lifetime, at most 30 days (autocert's renewal.go).
func (c *Cache) due(data []byte) bool {
	l := leaf(data)
	if l == nil {
		return true
	}
	threshold := min(l.NotAfter.Sub(l.NotBefore)/3, maxRenewBefore)
	if c.renewBefore > 0 {
		threshold = min(c.renewBefore, maxRenewBefore)
	}
	return !c.now().Before(l.NotAfter.Add(-threshold))
}

// Put implements autocert.Cache. Storing a certificate ends this replica's turn to order it.
func (c *Cache) Put(ctx context.Context, key string, data []byte) error {
	enc, err := c.encode(key, data)
	if err != nil {
		return err
	}
	if strings.HasPrefix(key, "acme_account") {
		// Two replicas starting at once both make an account key: one is kept, and the other
		// replica's order fails now and uses the kept key on its next try, so that the replicas
		// are one account.
		if err := c.store.CreateSetting(ctx, c.prefix+key, enc); errors.Is(err, metadata.ErrExists) {
			return fmt.Errorf("acme: another replica created the ACME account key first; it is used from the next try on")
		} else if err != nil {
			return err
		}
		return nil
	}
	if err := c.store.SetSetting(ctx, c.prefix+key, enc); err != nil {
		return err
	}
	if isCertificate(key) {
		c.mu.Lock()
		c.read[key] = true
		c.mu.Unlock()
		c.noteExpiry(key, data)
		c.release(key)
	}
	return nil
}

func (c *Cache) release(key string) {
	c.mu.Lock()
	delete(c.holding, key)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.store.ReleaseLease(ctx, c.prefix+key, c.holder); err != nil {
		c.log.Warn("tls.acme: giving up the lease of an order (another replica takes it when it expires)", "key", key, "err", err)
	}
}

// Delete implements autocert.Cache.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.store.DeleteSetting(ctx, c.prefix+key); err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return err
	}
	return nil
}

// load reads and opens key's entry; autocert.ErrCacheMiss when there is none. An entry stored
// in the clear while there is a sealer now, or sealed under a key being rotated out, is sealed
// again under the current key.
func (c *Cache) load(ctx context.Context, key string) ([]byte, error) {
	raw, err := c.store.Setting(ctx, c.prefix+key)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, autocert.ErrCacheMiss
	} else if err != nil {
		return nil, err
	}
	data, reseal, err := decode(c.prefix+key, raw, c.sealer)
	if err != nil {
		return nil, err
	}
	if reseal {
		if enc, err := c.encode(key, data); err == nil {
			if err := c.store.SetSetting(ctx, c.prefix+key, enc); err != nil {
				c.log.Warn("tls.acme: sealing an entry under the current encryption key", "key", key, "err", err)
			}
		}
	}
	return data, nil
}

// entry is how a value is stored: sealed (with the setting's key as associated data, so that a
// sealed value copied under another key does not open) when there is a sealer.
type entry struct {
	Sealed bool   `json:"sealed"`
	Value  []byte `json:"value"`
}

func aad(settingKey string) []byte { return []byte("berth acme cache " + settingKey) }

func (c *Cache) encode(key string, data []byte) ([]byte, error) {
	return encode(c.prefix+key, data, c.sealer)
}

func encode(settingKey string, data []byte, sealer Sealer) ([]byte, error) {
	e := entry{Value: data}
	if sealer != nil {
		sealed, err := sealer.Seal(data, aad(settingKey))
		if err != nil {
			return nil, fmt.Errorf("acme: sealing %s: %w", settingKey, err)
		}
		e = entry{Sealed: true, Value: sealed}
	}
	return json.Marshal(e)
}

func decode(settingKey string, raw []byte, sealer Sealer) (data []byte, reseal bool, err error) {
	var e entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, false, fmt.Errorf("acme: setting %s: %w", settingKey, err)
	}
	if !e.Sealed {
		return e.Value, sealer != nil, nil
	}
	if sealer == nil {
		return nil, false, fmt.Errorf("acme: %s is sealed with an encryption key, and none is configured (encryption.key_file)", settingKey)
	}
	data, err = sealer.Open(e.Value, aad(settingKey))
	if err != nil {
		return nil, false, fmt.Errorf("acme: %s: %w", settingKey, err)
	}
	if cur, ok := sealer.(interface{ Current(sealed []byte) bool }); ok && !cur.Current(e.Value) {
		reseal = true
	}
	return data, reseal, nil
}

// Reseal seals every ACME entry in store under sealer's current key (berth encryption rotate,
// or encryption turned on), and reports how many it rewrote.
func Reseal(ctx context.Context, store Store, sealer Sealer) (int, error) {
	all, err := store.Settings(ctx, Prefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, raw := range all {
		data, reseal, err := decode(k, raw, sealer)
		if err != nil {
			return n, err
		}
		if !reseal {
			continue
		}
		enc, err := encode(k, data, sealer)
		if err != nil {
			return n, err
		}
		if err := store.SetSetting(ctx, k, enc); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
