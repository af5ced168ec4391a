package oidc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/berth/berth/internal/auth/oidc"
	"github.com/berth/berth/internal/auth/oidc/oidctest"
)

// audience is what the CI jobs of these tests request their tokens for.
const audience = "https://berth.example.test"

func newIssuer(t *testing.T) *oidctest.Issuer { return oidctest.NewIssuer(t) }

// localTrust trusts iss with conditions and grants (default: pull on acme/*).
func localTrust(name string, iss *oidctest.Issuer, conditions map[string]string, grants ...oidc.Grant) oidc.Trust {
	if len(grants) == 0 {
		grants = []oidc.Grant{{Repositories: "acme/*", Actions: []string{"pull"}}}
	}
	return oidc.Trust{Name: name, Issuer: iss.URL, Audience: audience, Conditions: conditions, Grants: grants}
}

// ghClaims are GitHub Actions claims for a job of repo on ref, with our audience.
func ghClaims(repo, ref string) map[string]any {
	c := oidctest.GitHubClaims(repo, ref)
	c["aud"] = audience
	return c
}

func newFederation(t *testing.T, opts oidc.Options, trusts ...oidc.Trust) *oidc.Federation {
	t.Helper()
	f, err := oidc.NewWithOptions(trusts, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// clock is a settable clock shared by an issuer and a federation.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_900_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// refused checks that err wraps kind, says each of says, and shows nothing of the token:
// neither the token itself nor any of the secret strings (claim values, patterns).
func refused(t *testing.T, err error, kind error, raw string, says []string, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q (%T) does not wrap %v", err, err, kind)
	}
	var e *oidc.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %q is a %T, not an *oidc.Error", err, err)
	}
	msg := err.Error()
	for _, s := range says {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not say %q", msg, s)
		}
	}
	if raw != "" {
		parts := strings.Split(raw, ".")
		for _, p := range append(parts, raw) {
			if len(p) >= 8 && strings.Contains(msg, p) {
				t.Errorf("error %q shows the token", msg)
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("error %q shows %q", msg, s)
		}
	}
}

// header decodes a compact JWS's protected header.
func header(t *testing.T, raw string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestVerifyValidToken(t *testing.T) {
	iss := newIssuer(t)
	grants := []oidc.Grant{
		{Repositories: "acme/app", Actions: []string{"pull", "push"}},
		{Repositories: "acme/cache-*", Actions: []string{"pull"}},
	}
	f := newFederation(t, oidc.Options{}, localTrust("acme-app", iss, map[string]string{
		"repository": "acme/app",
		"ref":        "refs/heads/main",
		"event_name": "push",
	}, grants...))

	claims := ghClaims("acme/app", "refs/heads/main")
	exp := time.Now().Add(3 * time.Minute).Truncate(time.Second)
	claims["exp"] = exp.Unix()
	raw := iss.Sign(claims)
	id, err := f.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if id.Trust != "acme-app" || id.Subject != "repo:acme/app:ref:refs/heads/main" {
		t.Errorf("identity %q %q", id.Trust, id.Subject)
	}
	if got, want := id.Name(), "oidc:acme-app:repo:acme/app:ref:refs/heads/main"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	if !reflect.DeepEqual(id.Grants, grants) {
		t.Errorf("grants %+v, want %+v", id.Grants, grants)
	}
	if !id.Expiry.Equal(exp) {
		t.Errorf("expiry %v, want %v", id.Expiry, exp)
	}
	if id.Claims["repository"] != "acme/app" || id.Claims["iss"] != iss.URL || id.Claims["workflow"] != "CI" {
		t.Errorf("claims %v", id.Claims)
	}
	if n, ok := id.Claims["exp"].(json.Number); !ok || n.String() != fmt.Sprint(exp.Unix()) {
		t.Errorf("exp claim %#v, want json.Number %d", id.Claims["exp"], exp.Unix())
	}

	// The grants are the caller's to change.
	id.Grants[0].Actions[0] = "delete"
	id2, err := f.Verify(t.Context(), raw)
	if err != nil || id2.Grants[0].Actions[0] != "pull" {
		t.Fatalf("grants shared between identities: %+v, %v", id2, err)
	}

	// Surrounding white space (a password read from a file) is ignored.
	if _, err := f.Verify(t.Context(), "\n "+raw+"\r\n"); err != nil {
		t.Fatalf("with white space: %v", err)
	}

	// The environment form of GitHub's claims.
	f = newFederation(t, oidc.Options{}, localTrust("prod", iss, map[string]string{
		"sub": "repo:acme/app:environment:production",
	}))
	if id, err := f.Verify(t.Context(), iss.Sign(oidctest.WithEnvironment(ghClaims("acme/app", "refs/heads/main"), "production"))); err != nil {
		t.Fatal(err)
	} else if id.Claims["environment"] != "production" {
		t.Fatalf("claims %v", id.Claims)
	}
}

func TestVerifyES256(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := iss.Publish(ec, "ES256")
	if _, err := f.Verify(t.Context(), iss.SignWith(key, "ES256", ghClaims("acme/app", "refs/heads/main"))); err != nil {
		t.Fatalf("ES256: %v", err)
	}
	// The same key under another algorithm is not accepted.
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key384 := iss.Publish(ec384, "ES384")
	raw := iss.SignWith(key384, "ES384", ghClaims("acme/app", "refs/heads/main"))
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, nil)
}

func TestDiscoveryIsLazyAndKeysCached(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	if d, k := iss.Requests(); d != 0 || k != 0 {
		t.Fatalf("New contacted the issuer: %d discovery, %d JWKS requests", d, k)
	}
	for range 5 {
		if _, err := f.Verify(t.Context(), iss.Sign(ghClaims("acme/app", "refs/heads/main"))); err != nil {
			t.Fatal(err)
		}
	}
	// One discovery, exactly. The key set is fetched once too, but go-oidc's RemoteKeySet wakes
	// the waiters of a fetch a moment before it stores the keys, so a token verified in that
	// moment may fetch them again: the test only requires that tokens do not each fetch.
	if d, k := iss.Requests(); d != 1 || k < 1 || k >= 5 {
		t.Fatalf("%d discovery and %d JWKS requests for 5 tokens, want 1 and fewer than 5", d, k)
	}
}

// verifyFetching verifies a token whose kid the federation has not seen, so that go-oidc
// fetches the issuer's key set. Its RemoteKeySet wakes the waiters of a fetch a moment before
// it forgets that fetch, and a token arriving in that moment gets the old fetch's result
// (without the new kid, or its error) and no request is made. Verify is retried only then.
func verifyFetching(t *testing.T, f *oidc.Federation, iss *oidctest.Issuer, raw string) (*oidc.Identity, error) {
	t.Helper()
	for range 10000 {
		_, before := iss.Requests()
		id, err := f.Verify(t.Context(), raw)
		if _, after := iss.Requests(); err == nil || after > before {
			return id, err
		}
		runtime.Gosched()
	}
	t.Fatal("the token never caused a key set request")
	return nil, nil
}

func TestConcurrentFirstTokensShareOneDiscovery(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			_, err := f.Verify(context.Background(), raw)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if d, _ := iss.Requests(); d != 1 {
		t.Fatalf("%d discovery requests, want 1", d)
	}
}

func TestUntrustedIssuer(t *testing.T) {
	trusted, other := newIssuer(t), newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", trusted, map[string]string{"repository": "acme/app"}))

	raw := other.Sign(ghClaims("acme/app", "refs/heads/main"))
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUntrusted, raw, []string{"not trusted"}, other.URL)

	// Near misses of the trusted issuer are other issuers.
	for _, iss := range []string{trusted.URL + "/", strings.ToUpper(trusted.URL), trusted.URL + "/x", "", " " + trusted.URL} {
		c := ghClaims("acme/app", "refs/heads/main")
		c["iss"] = iss
		raw := trusted.Sign(c)
		_, err := f.Verify(t.Context(), raw)
		if !errors.Is(err, oidc.ErrUntrusted) && !errors.Is(err, oidc.ErrInvalid) {
			t.Errorf("iss %q: %v", iss, err)
		}
	}
	// An untrusted issuer is never contacted, and a token naming none does not make the
	// federation discover the trusted one either.
	if d, k := other.Requests(); d+k != 0 {
		t.Errorf("the untrusted issuer got %d requests", d+k)
	}
	if d, k := trusted.Requests(); d+k != 0 {
		t.Errorf("the trusted issuer got %d requests for tokens it did not issue", d+k)
	}
	// No iss at all.
	c := ghClaims("acme/app", "refs/heads/main")
	c["iss"] = nil
	raw = trusted.Sign(c)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, nil)
}

func TestIssuerMismatch(t *testing.T) {
	// The trusted issuer's discovery document names another issuer: its keys are not
	// trusted for tokens that name it.
	iss := newIssuer(t)
	iss.AdvertiseIssuer("https://elsewhere.example.com")
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, []string{"configuration"}, "elsewhere")
	var mismatch *gooidc.IssuerMismatchError
	if !errors.As(err, &mismatch) || mismatch.Discovered != "https://elsewhere.example.com" {
		t.Fatalf("error %v does not carry the mismatch", err)
	}
	if d := err.(*oidc.Error).Detail(); !strings.Contains(d, "elsewhere.example.com") {
		t.Errorf("detail %q does not explain", d)
	}
	if _, k := iss.Requests(); k != 0 {
		t.Errorf("the keys of a mismatched issuer were fetched")
	}
}

func TestTokenFromAnotherIssuerNamingTheTrustedOne(t *testing.T) {
	trusted, attacker := newIssuer(t), newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", trusted, map[string]string{"repository": "acme/app"}))
	if _, err := f.Verify(t.Context(), trusted.Sign(ghClaims("acme/app", "refs/heads/main"))); err != nil {
		t.Fatal(err)
	}
	c := ghClaims("acme/app", "refs/heads/main")
	c["iss"] = trusted.URL
	// Signed by the attacker's issuer with its own kid, and with the trusted issuer's kid.
	stolenKid := attacker.Key()
	stolenKid.KeyID = trusted.KeyID()
	for _, key := range []jose.JSONWebKey{attacker.Key(), stolenKid} {
		raw := attacker.SignWith(key, "RS256", c)
		_, err := f.Verify(t.Context(), raw)
		refused(t, err, oidc.ErrInvalid, raw, []string{"signature"})
	}
	if d, _ := attacker.Requests(); d != 0 {
		t.Error("the attacker's issuer was contacted")
	}
}

func TestAudience(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	for name, aud := range map[string]any{
		"github default": "https://github.com/acme",
		"other":          "https://other-registry.example.test",
		"prefix":         audience + "/x",
		"empty":          "",
		"empty list":     []string{},
		"list without":   []string{"a", "b"},
		"missing":        nil,
	} {
		c := ghClaims("acme/app", "refs/heads/main")
		c["aud"] = aud
		raw := iss.Sign(c)
		_, err := f.Verify(t.Context(), raw)
		if aud == nil {
			refused(t, err, oidc.ErrInvalid, raw, nil)
			continue
		}
		refused(t, err, oidc.ErrInvalid, raw, []string{"audience"}, "other-registry", "github.com/acme")
		_ = name
	}
	// Malformed aud: the token does not verify.
	c := ghClaims("acme/app", "refs/heads/main")
	c["aud"] = 42
	raw := iss.Sign(c)
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, nil)

	// A list that contains ours.
	c = ghClaims("acme/app", "refs/heads/main")
	c["aud"] = []string{"https://github.com/acme", audience}
	if _, err := f.Verify(t.Context(), iss.Sign(c)); err != nil {
		t.Fatalf("aud list: %v", err)
	}
}

func TestExpiryAndNotBefore(t *testing.T) {
	clk := newClock()
	iss := newIssuer(t)
	iss.Now = clk.Now
	f := newFederation(t, oidc.Options{Now: clk.Now, Leeway: time.Minute},
		localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	now := clk.Now().Unix()
	for _, c := range []struct {
		name   string
		claims map[string]any
		says   string // "" means accepted
	}{
		{"fresh", map[string]any{}, ""},
		{"expired an hour ago", map[string]any{"exp": now - 3600, "iat": now - 4000, "nbf": now - 4000}, "expired"},
		{"expired just past the leeway", map[string]any{"exp": now - 60}, "expired"},
		{"expired within the leeway", map[string]any{"exp": now - 59}, ""},
		{"fractional exp", map[string]any{"exp": float64(now) + 30.5}, ""},
		{"no exp", map[string]any{"exp": nil}, "expiry"},
		{"string exp", map[string]any{"exp": fmt.Sprint(now + 60)}, ""}, // refused below: go-oidc or us
		{"zero exp", map[string]any{"exp": 0}, "expired"},
		{"negative exp", map[string]any{"exp": -1}, "expired"},
		{"not valid for an hour", map[string]any{"nbf": now + 3600, "exp": now + 4000}, "not valid yet"},
		{"not valid just past the leeway", map[string]any{"nbf": now + 61}, "not valid yet"},
		{"not valid within the leeway", map[string]any{"nbf": now + 60}, ""},
		{"no nbf", map[string]any{"nbf": nil}, ""},
		{"string nbf", map[string]any{"nbf": "soon"}, ""},
		{"exp far in the future", map[string]any{"exp": now + 10*365*86400}, ""},
	} {
		claims := ghClaims("acme/app", "refs/heads/main")
		for k, v := range c.claims {
			claims[k] = v
		}
		raw := iss.Sign(claims)
		id, err := f.Verify(t.Context(), raw)
		switch {
		case c.name == "string exp" || c.name == "string nbf":
			refused(t, err, oidc.ErrInvalid, raw, nil)
		case c.says == "":
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if e, ok := claims["exp"].(int64); ok && !id.Expiry.Equal(time.Unix(e, 0)) {
				t.Errorf("%s: expiry %v, want %v", c.name, id.Expiry, time.Unix(e, 0))
			}
		default:
			if err == nil {
				t.Errorf("%s: accepted", c.name)
				continue
			}
			refused(t, err, oidc.ErrInvalid, raw, []string{c.says})
		}
	}

	// The federation's clock moves: a token accepted now is refused later.
	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	if _, err := f.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	clk.Advance(oidctest.TokenLifetime + time.Minute)
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, []string{"expired"})
}

func TestSignatureByAnotherKeyWithTheSameKid(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	claims := ghClaims("acme/app", "refs/heads/main")
	if _, err := f.Verify(t.Context(), iss.Sign(claims)); err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	raw := iss.SignWith(jose.JSONWebKey{Key: other, KeyID: iss.KeyID()}, "RS256", claims)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, []string{"signature"})

	// A valid token with its signature replaced, or with the payload of another token.
	good := strings.Split(iss.Sign(claims), ".")
	forged := strings.Split(raw, ".")
	c2 := ghClaims("acme/admin", "refs/heads/main")
	evil := strings.Split(iss.Sign(c2), ".")
	for _, raw := range []string{
		good[0] + "." + good[1] + "." + forged[2],
		good[0] + "." + evil[1] + "." + good[2],
		good[0] + "." + good[1] + ".",
		good[0] + "." + good[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("not a signature")),
	} {
		_, err := f.Verify(t.Context(), raw)
		refused(t, err, oidc.ErrInvalid, raw, nil)
	}
}

func TestAlgNone(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	claims := ghClaims("acme/app", "refs/heads/main")
	for _, key := range []any{nil, iss.Key()} {
		raw := iss.SignWith(key, "none", claims)
		_, err := f.Verify(t.Context(), raw)
		refused(t, err, oidc.ErrInvalid, raw, nil)
	}
	// Spellings of none, and a none token with a valid signature tacked on.
	enc := base64.RawURLEncoding.EncodeToString
	payload := strings.Split(iss.Sign(claims), ".")[1]
	sig := strings.Split(iss.Sign(claims), ".")[2]
	for _, h := range []string{`{"alg":"None"}`, `{"alg":"NONE"}`, `{"alg":""}`, `{}`, `{"alg":"none","kid":"` + iss.KeyID() + `"}`} {
		for _, s := range []string{"", sig} {
			raw := enc([]byte(h)) + "." + payload + "." + s
			_, err := f.Verify(t.Context(), raw)
			refused(t, err, oidc.ErrInvalid, raw, nil)
		}
	}
	if d, _ := iss.Requests(); d != 0 {
		t.Errorf("unsigned tokens caused %d discovery requests", d)
	}
}

func TestHS256WithThePublicKey(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	claims := ghClaims("acme/app", "refs/heads/main")
	if _, err := f.Verify(t.Context(), iss.Sign(claims)); err != nil {
		t.Fatal(err)
	}
	pub := iss.PublicKey().(*rsa.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	priv := iss.Key()
	jwk := priv.Public()
	jwkJSON, err := jwk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"PKIX DER":   der,
		"PEM":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"PKCS1 DER":  x509.MarshalPKCS1PublicKey(pub),
		"modulus":    pub.N.Bytes(),
		"JWK":        jwkJSON,
		"JWKS":       []byte(`{"keys":[` + string(jwkJSON) + `]}`),
		"random key": []byte(strings.Repeat("k", 64)),
	}
	for name, secret := range secrets {
		for _, alg := range []string{"HS256", "HS384", "HS512"} {
			if len(secret)*8 < 512 && alg != "HS256" {
				continue
			}
			raw := iss.SignWith(jose.JSONWebKey{Key: secret, KeyID: iss.KeyID()}, alg, claims)
			_, err := f.Verify(t.Context(), raw)
			if !errors.Is(err, oidc.ErrInvalid) {
				t.Errorf("%s %s: %v", name, alg, err)
			}
		}
	}
}

func TestOtherAlgorithmsWithTheIssuersKey(t *testing.T) {
	// Even with the issuer's own key, only RS256 and ES256 are accepted.
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	for _, alg := range []string{"RS384", "RS512", "PS256", "PS384", "PS512"} {
		raw := iss.SignWith(iss.Key(), alg, ghClaims("acme/app", "refs/heads/main"))
		_, err := f.Verify(t.Context(), raw)
		refused(t, err, oidc.ErrInvalid, raw, nil)
	}
}

func TestTokenWithoutKid(t *testing.T) {
	iss := newIssuer(t)
	first := iss.Key()
	iss.Rotate()
	middle := iss.Key()
	iss.Rotate()
	if n := len(iss.PublishedKeyIDs()); n != 3 {
		t.Fatalf("%d keys published", n)
	}
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	claims := ghClaims("acme/app", "refs/heads/main")

	// Without a kid every published key is tried: a token signed by any of them verifies.
	for _, k := range []jose.JSONWebKey{first, middle, iss.Key()} {
		raw := iss.SignWith(k.Key, "RS256", claims)
		if h := header(t, raw); h["kid"] != nil {
			t.Fatalf("token has a kid: %v", h)
		}
		if _, err := f.Verify(t.Context(), raw); err != nil {
			t.Fatalf("no kid, published key: %v", err)
		}
	}
	// But none of them verifies a signature by a foreign key.
	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	raw := iss.SignWith(foreign, "RS256", claims)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, []string{"signature"})
	// Nor an unknown kid.
	raw = iss.SignWith(jose.JSONWebKey{Key: foreign, KeyID: "unknown"}, "RS256", claims)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrInvalid, raw, []string{"signature"})
}

func TestConditions(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("deploy", iss, map[string]string{
		"repository":  "acme/app",
		"ref":         "refs/heads/main",
		"environment": "production",
	}))
	ok := oidctest.WithEnvironment(ghClaims("acme/app", "refs/heads/main"), "production")
	if _, err := f.Verify(t.Context(), iss.Sign(ok)); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		edit    func(map[string]any)
		says    []string
		secrets []string
	}{
		{"wrong ref", func(c map[string]any) { c["ref"] = "refs/heads/evil-branch" },
			[]string{`trust "deploy"`, `claim "ref" does not match`}, []string{"evil-branch", "refs/heads/main"}},
		{"wrong repository", func(c map[string]any) { c["repository"] = "mallory/app" },
			[]string{`claim "repository" does not match`}, []string{"mallory", "acme/app"}},
		{"missing environment", func(c map[string]any) { delete(c, "environment") },
			[]string{`claim "environment" is missing`}, []string{"production"}},
		{"null environment", func(c map[string]any) { c["environment"] = nil },
			[]string{`claim "environment" is missing`}, nil},
		{"environment list", func(c map[string]any) { c["environment"] = []string{"production"} },
			[]string{`claim "environment" is not a string`}, []string{"production"}},
		{"environment object", func(c map[string]any) { c["environment"] = map[string]any{"name": "production"} },
			[]string{`claim "environment" is not a string`}, nil},
		{"case differs", func(c map[string]any) { c["environment"] = "Production" },
			[]string{`claim "environment" does not match`}, []string{"Production"}},
		{"all wrong", func(c map[string]any) {
			c["repository"], c["ref"] = "mallory/app", "refs/heads/x"
			delete(c, "environment")
		}, []string{`claim "environment" is missing, claim "ref" does not match, claim "repository" does not match`}, []string{"mallory"}},
	} {
		claims := oidctest.WithEnvironment(ghClaims("acme/app", "refs/heads/main"), "production")
		c.edit(claims)
		raw := iss.Sign(claims)
		_, err := f.Verify(t.Context(), raw)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		refused(t, err, oidc.ErrConditions, raw, c.says, c.secrets...)
	}
}

func TestGlobConditions(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("main", iss, map[string]string{
		"sub": "repo:acme/*:ref:refs/heads/main",
	}))
	for sub, want := range map[string]bool{
		"repo:acme/app:ref:refs/heads/main":           true,
		"repo:acme/other:ref:refs/heads/main":         true,
		"repo:acme/a/b:ref:refs/heads/main":           true, // '*' crosses '/'
		"repo:acme/app:ref:refs/heads/main2":          false,
		"repo:acme/app:ref:refs/heads/dev":            false,
		"repo:acme-evil/app:ref:refs/heads/main":      false,
		"repo:evil/acme/app:ref:refs/heads/main":      false,
		"repo:acme/app:environment:production":        false,
		"repo:acme/app:ref:refs/heads/main ":          false,
		"xrepo:acme/app:ref:refs/heads/main":          false,
		"repo:acme/app:pull_request":                  false,
		"repo:ACME/app:ref:refs/heads/main":           false,
		"repo:acme/app:ref:refs/heads/feature/main":   false,
		"repo:acme/:ref:refs/heads/main":              true,
		"repo:acme/app:ref:refs/tags/refs/heads/main": false,
	} {
		c := ghClaims("acme/app", "refs/heads/main")
		c["sub"] = sub
		raw := iss.Sign(c)
		_, err := f.Verify(t.Context(), raw)
		if want && err != nil {
			t.Errorf("%q: %v", sub, err)
		}
		if !want {
			if err == nil {
				t.Errorf("%q: accepted", sub)
				continue
			}
			refused(t, err, oidc.ErrConditions, raw, []string{`claim "sub" does not match`}, sub)
		}
	}

	// Booleans and numbers compare by their JSON text.
	f = newFederation(t, oidc.Options{}, localTrust("typed", iss, map[string]string{
		"repository": "acme/app", "protected": "true", "run_number": "4*", "ratio": "0.5",
	}))
	c := ghClaims("acme/app", "refs/heads/main")
	c["protected"], c["run_number"], c["ratio"] = true, 42, 0.5
	if _, err := f.Verify(t.Context(), iss.Sign(c)); err != nil {
		t.Fatalf("typed claims: %v", err)
	}
	c["protected"], c["run_number"] = false, 42
	_, err := f.Verify(t.Context(), iss.Sign(c))
	refused(t, err, oidc.ErrConditions, "", []string{`claim "protected" does not match`})
	c["protected"], c["run_number"] = "true", 7
	_, err = f.Verify(t.Context(), iss.Sign(c))
	refused(t, err, oidc.ErrConditions, "", []string{`claim "run_number" does not match`})
}

func TestSeveralTrustsOnOneIssuer(t *testing.T) {
	iss := newIssuer(t)
	pushApp := oidc.Grant{Repositories: "acme/app", Actions: []string{"pull", "push"}}
	pushWeb := oidc.Grant{Repositories: "acme/web/*", Actions: []string{"pull", "push", "delete"}}
	pullAll := oidc.Grant{Repositories: "acme/*", Actions: []string{"pull"}}
	other := localTrust("other-registry", iss, map[string]string{"repository_owner": "acme"},
		oidc.Grant{Repositories: "*", Actions: []string{"pull", "push"}})
	other.Audience = "https://other.example.test"
	f := newFederation(t, oidc.Options{},
		other, // another audience: must not take tokens for ours, though its conditions match
		localTrust("app", iss, map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}, pushApp),
		localTrust("web", iss, map[string]string{"repository": "acme/web", "ref": "refs/heads/main"}, pushWeb),
		localTrust("owner", iss, map[string]string{"repository_owner": "acme"}, pullAll),
	)
	for _, c := range []struct {
		repo, ref, aud string
		trust          string
		grants         []oidc.Grant
	}{
		{"acme/app", "refs/heads/main", audience, "app", []oidc.Grant{pushApp}},
		{"acme/web", "refs/heads/main", audience, "web", []oidc.Grant{pushWeb}},
		// The first trust that accepts wins: app's branch builds match "owner" too.
		{"acme/web", "refs/heads/dev", audience, "owner", []oidc.Grant{pullAll}},
		{"acme/tools", "refs/heads/main", audience, "owner", []oidc.Grant{pullAll}},
		{"acme/app", "refs/heads/main", other.Audience, "other-registry", other.Grants},
	} {
		claims := ghClaims(c.repo, c.ref)
		claims["aud"] = c.aud
		id, err := f.Verify(t.Context(), iss.Sign(claims))
		if err != nil {
			t.Errorf("%s@%s for %s: %v", c.repo, c.ref, c.aud, err)
			continue
		}
		if id.Trust != c.trust || !reflect.DeepEqual(id.Grants, c.grants) {
			t.Errorf("%s@%s for %s: trust %q grants %+v, want %q %+v", c.repo, c.ref, c.aud, id.Trust, id.Grants, c.trust, c.grants)
		}
	}
	// No trust accepts: every trust for the audience says why, the others are not mentioned.
	claims := ghClaims("mallory/app", "refs/heads/main")
	raw := iss.Sign(claims)
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrConditions, raw,
		[]string{`trust "app": claim "repository" does not match`, `trust "web": claim "repository" does not match`, `trust "owner": claim "repository_owner" does not match`},
		"mallory", "other-registry")
	if d, _ := iss.Requests(); d != 1 {
		t.Errorf("%d discovery requests for one issuer, want 1", d)
	}
}

func TestKeyRotation(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	claims := ghClaims("acme/app", "refs/heads/main")
	oldKid := iss.KeyID()
	oldToken := iss.Sign(claims)
	if _, err := f.Verify(t.Context(), oldToken); err != nil {
		t.Fatal(err)
	}

	// A new kid is fetched on demand.
	newKid := iss.Rotate()
	if newKid == oldKid || iss.KeyID() != newKid {
		t.Fatalf("rotation: %q -> %q", oldKid, newKid)
	}
	if _, err := verifyFetching(t, f, iss, iss.Sign(claims)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if _, k := iss.Requests(); k < 2 {
		t.Fatalf("%d JWKS requests, want 2 (one at start, one for the new kid)", k)
	}
	for range 3 {
		if _, err := f.Verify(t.Context(), iss.Sign(claims)); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	// Tokens signed before the rotation still verify while the old key is published.
	if _, err := f.Verify(t.Context(), oldToken); err != nil {
		t.Fatalf("old token: %v", err)
	}

	// Once the issuer has retired the old key, a key set fetched from then on does not have
	// it, and tokens signed with it are refused. (A federation that fetched the set before
	// keeps its cached copy until a new kid makes it refetch, as go-oidc does.)
	iss.Retire(oldKid)
	iss.Rotate()
	if _, err := verifyFetching(t, f, iss, iss.Sign(claims)); err != nil {
		t.Fatalf("after second rotation: %v", err)
	}
	fresh := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	_, err := fresh.Verify(t.Context(), oldToken)
	refused(t, err, oidc.ErrInvalid, oldToken, []string{"signature"})
	if _, err := fresh.Verify(t.Context(), iss.Sign(claims)); err != nil {
		t.Fatalf("current key: %v", err)
	}
}

func TestIssuerDownThenUp(t *testing.T) {
	clk := newClock()
	iss := newIssuer(t)
	iss.Now = clk.Now
	iss.SetDown(true)
	f := newFederation(t, oidc.Options{Now: clk.Now, RetryAfter: 10 * time.Second},
		localTrust("app", iss, map[string]string{"repository": "acme/app"}))

	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, []string{"unavailable"}, "issuer down")
	if d, _ := iss.Requests(); d != 1 {
		t.Fatalf("%d discovery requests, want 1", d)
	}
	// Until RetryAfter has passed, tokens fail without a new request...
	iss.SetDown(false)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
	clk.Advance(9 * time.Second)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
	if d, _ := iss.Requests(); d != 1 {
		t.Fatalf("%d discovery requests during the back-off, want 1", d)
	}
	// ...then the next token discovers the issuer.
	clk.Advance(time.Second)
	if _, err := f.Verify(t.Context(), raw); err != nil {
		t.Fatalf("issuer up: %v", err)
	}
	if d, _ := iss.Requests(); d != 2 {
		t.Fatalf("%d discovery requests, want 2", d)
	}

	// Once discovered, a key set that cannot be fetched for a new kid is the issuer being
	// unavailable, not the token being invalid; it works again when the issuer is back.
	iss.Rotate()
	iss.SetDown(true)
	raw = iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	_, err = verifyFetching(t, f, iss, raw)
	refused(t, err, oidc.ErrUnavailable, raw, []string{"keys"}, "issuer down")
	iss.SetDown(false)
	if _, err := verifyFetching(t, f, iss, raw); err != nil {
		t.Fatalf("keys back: %v", err)
	}
}

func TestIssuerNotListening(t *testing.T) {
	iss := newIssuer(t)
	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	iss.Close()
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
}

// gateTransport holds every request until the gate opens.
type gateTransport struct{ gate chan struct{} }

func (g gateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-g.gate:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestCallerGivesUpWhileDiscovering(t *testing.T) {
	iss := newIssuer(t)
	gate := make(chan struct{})
	f, err := oidc.New([]oidc.Trust{localTrust("app", iss, map[string]string{"repository": "acme/app"})},
		&http.Client{Transport: gateTransport{gate}})
	if err != nil {
		t.Fatal(err)
	}
	raw := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = f.Verify(ctx, raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v does not wrap context.Canceled", err)
	}
	// The discovery went on for the next caller.
	close(gate)
	if _, err := f.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if d, _ := iss.Requests(); d != 1 {
		t.Fatalf("%d discovery requests, want 1", d)
	}
}

func TestOversizedIssuerResponse(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"padding":"%s"}`, srv.URL, srv.URL+"/jwks", strings.Repeat("x", 2<<20))
	}))
	t.Cleanup(srv.Close)
	iss := newIssuer(t)
	tr := localTrust("app", iss, map[string]string{"repository": "acme/app"})
	tr.Issuer = srv.URL
	f := newFederation(t, oidc.Options{}, tr)
	c := ghClaims("acme/app", "refs/heads/main")
	c["iss"] = srv.URL
	raw := iss.Sign(c)
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil, "xxxxxxxx")
	if d := err.(*oidc.Error).Detail(); !strings.Contains(d, "too large") {
		t.Errorf("detail %q does not say the response was too large", d)
	}
}

func TestInsecureJWKSURI(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":"http://keys.example.com/jwks"}`, srv.URL)
	}))
	t.Cleanup(srv.Close)
	iss := newIssuer(t)
	tr := localTrust("app", iss, map[string]string{"repository": "acme/app"})
	tr.Issuer = srv.URL
	f := newFederation(t, oidc.Options{}, tr)
	c := ghClaims("acme/app", "refs/heads/main")
	c["iss"] = srv.URL
	raw := iss.Sign(c)
	_, err := f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
	if d := err.(*oidc.Error).Detail(); !strings.Contains(d, "jwks_uri") {
		t.Errorf("detail %q", d)
	}
}

func TestGarbageTokens(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	good := iss.Sign(ghClaims("acme/app", "refs/heads/main"))
	parts := strings.Split(good, ".")
	header, sig := parts[0], parts[2]

	big := ghClaims("acme/app", "refs/heads/main")
	big["padding"] = strings.Repeat("p", oidc.MaxTokenSize)
	oversized := iss.Sign(big)

	jws, err := jose.ParseSignedCompact(good, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	jsonForm := jws.FullSerialize()

	for name, raw := range map[string]string{
		"empty":                "",
		"spaces":               "   \t\n",
		"one part":             "abc",
		"two parts":            "abc.def",
		"three empty parts":    "..",
		"four parts":           good + ".x",
		"five parts (JWE)":     "a.b.c.d.e",
		"not base64":           "!!!.@@@.###",
		"header not JSON":      enc("nope") + "." + parts[1] + "." + sig,
		"header array":         enc("[]") + "." + parts[1] + "." + sig,
		"payload not JSON":     header + "." + enc("nope") + "." + sig,
		"payload array":        header + "." + enc(`["iss"]`) + "." + sig,
		"payload null":         header + "." + enc(`null`) + "." + sig,
		"iss number":           header + "." + enc(`{"iss":42}`) + "." + sig,
		"binary":               "\x00\xff\xfe.\x01.\x02",
		"oversized":            oversized,
		"oversized garbage":    strings.Repeat("A", oidc.MaxTokenSize+1),
		"JSON serialization":   jsonForm,
		"space inside":         parts[0] + ". " + parts[1] + "." + sig,
		"bearer prefix":        "Bearer " + good,
		"padded base64":        parts[0] + "=." + parts[1] + "." + sig,
		"standard base64 sig":  parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "+",
		"critical header":      enc(`{"alg":"RS256","kid":"`+iss.KeyID()+`","crit":["exp"],"exp":1}`) + "." + parts[1] + "." + sig,
		"header with jku":      enc(`{"alg":"RS256","jku":"http://127.0.0.1:1/jwks"}`) + "." + parts[1] + "." + sig,
		"embedded jwk":         enc(`{"alg":"RS256","jwk":{}}`) + "." + parts[1] + "." + sig,
		"unicode":              "ü.ü.ü",
		"huge header claimed":  enc(`{"alg":"RS256","kid":"`+strings.Repeat("k", 1000)+`"}`) + "." + parts[1] + "." + sig,
		"token of whitespace":  strings.Repeat(" ", oidc.MaxTokenSize*2),
		"only dots":            strings.Repeat(".", 100),
		"valid header only":    header,
		"payload without sig":  header + "." + parts[1],
		"sig from other token": header + "." + enc(`{"iss":"`+iss.URL+`","sub":"x","aud":"`+audience+`","exp":9999999999}`) + "." + sig,
	} {
		_, err := f.Verify(t.Context(), raw)
		if !errors.Is(err, oidc.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(err.Error()) > 200 {
			t.Errorf("%s: long error %q", name, err)
		}
		refused(t, err, oidc.ErrInvalid, raw, nil)
	}
	if _, err := f.Verify(t.Context(), oversized); !strings.Contains(fmt.Sprint(err), "larger than") {
		t.Errorf("oversized: %v", err)
	}
	// None of that needed the issuer's keys except the well-formed tokens with a bad signature.
	if _, err := f.Verify(t.Context(), good); err != nil {
		t.Fatalf("good token after garbage: %v", err)
	}
}

func TestSubject(t *testing.T) {
	iss := newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", iss, map[string]string{"repository": "acme/app"}))
	for _, sub := range []any{nil, "", 42, []string{"x"}} {
		c := ghClaims("acme/app", "refs/heads/main")
		c["sub"] = sub
		raw := iss.Sign(c)
		_, err := f.Verify(t.Context(), raw)
		refused(t, err, oidc.ErrInvalid, raw, nil)
	}
}

func TestErrorDetailIsForTheLog(t *testing.T) {
	trusted, other := newIssuer(t), newIssuer(t)
	f := newFederation(t, oidc.Options{}, localTrust("app", trusted, map[string]string{"repository": "acme/app"}))
	_, err := f.Verify(t.Context(), other.Sign(ghClaims("acme/app", "refs/heads/main")))
	var e *oidc.Error
	if !errors.As(err, &e) {
		t.Fatalf("%T", err)
	}
	if strings.Contains(e.Error(), other.URL) || !strings.Contains(e.Detail(), other.URL) {
		t.Fatalf("message %q, detail %q", e.Error(), e.Detail())
	}
}

func TestRedirectDowngradeRefused(t *testing.T) {
	// An https issuer that redirects its discovery document to plain http is not followed.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the redirect to http was followed")
	}))
	t.Cleanup(plain.Close)
	target := strings.Replace(plain.URL, "127.0.0.1", "berth-test.invalid", 1) + oidctest.DiscoveryPath
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	iss := newIssuer(t)
	tr := localTrust("app", iss, map[string]string{"repository": "acme/app"})
	tr.Issuer = tlsSrv.URL
	f, err := oidc.New([]oidc.Trust{tr}, tlsSrv.Client())
	if err != nil {
		t.Fatal(err)
	}
	c := ghClaims("acme/app", "refs/heads/main")
	c["iss"] = tlsSrv.URL
	raw := iss.Sign(c)
	_, err = f.Verify(t.Context(), raw)
	refused(t, err, oidc.ErrUnavailable, raw, nil)
	if d := err.(*oidc.Error).Detail(); !strings.Contains(d, "not https") {
		t.Errorf("detail %q", d)
	}
}
