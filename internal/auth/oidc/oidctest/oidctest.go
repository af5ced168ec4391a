// Package oidctest runs a local OpenID Connect issuer for tests: an HTTP server on 127.0.0.1
// that serves a discovery document and a JWKS, and signs ID tokens with generated keys. It
// can rotate keys, publish extra ones, go down, and advertise a wrong issuer, so that tests
// can exercise what a real issuer (GitHub Actions) does and what an attacker would try.
package oidctest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Paths the issuer serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks"
)

// TokenLifetime is the exp Sign sets when the claims have none (GitHub's tokens live about as long).
const TokenLifetime = 5 * time.Minute

// Issuer is a local OIDC issuer. Its methods are safe for concurrent use.
type Issuer struct {
	// URL is the issuer URL ("http://127.0.0.1:PORT"), the iss of the tokens it signs.
	URL string
	// Now is the clock for the iat, nbf and exp that Sign fills in; nil means time.Now.
	// Set it before signing, not while other goroutines sign.
	Now func() time.Time

	t   testing.TB
	srv *httptest.Server

	mu         sync.Mutex
	current    jose.JSONWebKey   // private signing key, with kid and alg
	published  []jose.JSONWebKey // public keys in the JWKS, in order
	advertised string            // issuer in the discovery document; "" means URL
	down       bool
	discovery  int // requests served (or refused while down) per endpoint
	jwks       int
	closeOnce  sync.Once
}

// NewIssuer starts an issuer with one RS256 key; it is closed when the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{t: t}
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	i.URL = i.srv.URL
	i.current = i.newRSAKey()
	i.published = []jose.JSONWebKey{i.current.Public()}
	t.Cleanup(i.Close)
	return i
}

// Close stops the server; later requests to URL are refused. It may be called more than once.
func (i *Issuer) Close() { i.closeOnce.Do(i.srv.Close) }

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	var body any
	switch r.URL.Path {
	case DiscoveryPath:
		i.discovery++
		iss := i.advertised
		if iss == "" {
			iss = i.URL
		}
		body = map[string]any{
			"issuer":                                iss,
			"jwks_uri":                              i.URL + JWKSPath,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public", "pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
			"scopes_supported":                      []string{"openid"},
			"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository", "repository_owner", "environment", "workflow", "actor", "event_name"},
		}
	case JWKSPath:
		i.jwks++
		body = jose.JSONWebKeySet{Keys: slices.Clone(i.published)}
	default:
		i.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	down := i.down
	i.mu.Unlock()

	if down {
		http.Error(w, "issuer down", http.StatusServiceUnavailable)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// Sign returns a compact JWS (RS256, with the current key's kid) of claims. It fills in iss
// (URL), iat and nbf (now) and exp (now + TokenLifetime) when the claims lack them; a claim
// set to nil is left out, so {"exp": nil} gives a token without exp. claims is not modified.
func (i *Issuer) Sign(claims map[string]any) string {
	i.mu.Lock()
	key := i.current
	i.mu.Unlock()
	return i.SignWith(key, "RS256", claims)
}

// SignWith signs claims (completed as Sign does) with any key and algorithm, for attack
// tests. key may be a *rsa.PrivateKey, *ecdsa.PrivateKey or []byte (HS256...) — the token
// then has no kid — or a jose.JSONWebKey holding one, whose KeyID becomes the kid. alg "none"
// gives an unsigned token ({"alg":"none"}, with the kid of a JSONWebKey key if any, and an
// empty signature), whatever the key.
func (i *Issuer) SignWith(key any, alg string, claims map[string]any) string {
	i.t.Helper()
	payload, err := json.Marshal(i.complete(claims))
	if err != nil {
		i.t.Fatalf("oidctest: claims: %v", err)
	}
	if alg == "none" {
		header := map[string]string{"alg": "none", "typ": "JWT"}
		if jwk, ok := key.(jose.JSONWebKey); ok && jwk.KeyID != "" {
			header["kid"] = jwk.KeyID
		}
		h, _ := json.Marshal(header)
		enc := base64.RawURLEncoding.EncodeToString
		return enc(h) + "." + enc(payload) + "."
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if jwk, ok := key.(jose.JSONWebKey); ok && jwk.KeyID != "" {
		// go-jose sets the kid of asymmetric keys itself; this also gives one to HMAC keys.
		opts = opts.WithHeader("kid", jwk.KeyID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key}, opts)
	if err != nil {
		i.t.Fatalf("oidctest: signer for %s: %v", alg, err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		i.t.Fatalf("oidctest: sign: %v", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		i.t.Fatalf("oidctest: serialize: %v", err)
	}
	return out
}

func (i *Issuer) complete(claims map[string]any) map[string]any {
	now := time.Now
	if i.Now != nil {
		now = i.Now
	}
	t := now().Unix()
	out := map[string]any{
		"iss": i.URL,
		"iat": t,
		"nbf": t,
		"exp": now().Add(TokenLifetime).Unix(),
	}
	maps.Copy(out, claims)
	for k, v := range out {
		if v == nil {
			delete(out, k)
		}
	}
	return out
}

// Key returns the current signing key (private, with its kid), for SignWith.
func (i *Issuer) Key() jose.JSONWebKey {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// KeyID returns the kid of the current signing key.
func (i *Issuer) KeyID() string { return i.Key().KeyID }

// PublicKey returns the current signing key's public key.
func (i *Issuer) PublicKey() crypto.PublicKey {
	k := i.Key()
	return k.Public().Key
}

// Rotate makes a new RS256 key the signing key and returns its kid. The previous keys stay
// in the JWKS, as real issuers keep them while tokens they signed are alive; Retire removes
// one.
func (i *Issuer) Rotate() string {
	k := i.newRSAKey()
	i.mu.Lock()
	defer i.mu.Unlock()
	i.current = k
	i.published = append(i.published, k.Public())
	return k.KeyID
}

// Retire removes the key with this kid from the JWKS (the signing key too, if it is that one:
// tokens it signs then no longer verify).
func (i *Issuer) Retire(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = slices.DeleteFunc(i.published, func(k jose.JSONWebKey) bool { return k.KeyID == kid })
}

// Publish adds the public half of a private key (e.g. an *ecdsa.PrivateKey for ES256) to the
// JWKS and returns the private key as a JSONWebKey with its kid, for SignWith. It does not
// change the key Sign uses.
func (i *Issuer) Publish(private crypto.Signer, alg string) jose.JSONWebKey {
	i.t.Helper()
	k := i.jwk(private, alg)
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = append(i.published, k.Public())
	return k
}

// PublishedKeyIDs returns the kids in the JWKS, in order.
func (i *Issuer) PublishedKeyIDs() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	ids := make([]string, len(i.published))
	for n, k := range i.published {
		ids[n] = k.KeyID
	}
	return ids
}

// SetDown makes both endpoints answer 503 (down) or serve again (up).
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// AdvertiseIssuer makes the discovery document name iss as the issuer instead of URL ("" restores URL).
func (i *Issuer) AdvertiseIssuer(iss string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.advertised = iss
}

// Requests returns how many requests the discovery and JWKS endpoints have had.
func (i *Issuer) Requests() (discovery, jwks int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.discovery, i.jwks
}

func (i *Issuer) newRSAKey() jose.JSONWebKey {
	i.t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		i.t.Fatalf("oidctest: generate key: %v", err)
	}
	return i.jwk(priv, "RS256")
}

// jwk wraps a private key with its RFC 7638 thumbprint as kid.
func (i *Issuer) jwk(private crypto.Signer, alg string) jose.JSONWebKey {
	i.t.Helper()
	k := jose.JSONWebKey{Key: private, Algorithm: alg, Use: "sig"}
	pub := k.Public()
	if !pub.Valid() {
		i.t.Fatalf("oidctest: unsupported key type %T", private)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		i.t.Fatalf("oidctest: thumbprint: %v", err)
	}
	k.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return k
}

// GitHubClaims returns claims shaped like those of a GitHub Actions token for a push to ref
// (a full ref: "refs/heads/main", "refs/tags/v1") in repo ("OWNER/REPO"): sub
// "repo:OWNER/REPO:ref:REF", aud "https://github.com/OWNER" (GitHub's default; set "aud" to
// what the trust expects), repository, repository_owner, their ids, ref, ref_type, sha,
// workflow, workflow_ref, job_workflow_ref, actor, event_name, run ids, jti. GitHub sets
// environment only for jobs that use one, and then changes sub: see WithEnvironment. Sign
// adds iss, iat, nbf and exp.
func GitHubClaims(repo, ref string) map[string]any {
	owner, _, _ := strings.Cut(repo, "/")
	refType := "branch"
	if strings.HasPrefix(ref, "refs/tags/") {
		refType = "tag"
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	sha := "4f8e1c0b2a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
	return map[string]any{
		"jti":                   hex.EncodeToString(jti),
		"sub":                   "repo:" + repo + ":ref:" + ref,
		"aud":                   "https://github.com/" + owner,
		"ref":                   ref,
		"ref_type":              refType,
		"ref_protected":         "false",
		"sha":                   sha,
		"repository":            repo,
		"repository_id":         "690000001",
		"repository_owner":      owner,
		"repository_owner_id":   "1000001",
		"repository_visibility": "private",
		"run_id":                "9000000001",
		"run_number":            "42",
		"run_attempt":           "1",
		"actor":                 "octocat",
		"actor_id":              "583231",
		"workflow":              "CI",
		"workflow_ref":          repo + "/.github/workflows/ci.yml@" + ref,
		"workflow_sha":          sha,
		"job_workflow_ref":      repo + "/.github/workflows/ci.yml@" + ref,
		"job_workflow_sha":      sha,
		"event_name":            "push",
		"head_ref":              "",
		"base_ref":              "",
		"runner_environment":    "github-hosted",
	}
}

// WithEnvironment makes GitHub claims those of a job that uses a deployment environment: it
// sets environment and, as GitHub does, sub "repo:OWNER/REPO:environment:ENV". It modifies
// and returns claims.
func WithEnvironment(claims map[string]any, env string) map[string]any {
	claims["environment"] = env
	claims["sub"] = fmt.Sprintf("repo:%v:environment:%s", claims["repository"], env)
	return claims
}
