package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/auth/oidc/oidctest"
)

// TestOIDCFederation: a CI job logs in with nothing but its OIDC token (GitHub Actions' claims,
// from a local issuer with generated keys) and pushes where its trust allows; tokens from an
// untrusted issuer, for another audience, from another repository or branch, or expired get
// nothing.
func TestOIDCFederation(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	rogue := oidctest.NewIssuer(t) // a working issuer berth does not trust
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`auth:
  oidc:
    - name: gh
      issuer: %s
      audience: berth-e2e
      conditions:
        repository: acme/app
        ref: refs/heads/main
      grants:
        - repositories: "ci/*"
          actions: [pull, push]
`, iss.URL)), 0o644)
	b := startSecureBerth(t, "--config", cfg)

	claims := func(repo, ref string) map[string]any {
		c := oidctest.GitHubClaims(repo, ref)
		c["aud"] = "berth-e2e"
		return c
	}
	good := iss.Sign(claims("acme/app", "refs/heads/main"))

	// crane with the OIDC token as the password of user "oidc", as `docker login` would.
	dir := t.TempDir()
	crane := tool(t, "crane")
	if out, err := runEnv(dir, nil, crane, "auth", "login", b.Addr, "-u", "oidc", "-p", good); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	layer := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layer, clTar(t, map[string]string{"hello.txt": "pushed by CI with an OIDC token"}), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runEnv(dir, nil, crane, "append", "--insecure", "-f", layer, "-t", b.Addr+"/ci/app:1"); err != nil {
		t.Fatalf("crane push with the OIDC identity: %v\n%s", err, out)
	}
	if out, err := runEnv(dir, nil, crane, "digest", "--insecure", b.Addr+"/ci/app:1"); err != nil || !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("crane digest: %v\n%s", err, out)
	}
	// Refused as the README says a push without a grant is: DENIED (not a crash, not a 5xx).
	if out, err := runEnv(dir, nil, crane, "append", "--insecure", "-f", layer, "-t", b.Addr+"/prod/app:1"); err == nil || !strings.Contains(out, "DENIED") {
		t.Fatalf("push outside the trust's grants: %v, want refused with DENIED:\n%s", err, out)
	}

	tokenFor := func(jwt string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+b.Addr+"/token?service=berth&scope=repository:ci/app:pull,push", nil)
		req.SetBasicAuth("oidc", jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	code, body := tokenFor(good)
	if code != http.StatusOK {
		t.Fatalf("token for a trusted OIDC token: %d %v", code, body)
	}
	if got := accessOf(t, body["token"].(string)); got != "repository:ci/app:pull,push" {
		t.Errorf("scope of the registry token: %q", got)
	}

	expired := claims("acme/app", "refs/heads/main")
	expired["iat"], expired["nbf"], expired["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Hour).Unix(), time.Now().Add(-10*time.Minute).Unix()
	wrongAud := claims("acme/app", "refs/heads/main")
	wrongAud["aud"] = "https://github.com/acme"
	for name, jwt := range map[string]string{
		"untrusted issuer": rogue.Sign(claims("acme/app", "refs/heads/main")),
		"other repository": iss.Sign(claims("evil/app", "refs/heads/main")),
		"other branch":     iss.Sign(claims("acme/app", "refs/heads/feature")),
		"wrong audience":   iss.Sign(wrongAud),
		"expired":          iss.Sign(expired),
		"garbage":          "not.a.jwt",
	} {
		if code, body := tokenFor(jwt); code != http.StatusUnauthorized {
			t.Errorf("%s: /token answered %d %v, want 401", name, code, body)
		}
	}

	// The OAuth2 token exchange, and a registry token that ends with the OIDC token.
	short := claims("acme/app", "refs/heads/main")
	short["exp"] = time.Now().Add(90 * time.Second).Unix()
	resp, err := http.PostForm("http://"+b.Addr+"/token", url.Values{
		"grant_type":    {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {iss.Sign(short)},
		"service":       {"berth"},
		"scope":         {"repository:ci/app:pull"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&ex)
	if resp.StatusCode != http.StatusOK || ex.AccessToken == "" || ex.ExpiresIn > 90 || ex.ExpiresIn < 30 {
		t.Fatalf("token exchange: %d, expires_in %d", resp.StatusCode, ex.ExpiresIn)
	}
	req, _ := http.NewRequest(http.MethodHead, "http://"+b.Addr+"/v2/ci/app/manifests/1", nil)
	req.Header.Set("Authorization", "Bearer "+ex.AccessToken)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("manifest HEAD with the exchanged token: %v %v", err, r)
	}
}

// accessOf decodes a registry token's access claim (without verifying it) as "type:name:actions".
func accessOf(t *testing.T, jwt string) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Access []struct {
			Type, Name string
			Actions    []string
		}
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range c.Access {
		out = append(out, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	return strings.Join(out, " ")
}
