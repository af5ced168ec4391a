package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/berth/berth/internal/metadata"
)

// allAlgs lets tests parse any token to look inside it.
var allAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.PS256, jose.EdDSA}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, allAlgs)
	if err != nil {
		t.Fatalf("ParseSigned: %v", err)
	}
	return tok.Headers[0].KeyID
}

// currentKey is the registry's signing key, read from the store as another replica would.
func currentKey(t *testing.T, acc metadata.Accounts) *signingKey {
	t.Helper()
	keys, err := loadKeys(bg, acc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return current(keys)
}

// sign makes a JWT of claims signed with key by alg; kid "" leaves the kid out.
func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("NewSigner(%s): %v", alg, err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// claimsFor are the claims berth would issue for sub with access (with the ID of sub's account
// in st, when it has one).
func claimsFor(st metadata.Accounts, sub string, access ...access) tokenClaims {
	now := time.Now()
	var id string
	if _, name, ok := strings.Cut(sub, ":"); ok {
		if a, err := st.Account(bg, name); err == nil {
			id = a.ID
		}
	}
	return tokenClaims{Claims: jwt.Claims{
		Issuer: "berth", Subject: sub, Audience: jwt.Audience{"berth"},
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
		IssuedAt: jwt.NewNumericDate(now), ID: "test",
	}, Access: access, Account: id}
}

func pullAccess(name string) access {
	return access{Type: "repository", Name: name, Actions: []string{"pull"}}
}

// b64json encodes v as a JWT segment.
func b64json(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tamper rewrites a token's payload with edit, keeping its header and signature.
func tamper(t *testing.T, raw string, edit func(m map[string]any)) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	parts[1] = b64json(t, m)
	return strings.Join(parts, ".")
}

// wantInvalidToken checks that a token is refused as invalid, with a challenge to get another.
func wantInvalidToken(t *testing.T, e *env, what, tok string) {
	t.Helper()
	r := e.check(t, bearer(tok), "team/a", "", "pull")
	wantStatus(t, what, r, 401, "UNAUTHORIZED")
	if r.status == 401 {
		if c := challengeParams(t, r.header.Get("WWW-Authenticate")); c["error"] != "invalid_token" || c["scope"] != "repository:team/a:pull" {
			t.Errorf("%s: challenge %v, want error=invalid_token with the scope", what, c)
		}
	}
	if _, err := e.svc.tokens.verify(bg, tok); !errors.Is(err, errInvalidToken) {
		t.Errorf("%s: verify: %v, want errInvalidToken", what, err)
	}
}

func TestTokenAttacks(t *testing.T) {
	e := newEnv(t, Options{})
	secret := e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/a", "pull")
	e.grant(t, "user:admin", "*", "admin")
	real := e.token(t, basic("ci", secret), "repository:team/a:pull")
	wantStatus(t, "the real token", e.check(t, bearer(real), "team/a", "", "pull"), 200, "")
	key := currentKey(t, e.st)

	// Crafting with the registry's own key works: the checks below fail for the reason they name.
	forged := sign(t, jose.ES256, key.priv, key.ID, claimsFor(e.st, "robot:ci", pullAccess("team/a")))
	wantStatus(t, "a token signed with the real key", e.check(t, bearer(forged), "team/a", "", "pull"), 200, "")

	t.Run("tampered payload", func(t *testing.T) {
		wantInvalidToken(t, e, "more actions", tamper(t, real, func(m map[string]any) {
			m["access"] = []any{map[string]any{"type": "repository", "name": "team/a", "actions": []string{"pull", "push", "delete"}}}
		}))
		wantInvalidToken(t, e, "another subject", tamper(t, real, func(m map[string]any) { m["sub"] = "user:admin" }))
		wantInvalidToken(t, e, "later expiry", tamper(t, real, func(m map[string]any) { m["exp"] = time.Now().Add(time.Hour).Unix() }))
		parts := strings.Split(real, ".")
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[0] ^= 1
		wantInvalidToken(t, e, "flipped signature bit", parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))
		wantInvalidToken(t, e, "no signature", parts[0]+"."+parts[1]+".")
		wantInvalidToken(t, e, "signature of another token", parts[0]+"."+parts[1]+"."+strings.Split(forged, ".")[2])
	})

	t.Run("alg none", func(t *testing.T) {
		c := claimsFor(e.st, "user:admin", pullAccess("team/a"))
		for _, alg := range []string{"none", "None", "NONE"} {
			h := b64json(t, map[string]string{"alg": alg, "typ": "JWT", "kid": key.ID})
			p := b64json(t, c)
			wantInvalidToken(t, e, "alg "+alg, h+"."+p+".")
			wantInvalidToken(t, e, "alg "+alg+" with the real signature", h+"."+p+"."+strings.Split(real, ".")[2])
		}
	})

	t.Run("HS256 with the public key", func(t *testing.T) {
		der, err := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		point, err := key.priv.PublicKey.ECDH()
		if err != nil {
			t.Fatal(err)
		}
		uncompressed := point.Bytes()
		for name, secret := range map[string][]byte{"DER": der, "PEM": pemKey, "point": uncompressed} {
			for _, alg := range []jose.SignatureAlgorithm{jose.HS256, jose.HS512} {
				wantInvalidToken(t, e, string(alg)+" keyed with the "+name+" public key",
					sign(t, alg, secret, key.ID, claimsFor(e.st, "user:admin", pullAccess("team/a"))))
			}
		}
	})

	t.Run("another key", func(t *testing.T) {
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c := claimsFor(e.st, "robot:ci", pullAccess("team/a"))
		wantInvalidToken(t, e, "another ES256 key with the real kid", sign(t, jose.ES256, other, key.ID, c))
		wantInvalidToken(t, e, "another ES256 key with its own kid", sign(t, jose.ES256, other, "attacker", c))
		wantInvalidToken(t, e, "the real key without a kid", sign(t, jose.ES256, key.priv, "", c))
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		wantInvalidToken(t, e, "ES384", sign(t, jose.ES384, p384, key.ID, c))
	})

	t.Run("claims", func(t *testing.T) {
		now := time.Now()
		for _, c := range []struct {
			what string
			edit func(c *tokenClaims)
		}{
			{"expired an hour ago", func(c *tokenClaims) {
				c.Expiry, c.IssuedAt = jwt.NewNumericDate(now.Add(-time.Hour)), jwt.NewNumericDate(now.Add(-2*time.Hour))
				c.NotBefore = c.IssuedAt
			}},
			{"expired beyond the leeway", func(c *tokenClaims) { c.Expiry = jwt.NewNumericDate(now.Add(-2 * clockLeeway)) }},
			{"not valid yet", func(c *tokenClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }},
			{"issued in the future", func(c *tokenClaims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour)) }},
			{"no expiry", func(c *tokenClaims) { c.Expiry = nil }},
			{"no subject", func(c *tokenClaims) { c.Subject = "" }},
			{"wrong audience", func(c *tokenClaims) { c.Audience = jwt.Audience{"other-registry"} }},
			{"no audience", func(c *tokenClaims) { c.Audience = nil }},
			{"wrong issuer", func(c *tokenClaims) { c.Issuer = "evil" }},
			{"no issuer", func(c *tokenClaims) { c.Issuer = "" }},
			{"unknown action", func(c *tokenClaims) {
				c.Access = []access{{Type: "repository", Name: "team/a", Actions: []string{"pull", "teleport"}}}
			}},
		} {
			cl := claimsFor(e.st, "robot:ci", pullAccess("team/a"))
			c.edit(&cl)
			wantInvalidToken(t, e, c.what, sign(t, jose.ES256, key.priv, key.ID, cl))
		}
		// Within the leeway for replicas' clocks: still good.
		cl := claimsFor(e.st, "robot:ci", pullAccess("team/a"))
		cl.Expiry = jwt.NewNumericDate(now.Add(-clockLeeway / 3))
		wantStatus(t, "expired within the leeway", e.check(t, bearer(sign(t, jose.ES256, key.priv, key.ID, cl)), "team/a", "", "pull"), 200, "")
		// Several audiences, one of them ours.
		cl = claimsFor(e.st, "robot:ci", pullAccess("team/a"))
		cl.Audience = jwt.Audience{"other", "berth"}
		wantStatus(t, "one of several audiences", e.check(t, bearer(sign(t, jose.ES256, key.priv, key.ID, cl)), "team/a", "", "pull"), 200, "")
	})

	t.Run("another service on the same keys", func(t *testing.T) {
		// A second registry on the same database with another service name: same keys, but
		// its tokens are not for us.
		other := newService(t, Options{Accounts: e.st, Service: "staging"})
		tok, err := other.tokens.issue(bg, "robot:ci", e.accountID(t, "ci"), Scope{Repos: map[string]Actions{"team/a": Pull}}, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if kidOf(t, tok) != key.ID {
			t.Fatalf("the other service signs with %s, not the shared %s", kidOf(t, tok), key.ID)
		}
		wantInvalidToken(t, e, "a token of another service", tok)
	})

	t.Run("size", func(t *testing.T) {
		big := claimsFor(e.st, "robot:ci", pullAccess("team/a"))
		for i := range 3000 {
			big.Access = append(big.Access, access{Type: "repository", Name: "pad/" + strings.Repeat("x", 10) + string(rune('a'+i%26)), Actions: []string{"pull"}})
		}
		tok := sign(t, jose.ES256, key.priv, key.ID, big)
		if len(tok) <= 64<<10 {
			t.Fatalf("token of %d bytes is not over the limit", len(tok))
		}
		wantInvalidToken(t, e, "a huge token", tok)
	})

	t.Run("garbage", func(t *testing.T) {
		for _, tok := range []string{"", "x", "a.b.c", "a.b", real + ".x", strings.Repeat(".", 5), "e30.e30.e30"} {
			if _, err := e.svc.tokens.verify(bg, tok); !errors.Is(err, errInvalidToken) {
				t.Errorf("verify(%q): %v, want errInvalidToken", tok, err)
			}
		}
		// Bearer with nothing after it.
		wantStatus(t, "empty Bearer", e.check(t, "Bearer", "team/a", "", "pull"), 401, "UNAUTHORIZED")
		wantStatus(t, "empty Bearer with a space", e.check(t, "Bearer ", "team/a", "", "pull"), 401, "UNAUTHORIZED")
	})
}

// The cache of verified tokens forgets nothing it should not: an expired cached token is refused.
func TestVerifiedCacheExpiry(t *testing.T) {
	e := newEnv(t, Options{})
	secret := e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/a", "pull")
	tok := e.token(t, basic("ci", secret), "repository:team/a:pull")
	wantStatus(t, "fresh token", e.check(t, bearer(tok), "team/a", "", "pull"), 200, "")
	e.svc.tokens.mu.Lock()
	v := e.svc.tokens.verified[sha256.Sum256([]byte(tok))]
	if v == nil {
		e.svc.tokens.mu.Unlock()
		t.Fatal("a verified token is not cached")
	}
	v.expiry = time.Now().Add(-2 * clockLeeway) // as if the token's time had passed
	e.svc.tokens.mu.Unlock()
	wantStatus(t, "expired cached token", e.check(t, bearer(tok), "team/a", "", "pull"), 401, "UNAUTHORIZED")

	// Expired tokens, and tokens not presented for verifiedIdle, are dropped at the next sweep
	// (every half minute), not only when the cache is full: its memory is what the last minute's
	// clients use.
	idle := e.token(t, basic("ci", secret), "repository:team/a:pull")
	busy := e.token(t, basic("ci", secret), "repository:team/a:pull")
	for _, tok := range []string{idle, busy} {
		wantStatus(t, "a fresh token", e.check(t, bearer(tok), "team/a", "", "pull"), 200, "")
	}
	e.svc.tokens.mu.Lock()
	e.svc.tokens.swept = time.Now().Add(-verifiedIdle)
	e.svc.tokens.verified[sha256.Sum256([]byte(idle))].used.Store(time.Now().Add(-2 * verifiedIdle).UnixNano())
	e.svc.tokens.mu.Unlock()
	wantStatus(t, "a new token", e.check(t, bearer(e.token(t, basic("ci", secret), "repository:team/a:pull")), "team/a", "", "pull"), 200, "")
	e.svc.tokens.mu.RLock()
	_, keptExpired := e.svc.tokens.verified[sha256.Sum256([]byte(tok))]
	_, keptIdle := e.svc.tokens.verified[sha256.Sum256([]byte(idle))]
	_, keptBusy := e.svc.tokens.verified[sha256.Sum256([]byte(busy))]
	n := len(e.svc.tokens.verified)
	e.svc.tokens.mu.RUnlock()
	if keptExpired || keptIdle || !keptBusy || n != 2 {
		t.Errorf("after a sweep: expired kept %v, idle kept %v, busy kept %v, %d cached; want only the busy one and the new one",
			keptExpired, keptIdle, keptBusy, n)
	}
	// The idle one is verified again when it comes back.
	wantStatus(t, "the idle token again", e.check(t, bearer(idle), "team/a", "", "pull"), 200, "")
}

// A repository named twice in a token's access claim carries the union of its actions.
func TestTokenRepeatedRepository(t *testing.T) {
	e := newEnv(t, Options{})
	e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/*", "pull", "push")
	key := currentKey(t, e.st)
	tok := sign(t, jose.ES256, key.priv, key.ID, claimsFor(e.st, "robot:ci", pullAccess("team/b"), pullAccess("team/a"),
		access{Type: "repository", Name: "team/a", Actions: []string{"push"}}))
	wantStatus(t, "pull", e.check(t, bearer(tok), "team/a", "", "pull"), 200, "")
	wantStatus(t, "push", e.check(t, bearer(tok), "team/a", "", "push"), 200, "")
	// Not in the token, but allowed by the grants: the client asks for a new token.
	wantStatus(t, "team/b push", e.check(t, bearer(tok), "team/b", "", "push"), 401, "UNAUTHORIZED")
	wantStatus(t, "team/c", e.check(t, bearer(tok), "team/c", "", "pull"), 401, "UNAUTHORIZED")
}

// The memory of verified tokens is bounded in bytes: many large distinct tokens (each up to the
// 64 KiB limit, with hundreds of scopes) do not pin their size in memory.
func TestVerifiedCacheBounded(t *testing.T) {
	e := newEnv(t, Options{})
	e.robot(t, "ci", time.Time{})
	key := currentKey(t, e.st)
	const n = 600
	const bound = 4 << 20 // less than maxVerifiedBytes, so that a few hundred tokens exceed it
	e.svc.tokens.maxSize = bound
	toks := make([]string, n)
	for i := range toks {
		cl := claimsFor(e.st, "robot:ci")
		for j := range 180 {
			cl.Access = append(cl.Access, access{Type: "repository", Name: fmt.Sprintf("big/%03d/%0200d", i, j), Actions: []string{"pull"}})
		}
		toks[i] = sign(t, jose.ES256, key.priv, key.ID, cl)
	}
	if len(toks[0]) < 60<<10 || len(toks[0]) > 64<<10 {
		t.Fatalf("a token of %d bytes, want just under 64 KiB", len(toks[0]))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, tok := range toks {
		if _, err := e.svc.tokens.verify(bg, tok); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d tokens of %d KiB verified: the heap grew by %d MiB; the cache holds %d of them, %d MiB by its estimate",
		n, len(toks[0])>>10, grew>>20, len(e.svc.tokens.verified), e.svc.tokens.size>>20)
	if e.svc.tokens.size > bound {
		t.Errorf("the cache's estimate is %d bytes, over its bound %d", e.svc.tokens.size, bound)
	}
	// Their decoded scopes take some 25 MiB: a cache bounded by count would keep them all.
	// Bounded in bytes it keeps about the bound.
	if grew > 2*bound {
		t.Errorf("the heap grew by %d MiB, want at most %d", grew>>20, 2*bound>>20)
	}
	// Evicted tokens are verified again: they still work.
	if _, err := e.svc.tokens.verify(bg, toks[0]); err != nil {
		t.Errorf("an evicted token: %v", err)
	}
}

// A short TokenTTL gives tokens that expire accordingly.
func TestTokenTTL(t *testing.T) {
	e := newEnv(t, Options{TokenTTL: 10 * time.Second})
	secret := e.robot(t, "ci", time.Time{})
	tok := e.token(t, basic("ci", secret))
	v, err := e.svc.tokens.verify(bg, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(v.expiry); d > 10*time.Second || d < 0 {
		t.Errorf("token expires in %v, want within 10s", d)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t, Options{})
	secret := e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/*", "pull")
	old := e.token(t, basic("ci", secret), "repository:team/a:pull")
	unverified := e.token(t, basic("ci", secret), "repository:team/a:pull") // not presented before the rotation
	oldKID := kidOf(t, old)
	wantStatus(t, "before rotation", e.check(t, bearer(old), "team/a", "", "pull"), 200, "")

	info, err := RotateKeys(bg, e.st, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID == oldKID || !info.RetireAfter.IsZero() {
		t.Fatalf("RotateKeys = %+v, old kid %s", info, oldKID)
	}
	keys, err := ListKeys(bg, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != info.ID || keys[1].ID != oldKID || keys[1].RetireAfter.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("keys after rotation: %+v", keys)
	}

	// Tokens of the old key keep working during the overlap, here and on a new replica.
	wantStatus(t, "old token after rotation", e.check(t, bearer(old), "team/a", "", "pull"), 200, "")
	wantStatus(t, "unverified old token after rotation", e.check(t, bearer(unverified), "team/a", "", "pull"), 200, "")
	replica := newService(t, Options{Accounts: e.st})
	if _, err := replica.tokens.verify(bg, old); err != nil {
		t.Errorf("a new replica refuses an old token during the overlap: %v", err)
	}
	// The replica signs with the new key.
	newTok, err := replica.tokens.issue(bg, "robot:ci", e.accountID(t, "ci"), Scope{Repos: map[string]Actions{"team/a": Pull}}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if kidOf(t, newTok) != info.ID {
		t.Errorf("new token's kid %s, want %s", kidOf(t, newTok), info.ID)
	}
	// The first service has not looked at the keys for a while (more than keyReloadUnseen, less
	// than keyReload): a token naming a key it does not know makes it reload them.
	e.svc.tokens.mu.Lock()
	e.svc.tokens.loaded = time.Now().Add(-2 * keyReloadUnseen)
	e.svc.tokens.mu.Unlock()
	wantStatus(t, "a token of the replica's new key", e.check(t, bearer(newTok), "team/a", "", "pull"), 200, "")
	// Having reloaded, it signs with the new key too.
	if kid := kidOf(t, e.token(t, basic("ci", secret), "repository:team/a:pull")); kid != info.ID {
		t.Errorf("after the reload, tokens carry kid %s, want %s", kid, info.ID)
	}
}

func TestKeyRetirement(t *testing.T) {
	e := newEnv(t, Options{})
	secret := e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/*", "pull")
	tok := e.token(t, basic("ci", secret), "repository:team/a:pull")
	k1 := kidOf(t, tok)
	// Used once, so that it is in the cache of verified tokens.
	wantStatus(t, "a token before its key is retired", e.check(t, bearer(tok), "team/a", "", "pull"), 200, "")
	// No overlap: the old key is retired at once (a compromised key).
	k2, err := RotateKeys(bg, e.st, nil, -time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.tokens.reload(bg); err != nil {
		t.Fatal(err)
	}
	wantInvalidToken(t, e, "a token of a retired key (verified before)", tok)
	replica := newService(t, Options{Accounts: e.st})
	if _, err := replica.tokens.verify(bg, tok); !errors.Is(err, errInvalidToken) {
		t.Errorf("a new replica accepts a token of a retired key: %v", err)
	}
	// Another rotation drops keys retired before it.
	k3, err := RotateKeys(bg, e.st, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ListKeys(bg, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	if len(ids) != 2 || ids[0] != k3.ID || ids[1] != k2.ID {
		t.Errorf("keys %v, want [%s %s] (and %s dropped)", ids, k3.ID, k2.ID, k1)
	}
}

// countingAccounts counts reads of settings, to see how often the keys are reloaded.
type countingAccounts struct {
	metadata.Accounts
	settings atomic.Int64
}

func (c *countingAccounts) Setting(ctx context.Context, key string) ([]byte, error) {
	c.settings.Add(1)
	return c.Accounts.Setting(ctx, key)
}

// Tokens naming unknown keys cannot make the service hammer the database.
func TestUnknownKIDReloadIsRateLimited(t *testing.T) {
	acc := &countingAccounts{Accounts: openStore(t)}
	svc := newService(t, Options{Accounts: acc})
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc.tokens.mu.Lock()
	svc.tokens.loaded = time.Now().Add(-2 * keyReloadUnseen)
	svc.tokens.mu.Unlock()
	before := acc.settings.Load()
	start := time.Now()
	const n = 50
	for i := range n {
		tok := sign(t, jose.ES256, other, "kid-"+string(rune('a'+i%26))+string(rune('a'+i/26)), claimsFor(acc, "robot:ci"))
		if _, err := svc.tokens.verify(bg, tok); !errors.Is(err, errInvalidToken) {
			t.Fatalf("verify of an unknown kid: %v", err)
		}
	}
	reloads := acc.settings.Load() - before
	// One reload for the first, then at most one per keyReloadUnseen that passed.
	allowed := 1 + int64(time.Since(start)/keyReloadUnseen) + 1
	if reloads < 1 || reloads > allowed {
		t.Errorf("%d tokens with unknown kids caused %d reloads, want 1 (at most %d)", n, reloads, allowed)
	}
}

// aesSealer is a Sealer for tests.
type aesSealer struct{ aead cipher.AEAD }

func newSealer(t *testing.T) *aesSealer {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &aesSealer{aead}
}

func (s *aesSealer) Seal(plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plaintext, aad), nil
}

func (s *aesSealer) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < s.aead.NonceSize() {
		return nil, errors.New("short")
	}
	return s.aead.Open(nil, sealed[:s.aead.NonceSize()], sealed[s.aead.NonceSize():], aad)
}

func TestSealedKeys(t *testing.T) {
	st := openStore(t)
	// Keys made before an encryption key was configured are sealed when one is.
	plain := newService(t, Options{Accounts: st})
	tok, err := plain.tokens.issue(bg, "robot:ci", "0123456789abcdef", Scope{}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.Setting(bg, keysSetting)
	if err != nil {
		t.Fatal(err)
	}
	var stored []storedKey
	if err := json.Unmarshal(raw, &stored); err != nil || len(stored) != 1 || stored[0].Sealed {
		t.Fatalf("stored keys %s, %v", raw, err)
	}
	plainDER := stored[0].Private

	sealer := newSealer(t)
	sealed := newService(t, Options{Accounts: st, Sealer: sealer})
	if _, err := sealed.tokens.verify(bg, tok); err != nil {
		t.Errorf("after sealing, a token of the same key: %v", err)
	}
	raw, _ = st.Setting(bg, keysSetting)
	stored = nil
	if err := json.Unmarshal(raw, &stored); err != nil || len(stored) != 1 || !stored[0].Sealed {
		t.Fatalf("after sealing, stored keys %s, %v", raw, err)
	}
	if strings.Contains(string(stored[0].Private), string(plainDER)) {
		t.Error("the sealed key contains the plain key")
	}
	// Without the key, or with another, the service does not start; it says why.
	if _, err := New(bg, Options{Accounts: st}); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("New without the sealer: %v, want an error about sealed keys", err)
	}
	if _, err := New(bg, Options{Accounts: st, Sealer: newSealer(t)}); err == nil {
		t.Error("New with another sealer succeeded")
	}
	// A sealed key cannot be moved to another kid.
	stored[0].ID = "other"
	b, _ := json.Marshal(stored)
	if err := st.SetSetting(bg, keysSetting, b); err != nil {
		t.Fatal(err)
	}
	if _, err := New(bg, Options{Accounts: st, Sealer: sealer}); err == nil {
		t.Error("a sealed key opened under another kid")
	}
	// Rotation keeps sealing.
	st2 := openStore(t)
	if _, err := RotateKeys(bg, st2, sealer, time.Hour); err != nil {
		t.Fatal(err)
	}
	raw, _ = st2.Setting(bg, keysSetting)
	stored = nil
	json.Unmarshal(raw, &stored)
	if len(stored) != 2 || !stored[0].Sealed || !stored[1].Sealed {
		t.Errorf("after RotateKeys with a sealer: %s", raw)
	}
}

// Several replicas starting at once on a new database agree on one key.
func TestFirstKeyRace(t *testing.T) {
	st := openStore(t)
	const n = 8
	kids := make([]string, n)
	errs := make([]error, n)
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			s, err := New(bg, Options{Accounts: st})
			if err != nil {
				errs[i] = err
				return
			}
			tok, err := s.tokens.issue(bg, "robot:x", "0123456789abcdef", Scope{}, time.Now().Add(time.Minute))
			if err != nil {
				errs[i] = err
				return
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				errs[i] = err
				return
			}
			kids[i] = parsed.Headers[0].KeyID
		}()
	}
	for range n {
		<-done
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if kids[i] != kids[0] {
			t.Errorf("replica %d signs with %s, replica 0 with %s", i, kids[i], kids[0])
		}
	}
}

// A replica that only verifies tokens (another one issues them) still sees a key retired by a
// rotation within keyReload, not only after a restart.
func TestRetiredKeySeenByVerifyingReplica(t *testing.T) {
	e := newEnv(t, Options{})
	e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/*", "pull")
	old := currentKey(t, e.st)
	if _, err := RotateKeys(bg, e.st, nil, -time.Second); err != nil { // retire at once: a leaked key
		t.Fatal(err)
	}
	// As if a minute had passed since e.svc last read the keys, without it issuing a token.
	e.svc.tokens.mu.Lock()
	e.svc.tokens.loaded = time.Now().Add(-2 * keyReload)
	e.svc.tokens.mu.Unlock()
	leaked := sign(t, jose.ES256, old.priv, old.ID, claimsFor(e.st, "robot:ci", pullAccess("team/a")))
	wantInvalidToken(t, e, "a token of a key retired a minute ago", leaked)
}

// Keys that cannot be used stop the service at start, with a reason, rather than letting it
// run without a way to sign or verify.
func TestBadKeys(t *testing.T) {
	for what, value := range map[string]string{
		"not JSON":       "garbage",
		"not a key":      `[{"kid":"k1","created":"2030-01-01T00:00:00Z","private":"AAAA","sealed":false}]`,
		"no keys":        `[]`,
		"all retired":    "", // filled in below
		"sealed, no KEK": `[{"kid":"k1","created":"2030-01-01T00:00:00Z","private":"AAAA","sealed":true}]`,
	} {
		st := openStore(t)
		if what == "all retired" {
			if _, err := RotateKeys(bg, st, nil, -time.Second); err != nil {
				t.Fatal(err)
			}
			raw, _ := st.Setting(bg, keysSetting)
			var stored []storedKey
			json.Unmarshal(raw, &stored)
			for i := range stored {
				stored[i].RetireAfter = time.Now().Add(-time.Hour)
			}
			b, _ := json.Marshal(stored)
			value = string(b)
		}
		if err := st.SetSetting(bg, keysSetting, []byte(value)); err != nil {
			t.Fatal(err)
		}
		if _, err := New(bg, Options{Accounts: st}); err == nil {
			t.Errorf("%s: New succeeded", what)
		}
	}
}
