package oidctest_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/berth/berth/internal/auth/oidc/oidctest"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content type %q", url, ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestIssuerServesDiscoveryAndKeys(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	if !strings.HasPrefix(iss.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %q", iss.URL)
	}
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if code := getJSON(t, iss.URL+oidctest.DiscoveryPath, &doc); code != http.StatusOK {
		t.Fatalf("discovery: %d", code)
	}
	if doc.Issuer != iss.URL || doc.JWKSURI != iss.URL+oidctest.JWKSPath || len(doc.Algs) == 0 {
		t.Fatalf("discovery document %+v", doc)
	}
	var set jose.JSONWebKeySet
	if code := getJSON(t, doc.JWKSURI, &set); code != http.StatusOK {
		t.Fatalf("jwks: %d", code)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != iss.KeyID() || !set.Keys[0].IsPublic() || set.Keys[0].Algorithm != "RS256" {
		t.Fatalf("key set %+v", set.Keys)
	}
	if d, k := iss.Requests(); d != 1 || k != 1 {
		t.Fatalf("requests %d %d", d, k)
	}

	iss.AdvertiseIssuer("https://elsewhere.example")
	getJSON(t, iss.URL+oidctest.DiscoveryPath, &doc)
	if doc.Issuer != "https://elsewhere.example" {
		t.Fatalf("advertised %q", doc.Issuer)
	}
	iss.SetDown(true)
	if code := getJSON(t, iss.URL+oidctest.JWKSPath, &set); code != http.StatusServiceUnavailable {
		t.Fatalf("down: %d", code)
	}
	iss.Close()
	iss.Close()
	if _, err := http.Get(iss.URL + oidctest.DiscoveryPath); err == nil {
		t.Fatal("closed issuer answered")
	}
}

func TestSignAndRotate(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	now := time.Unix(1_900_000_000, 0)
	iss.Now = func() time.Time { return now }
	claims := map[string]any{"sub": "x", "nbf": nil, "custom": true}
	raw := iss.Sign(claims)
	if len(claims) != 3 {
		t.Fatalf("Sign changed the claims: %v", claims)
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if jws.Signatures[0].Header.KeyID != iss.KeyID() {
		t.Fatalf("kid %q, want %q", jws.Signatures[0].Header.KeyID, iss.KeyID())
	}
	payload, err := jws.Verify(iss.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	if got["iss"] != iss.URL || got["iat"] != float64(now.Unix()) || got["exp"] != float64(now.Add(oidctest.TokenLifetime).Unix()) ||
		got["sub"] != "x" || got["custom"] != true {
		t.Fatalf("claims %v", got)
	}
	if _, ok := got["nbf"]; ok {
		t.Fatal("nbf set to nil was not left out")
	}

	old := iss.KeyID()
	kid := iss.Rotate()
	if kid == old || iss.KeyID() != kid {
		t.Fatal("Rotate did not change the key")
	}
	if ids := iss.PublishedKeyIDs(); len(ids) != 2 || ids[0] != old || ids[1] != kid {
		t.Fatalf("published %v", ids)
	}
	iss.Retire(old)
	if ids := iss.PublishedKeyIDs(); len(ids) != 1 || ids[0] != kid {
		t.Fatalf("after Retire: %v", ids)
	}

	// alg none: header and an empty signature.
	none := iss.SignWith(iss.Key(), "none", nil)
	parts := strings.Split(none, ".")
	if len(parts) != 3 || parts[2] != "" {
		t.Fatalf("none token %q", none)
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if !strings.Contains(string(h), `"alg":"none"`) || !strings.Contains(string(h), kid) {
		t.Fatalf("none header %s", h)
	}
}

func TestGitHubClaims(t *testing.T) {
	c := oidctest.GitHubClaims("acme/app", "refs/heads/main")
	for k, want := range map[string]string{
		"sub":              "repo:acme/app:ref:refs/heads/main",
		"aud":              "https://github.com/acme",
		"repository":       "acme/app",
		"repository_owner": "acme",
		"ref":              "refs/heads/main",
		"ref_type":         "branch",
		"event_name":       "push",
		"workflow":         "CI",
		"actor":            "octocat",
		"job_workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main",
	} {
		if c[k] != want {
			t.Errorf("%s = %v, want %q", k, c[k], want)
		}
	}
	if _, ok := c["environment"]; ok {
		t.Error("environment set without WithEnvironment")
	}
	if c2 := oidctest.GitHubClaims("acme/app", "refs/heads/main"); c2["jti"] == c["jti"] {
		t.Error("jti repeats")
	}
	if c := oidctest.GitHubClaims("acme/app", "refs/tags/v1"); c["ref_type"] != "tag" {
		t.Errorf("ref_type %v", c["ref_type"])
	}
	oidctest.WithEnvironment(c, "production")
	if c["environment"] != "production" || c["sub"] != "repo:acme/app:environment:production" {
		t.Errorf("environment claims %v %v", c["environment"], c["sub"])
	}
}
