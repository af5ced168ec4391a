package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/berth/berth/internal/metadata"
)

// A token grants what was asked for and is allowed; the rest is left out, not refused.
func TestGetTokenGrantsOnlyWhatIsAllowed(t *testing.T) {
	e := newEnv(t, Options{})
	alicePW := e.user(t, "alice", "devs")
	ci := e.robot(t, "ci", time.Time{})
	e.grant(t, "user:alice", "team/*", "pull", "push")
	e.grant(t, "group:devs", "team/secret", "delete")
	e.grant(t, "robot:ci", "team/app", "pull")
	e.grant(t, "anonymous", "public/*", "pull")

	for _, c := range []struct {
		who    string
		authz  string
		sub    string
		scopes []string
		want   []string
	}{
		{"alice", basic("alice", alicePW), "user:alice",
			[]string{"repository:team/app:pull,push,delete"},
			[]string{"repository:team/app:pull,push"}},
		{"alice, a group's grant", basic("alice", alicePW), "user:alice",
			[]string{"repository:team/secret:pull,push,delete"},
			[]string{"repository:team/secret:pull,push,delete"}},
		{"alice, several scopes, one not granted", basic("alice", alicePW), "user:alice",
			[]string{"repository:team/app:pull", "repository:other/app:pull,push", "repository:public/x:pull,push"},
			[]string{"repository:team/app:pull", "repository:public/x:pull"}},
		{"alice, scopes in one parameter", basic("alice", alicePW), "user:alice",
			[]string{"repository:team/a:push repository:team/b:pull"},
			[]string{"repository:team/a:push", "repository:team/b:pull"}},
		{"alice asks for everything", basic("alice", alicePW), "user:alice",
			[]string{"repository:team/app:*"},
			[]string{"repository:team/app:pull,push"}},
		{"alice, catalog", basic("alice", alicePW), "user:alice",
			[]string{"registry:catalog:*"},
			[]string{"registry:catalog:*"}},
		{"alice, no scope", basic("alice", alicePW), "user:alice", nil, nil},
		{"robot", basic("ci", ci), "robot:ci",
			[]string{"repository:team/app:pull,push", "repository:team/other:pull"},
			[]string{"repository:team/app:pull"}},
		{"robot, catalog", basic("ci", ci), "robot:ci",
			[]string{"registry:catalog:*", "repository:public/x:pull"},
			[]string{"registry:catalog:*", "repository:public/x:pull"}},
		{"anonymous", "", "anonymous",
			[]string{"repository:public/x:pull,push", "repository:team/app:pull"},
			[]string{"repository:public/x:pull"}},
		{"anonymous, catalog", "", "anonymous", []string{"registry:catalog:*"}, nil},
		{"unknown types and actions get nothing", basic("alice", alicePW), "user:alice",
			[]string{"plugin:team/app:pull", "repository:team/app:frob", "repository(plugin):team/b:pull"},
			[]string{"repository:team/b:pull"}},
	} {
		tok := e.token(t, c.authz, c.scopes...)
		sub, scope := e.scopeOf(t, tok)
		if sub != c.sub {
			t.Errorf("%s: subject %q, want %q", c.who, sub, c.sub)
		}
		wantScope(t, c.who, scope, c.want...)
	}
}

func TestGetTokenResponse(t *testing.T) {
	e := newEnv(t, Options{Service: "registry.example", TokenTTL: 2 * time.Minute})
	pw := e.user(t, "alice")
	before := time.Now()
	q := url.Values{"service": {"registry.example"}, "scope": {"repository:team/app:pull"}, "account": {"alice"}}
	r := e.do(t, http.MethodGet, "/token?"+q.Encode(), basic("alice", pw), nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /token: %d %s", r.status, short(r.body))
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var body tokenResponse
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Token == "" || body.AccessToken != body.Token || body.RefreshToken != "" {
		t.Errorf("response %+v: want token = access_token and no refresh token", body)
	}
	if body.ExpiresIn < 100 || body.ExpiresIn > 120 {
		t.Errorf("expires_in %d, want about 120", body.ExpiresIn)
	}
	if at, err := time.Parse(time.RFC3339, body.IssuedAt); err != nil || at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("issued_at %q (%v), want now", body.IssuedAt, err)
	}
	// The claims: issuer and audience are the service, and the header names the key.
	tok, err := jwt.ParseSigned(body.Token, allAlgs)
	if err != nil {
		t.Fatal(err)
	}
	var c tokenClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "registry.example" || len(c.Audience) != 1 || c.Audience[0] != "registry.example" || c.Subject != "user:alice" || c.ID == "" {
		t.Errorf("claims %+v", c.Claims)
	}
	if ttl := c.Expiry.Time().Sub(c.IssuedAt.Time()); ttl != 2*time.Minute {
		t.Errorf("exp - iat = %v, want 2m", ttl)
	}
	if h := tok.Headers[0]; h.Algorithm != "ES256" || h.KeyID == "" || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header %+v", h)
	}
	keys, err := ListKeys(bg, e.st, nil)
	if err != nil || len(keys) != 1 || keys[0].ID != tok.Headers[0].KeyID {
		t.Errorf("kid %s, keys %+v, %v", tok.Headers[0].KeyID, keys, err)
	}
	if len(c.Access) != 0 {
		t.Errorf("access %+v for a repository alice may not pull", c.Access)
	}
	// A token ID is new each time.
	r2 := e.do(t, http.MethodGet, "/token?"+q.Encode(), basic("alice", pw), nil)
	var body2 tokenResponse
	if err := json.Unmarshal(r2.body, &body2); err != nil || body2.Token == "" || body2.Token == body.Token {
		t.Errorf("second token: %d, equal to the first: %v", r2.status, body2.Token == body.Token)
	}
}

func TestGetTokenErrors(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	e.grant(t, "user:alice", "*", "pull")
	aliceTok := e.token(t, basic("alice", pw), "repository:a:pull")

	for _, c := range []struct {
		what   string
		method string
		query  string
		authz  string
		status int
		code   string
	}{
		{"wrong password", "GET", "scope=repository:a:pull", basic("alice", "wrong"), 401, "UNAUTHORIZED"},
		{"unknown user", "GET", "scope=repository:a:pull", basic("nobody", "x"), 401, "UNAUTHORIZED"},
		{"malformed Basic", "GET", "", "Basic !!!", 401, "UNAUTHORIZED"},
		{"unknown scheme", "GET", "", "Digest abc", 401, "UNAUTHORIZED"},
		{"a token is not a credential for a token", "GET", "scope=repository:a:pull", bearer(aliceTok), 401, "UNAUTHORIZED"},
		{"garbage token", "GET", "", bearer("x.y.z"), 401, "UNAUTHORIZED"},
		{"wrong service", "GET", "service=other&scope=repository:a:pull", basic("alice", pw), 400, "invalid_request"},
		{"malformed scope", "GET", "scope=repository", basic("alice", pw), 400, "invalid_scope"},
		{"scope without actions", "GET", "scope=repository:a", basic("alice", pw), 400, "invalid_scope"},
		{"invalid repository name", "GET", "scope=repository:Team/App:pull", basic("alice", pw), 400, "invalid_scope"},
		{"PUT", "PUT", "", basic("alice", pw), 405, "invalid_request"},
		{"DELETE", "DELETE", "", "", 405, "invalid_request"},
	} {
		r := e.do(t, c.method, "/token?"+c.query, c.authz, nil)
		if r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.what, r.status, short(r.body), c.status)
			continue
		}
		m := r.json(t)
		if m["error"] != c.code {
			t.Errorf("%s: error %v, want %s", c.what, m["error"], c.code)
		}
		if errs, _ := m["errors"].([]any); len(errs) != 1 {
			t.Errorf("%s: errors %v, want one (for Docker clients)", c.what, m["errors"])
		}
		if strings.Contains(string(r.body), "pw-alice") {
			t.Errorf("%s: the response contains the password", c.what)
		}
		if c.status == 401 && r.header.Get("WWW-Authenticate") != `Basic realm="berth"` {
			t.Errorf("%s: WWW-Authenticate %q", c.what, r.header.Get("WWW-Authenticate"))
		}
		if c.status == 405 && r.header.Get("Allow") != "GET, POST" {
			t.Errorf("%s: Allow %q", c.what, r.header.Get("Allow"))
		}
	}
}

func TestTooManyScopes(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	e.grant(t, "user:alice", "*", "pull")
	scopes := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("repository:r%d:pull", i))
		}
		return out
	}
	// GET: 64 scope parameters are fine, 65 are not.
	tok := e.token(t, basic("alice", pw), scopes(64)...)
	if _, sc := e.scopeOf(t, tok); len(sc) != 64 {
		t.Errorf("64 scopes gave %d", len(sc))
	}
	wantTokenError(t, "GET, 65 scopes", e.getToken(t, basic("alice", pw), scopes(65)...), 400, "invalid_scope")
	// Nor in fewer parameters, separated by spaces.
	wantTokenError(t, "GET, 65 scopes in one parameter", e.getToken(t, basic("alice", pw), strings.Join(scopes(65), " ")), 400, "invalid_scope")
	wantTokenError(t, "GET, 1000 scopes in two parameters", e.getToken(t, basic("alice", pw), strings.Join(scopes(500), " "), strings.Join(scopes(500), " ")), 400, "invalid_scope")
	// POST: space-separated in one field.
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {pw}}
	form.Set("scope", strings.Join(scopes(64), " "))
	if r := e.postToken(t, form); r.status != http.StatusOK {
		t.Errorf("POST, 64 scopes: %d %s", r.status, short(r.body))
	}
	form.Set("scope", strings.Join(scopes(65), " "))
	wantTokenError(t, "POST, 65 scopes", e.postToken(t, form), 400, "invalid_scope")
}

func wantTokenError(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: %d %s, want %d", what, r.status, short(r.body), status)
		return
	}
	if m := r.json(t); m["error"] != code {
		t.Errorf("%s: error %v, want %s", what, m["error"], code)
	}
}

func TestPostToken(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	e.grant(t, "user:alice", "team/*", "pull")

	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {pw},
		"service": {"berth"}, "client_id": {"docker"}, "scope": {"repository:team/app:pull,push repository:other/x:pull"}}
	r := e.postToken(t, form)
	if r.status != http.StatusOK {
		t.Fatalf("POST password: %d %s", r.status, short(r.body))
	}
	var body tokenResponse
	json.Unmarshal(r.body, &body)
	if body.AccessToken == "" || body.Token != "" || body.TokenType != "Bearer" || body.RefreshToken != "" {
		t.Errorf("response %+v: want access_token, token_type Bearer, no token and no refresh_token", body)
	}
	if body.Scope != "repository:team/app:pull" {
		t.Errorf("scope %q", body.Scope)
	}
	_, sc := e.scopeOf(t, body.AccessToken)
	wantScope(t, "POST password", sc, "repository:team/app:pull")

	for _, c := range []struct {
		what   string
		form   url.Values
		status int
		code   string
	}{
		{"wrong password", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"nope"}}, 401, "UNAUTHORIZED"},
		{"no password", url.Values{"grant_type": {"password"}, "username": {"alice"}}, 401, "UNAUTHORIZED"},
		{"unknown user", url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"x"}}, 401, "UNAUTHORIZED"},
		{"unsupported grant_type", url.Values{"grant_type": {"client_credentials"}, "client_id": {"x"}}, 400, "unsupported_grant_type"},
		{"no grant_type", url.Values{"username": {"alice"}, "password": {pw}}, 400, "unsupported_grant_type"},
		{"wrong service", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {pw}, "service": {"other"}}, 400, "invalid_request"},
		{"unknown refresh token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"berth_rft_nope"}}, 401, "UNAUTHORIZED"},
		{"empty refresh token", url.Values{"grant_type": {"refresh_token"}}, 401, "UNAUTHORIZED"},
		{"token exchange without federation", url.Values{"grant_type": {grantExchange}, "subject_token": {"x.y.z"}}, 401, "UNAUTHORIZED"},
	} {
		r := e.postToken(t, c.form)
		wantTokenError(t, c.what, r, c.status, c.code)
		if r.status == 401 && r.header.Get("WWW-Authenticate") != "" {
			t.Errorf("%s: OAuth2 401 with WWW-Authenticate %q", c.what, r.header.Get("WWW-Authenticate"))
		}
	}

	// A body over the limit is refused before it is parsed.
	big := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {pw}, "pad": {strings.Repeat("x", maxTokenForm)}}
	wantTokenError(t, "oversized form", e.postToken(t, big), 400, "invalid_request")
	// A body that is not a form.
	r = e.do(t, http.MethodPost, "/token", "", strings.NewReader("%zz"), "Content-Type", "application/x-www-form-urlencoded")
	wantTokenError(t, "malformed form", r, 400, "invalid_request")
}

// docker login: a password grant with access_type=offline gives a refresh token, which gives
// access tokens until the password changes or the account goes.
func TestRefreshTokens(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	bobPW := e.user(t, "bob")
	e.grant(t, "user:alice", "team/*", "pull", "push")

	login := func(user, pass string) string {
		t.Helper()
		r := e.postToken(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "access_type": {"offline"}})
		if r.status != http.StatusOK {
			t.Fatalf("POST password offline: %d %s", r.status, short(r.body))
		}
		var body tokenResponse
		json.Unmarshal(r.body, &body)
		if !strings.HasPrefix(body.RefreshToken, refreshPrefix) || body.AccessToken == "" {
			t.Fatalf("response %+v: want a refresh token", body)
		}
		return body.RefreshToken
	}
	refresh := func(rt string, scope string) response {
		t.Helper()
		return e.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {scope}, "service": {"berth"}})
	}
	rt := login("alice", pw)
	// Stored by hash only.
	if _, err := e.st.RefreshToken(bg, rt); err == nil {
		t.Error("the refresh token is stored as it is")
	}
	if name, err := e.st.RefreshToken(bg, hashToken(rt)); err != nil || name != "alice" {
		t.Errorf("stored refresh token: %q, %v", name, err)
	}

	r := refresh(rt, "repository:team/app:pull,push,delete")
	if r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.status, short(r.body))
	}
	var body tokenResponse
	json.Unmarshal(r.body, &body)
	if body.RefreshToken != "" {
		t.Errorf("a refresh grant without access_type=offline gave another refresh token")
	}
	sub, sc := e.scopeOf(t, body.AccessToken)
	if sub != "user:alice" {
		t.Errorf("refreshed token's subject %q", sub)
	}
	wantScope(t, "refreshed token", sc, "repository:team/app:pull,push")
	// Refresh tokens are reusable until they expire (docker keeps one per registry).
	if r := refresh(rt, ""); r.status != http.StatusOK {
		t.Errorf("second refresh: %d %s", r.status, short(r.body))
	}
	// GET with offline_token=true gives one too (the older docker flow); an anonymous caller none.
	q := url.Values{"service": {"berth"}, "offline_token": {"true"}}
	r = e.do(t, http.MethodGet, "/token?"+q.Encode(), basic("alice", pw), nil)
	json.Unmarshal(r.body, &body)
	if r.status != http.StatusOK || !strings.HasPrefix(body.RefreshToken, refreshPrefix) {
		t.Errorf("GET offline_token=true: %d %+v", r.status, body)
	}
	rtGet := body.RefreshToken
	body = tokenResponse{}
	r = e.do(t, http.MethodGet, "/token?"+q.Encode(), "", nil)
	json.Unmarshal(r.body, &body)
	if r.status != http.StatusOK || body.RefreshToken != "" {
		t.Errorf("anonymous GET offline_token=true: %d %+v, want no refresh token", r.status, body)
	}

	// A description change keeps refresh tokens; a new password drops them.
	a, err := e.st.Account(bg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	a.Description = "changed"
	if err := e.st.UpdateAccount(bg, a); err != nil {
		t.Fatal(err)
	}
	if r := refresh(rt, ""); r.status != http.StatusOK {
		t.Errorf("refresh after a description change: %d %s", r.status, short(r.body))
	}
	a.Secret = cheapHash(t, "new password")
	if err := e.st.UpdateAccount(bg, a); err != nil {
		t.Fatal(err)
	}
	wantTokenError(t, "refresh after a password change", refresh(rt, ""), 401, "UNAUTHORIZED")
	wantTokenError(t, "GET's refresh token after a password change", refresh(rtGet, ""), 401, "UNAUTHORIZED")

	// A new login, then the account is deleted.
	e.forgetLogins()
	rt = login("alice", "new password")
	bobRT := login("bob", bobPW)
	if err := e.st.DeleteAccount(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	wantTokenError(t, "refresh after DeleteAccount", refresh(rt, ""), 401, "UNAUTHORIZED")
	// Even when an account of the same name comes back.
	e.user(t, "alice")
	wantTokenError(t, "refresh after the name is reused", refresh(rt, ""), 401, "UNAUTHORIZED")
	if r := refresh(bobRT, ""); r.status != http.StatusOK {
		t.Errorf("bob's refresh: %d %s", r.status, short(r.body))
	}

	// An expired refresh token.
	if err := e.st.CreateRefreshToken(bg, hashToken("berth_rft_old"), "bob", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantTokenError(t, "expired refresh token", refresh("berth_rft_old", ""), 401, "UNAUTHORIZED")
}

// A robot's refresh token ends with the robot; so does a token made from it.
func TestRobotExpiry(t *testing.T) {
	e := newEnv(t, Options{})
	past := e.robot(t, "old", time.Now().Add(-time.Minute))
	soon := time.Now().Add(2 * time.Minute).Truncate(time.Second)
	secret := e.robot(t, "soon", soon)
	e.grant(t, "robot:old", "*", "pull")
	e.grant(t, "robot:soon", "*", "pull")

	wantTokenError(t, "expired robot, GET", e.getToken(t, basic("old", past), "repository:a:pull"), 401, "UNAUTHORIZED")
	wantTokenError(t, "expired robot, POST", e.postToken(t, url.Values{"grant_type": {"password"}, "username": {"old"}, "password": {past}}), 401, "UNAUTHORIZED")
	wantStatus(t, "expired robot, Basic", e.check(t, basic("old", past), "a", "", "pull"), 401, "UNAUTHORIZED")

	// The token lives 5 minutes by default, but not past the robot.
	r := e.getToken(t, basic("soon", secret), "repository:a:pull")
	var body tokenResponse
	json.Unmarshal(r.body, &body)
	if r.status != http.StatusOK || body.ExpiresIn > 120 || body.ExpiresIn < 60 {
		t.Errorf("GET /token for a robot expiring in 2m: %d, expires_in %d", r.status, body.ExpiresIn)
	}
	v, err := e.svc.tokens.verify(bg, body.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !v.expiry.Equal(soon) {
		t.Errorf("token expires %v, want the robot's expiry %v", v.expiry, soon)
	}

	// The robot's refresh token stops working when the robot expires.
	if err := e.st.CreateRefreshToken(bg, hashToken("berth_rft_old"), "old", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantTokenError(t, "refresh token of an expired robot", e.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"berth_rft_old"}}), 401, "UNAUTHORIZED")
}

// fakeFederation vouches for the OIDC token "good-oidc-token".
type fakeFederation struct{ expiry time.Time }

func (f fakeFederation) Exchange(_ context.Context, raw string) (*Federated, error) {
	switch raw {
	case "good-oidc-token":
		return &Federated{Trust: "github", Subject: "repo:acme/app:ref:refs/heads/main", Expiry: f.expiry,
			Grants: []metadata.Grant{{Pattern: "acme/*", Actions: []string{"pull", "push"}}}}, nil
	case "issuer-down":
		return nil, fmt.Errorf("%w: connection refused", ErrUnavailable)
	}
	return nil, fmt.Errorf("token from an untrusted issuer")
}

func TestTokenExchange(t *testing.T) {
	expiry := time.Now().Add(90 * time.Second).Truncate(time.Second)
	e := newEnv(t, Options{Federation: fakeFederation{expiry}})
	e.grant(t, "anonymous", "public/*", "pull")
	exchange := func(tok, scope string) response {
		return e.postToken(t, url.Values{"grant_type": {grantExchange}, "subject_token": {tok}, "scope": {scope}})
	}
	r := exchange("good-oidc-token", "repository:acme/app:pull,push repository:acme/app/sub:pull repository:other/x:pull repository:public/p:pull")
	if r.status != http.StatusOK {
		t.Fatalf("token exchange: %d %s", r.status, short(r.body))
	}
	var body tokenResponse
	json.Unmarshal(r.body, &body)
	if body.RefreshToken != "" {
		t.Error("an OIDC caller got a refresh token")
	}
	if body.ExpiresIn > 90 {
		t.Errorf("expires_in %d, want at most the OIDC token's 90s", body.ExpiresIn)
	}
	sub, sc := e.scopeOf(t, body.AccessToken)
	if sub != "oidc:github:repo:acme/app:ref:refs/heads/main" {
		t.Errorf("subject %q", sub)
	}
	wantScope(t, "exchanged token", sc, "repository:acme/app:pull,push", "repository:acme/app/sub:pull", "repository:public/p:pull")

	// The token works for what it carries, and an OIDC caller is never sent for a new token.
	wantStatus(t, "OIDC token, push", e.check(t, bearer(body.AccessToken), "acme/app", "", "push"), 200, "")
	wantStatus(t, "OIDC token, other pull", e.check(t, bearer(body.AccessToken), "acme/other", "", "pull"), 404, "NAME_UNKNOWN")

	wantTokenError(t, "untrusted OIDC token", exchange("bad", ""), 401, "UNAUTHORIZED")
	wantTokenError(t, "OIDC issuer down", exchange("issuer-down", ""), 503, "temporarily_unavailable")
	// Basic with user "oidc" and the OIDC token as the password (for clients without token exchange).
	wantStatus(t, "OIDC Basic, push", e.check(t, basic(OIDCUser, "good-oidc-token"), "acme/app", "", "push"), 200, "")
	wantStatus(t, "OIDC Basic, other push", e.check(t, basic(OIDCUser, "good-oidc-token"), "other/app", "", "push"), 403, "DENIED")
	wantStatus(t, "OIDC Basic, bad token", e.check(t, basic(OIDCUser, "bad"), "acme/app", "", "pull"), 401, "UNAUTHORIZED")
}

// The token endpoint answers the same without a server in front: ServeHTTP reads RemoteAddr.
func TestTokenEndpointDirect(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	req := httptest.NewRequest(http.MethodGet, "/token?service=berth", nil)
	req.SetBasicAuth("alice", pw)
	req.RemoteAddr = "192.0.2.1:5555"
	w := httptest.NewRecorder()
	e.svc.ServeHTTP(w, req)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("direct GET /token: %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}
