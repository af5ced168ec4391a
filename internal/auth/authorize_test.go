package auth

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
)

// wantChallenge checks a 401 with a Bearer challenge for scope ("" for none) and error.
func wantChallenge(t *testing.T, e *env, what string, r response, scope, errParam string) {
	t.Helper()
	if r.status != http.StatusUnauthorized {
		t.Errorf("%s: status %d %s, want 401", what, r.status, short(r.body))
		return
	}
	if code := r.errorCode(t); code != "UNAUTHORIZED" {
		t.Errorf("%s: code %s, want UNAUTHORIZED", what, code)
	}
	c := challengeParams(t, r.header.Get("WWW-Authenticate"))
	want := map[string]string{"realm": e.srv.URL + "/token", "service": "berth"}
	if scope != "" {
		want["scope"] = scope
	}
	if errParam != "" {
		want["error"] = errParam
	}
	if len(c) != len(want) {
		t.Errorf("%s: challenge %v, want %v", what, c, want)
		return
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s: challenge %v, want %v", what, c, want)
			return
		}
	}
}

func TestAuthorizeAnonymous(t *testing.T) {
	e := newEnv(t, Options{})
	// Without grants: every request is sent for credentials, with the scope it needs.
	wantChallenge(t, e, "anonymous pull", e.check(t, "", "team/a", "", "pull"), "repository:team/a:pull", "")
	wantChallenge(t, e, "anonymous push", e.check(t, "", "team/a", "", "push"), "repository:team/a:pull,push", "")
	wantChallenge(t, e, "anonymous delete", e.check(t, "", "team/a", "", "delete"), "repository:team/a:delete", "")
	wantChallenge(t, e, "anonymous base", e.check(t, "", "", ""), "", "")
	// A cached repository's challenge names the repository as the client named it.
	wantChallenge(t, e, "anonymous pull of a cached name", e.check(t, "", "library/nginx", "docker-hub/library/nginx", "pull"), "repository:library/nginx:pull", "")

	// Public repositories are an explicit grant to anonymous.
	e.grant(t, "anonymous", "public/*", "pull")
	r := e.check(t, "", "public/app", "", "pull")
	wantStatus(t, "anonymous pull of public/app", r, 200, "")
	if m := r.json(t); m["subject"] != "anonymous" || m["actions"] != "pull" {
		t.Errorf("anonymous pull of public/app: %v", m)
	}
	wantChallenge(t, e, "anonymous push to public/app", e.check(t, "", "public/app", "", "push"), "repository:public/app:pull,push", "")
	wantChallenge(t, e, "anonymous pull of public (not public/*)", e.check(t, "", "public", "", "pull"), "repository:public:pull", "")
	wantChallenge(t, e, "anonymous pull of team/a", e.check(t, "", "team/a", "", "pull"), "repository:team/a:pull", "")
	// The base endpoint still wants credentials: clients log in there.
	wantChallenge(t, e, "anonymous base with public repositories", e.check(t, "", "", ""), "", "")

	// The same with an anonymous token.
	tok := e.token(t, "", "repository:public/app:pull,push", "repository:team/a:pull")
	_, sc := e.scopeOf(t, tok)
	wantScope(t, "anonymous token", sc, "repository:public/app:pull")
	wantStatus(t, "anonymous token, pull", e.check(t, bearer(tok), "public/app", "", "pull"), 200, "")
	wantChallenge(t, e, "anonymous token, push", e.check(t, bearer(tok), "public/app", "", "push"), "repository:public/app:pull,push", "")
	wantChallenge(t, e, "anonymous token, other repository", e.check(t, bearer(tok), "public/other", "", "pull"), "repository:public/other:pull", "")
	wantChallenge(t, e, "anonymous token, base", e.check(t, bearer(tok), "", ""), "", "")
}

func TestAuthorizeRealm(t *testing.T) {
	e := newEnv(t, Options{Realm: "https://auth.example/token", Service: "reg"})
	r := e.check(t, "", "team/a", "", "pull")
	c := challengeParams(t, r.header.Get("WWW-Authenticate"))
	if r.status != 401 || c["realm"] != "https://auth.example/token" || c["service"] != "reg" {
		t.Errorf("challenge %v", c)
	}
}

// Callers without access cannot tell which repositories exist: reads are 404 and writes 403,
// the same whether the repository is there or not.
func TestAuthorizeDoesNotLeakNames(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "carol")
	ci := e.robot(t, "ci", time.Time{})
	e.grant(t, "user:carol", "carol/*", "pull", "push")
	e.grant(t, "robot:ci", "carol/*", "pull")
	// team/secret exists (it is in the metadata store); team/ghost does not.
	if err := e.st.LinkBlob(bg, "team/secret", digest.FromString("x"), 1); err != nil {
		t.Fatal(err)
	}
	carolTok := e.token(t, basic("carol", pw), "repository:team/secret:pull,push,delete", "repository:team/ghost:pull,push,delete")
	ciTok := e.token(t, basic("ci", ci), "repository:team/secret:pull", "repository:team/ghost:pull")
	for _, c := range []struct {
		who    string
		authz  string
		need   string
		status int
		code   string
	}{
		{"carol, Basic", basic("carol", pw), "pull", 404, "NAME_UNKNOWN"},
		{"carol, Basic", basic("carol", pw), "push", 403, "DENIED"},
		{"carol, Basic", basic("carol", pw), "delete", 403, "DENIED"},
		{"carol, token", bearer(carolTok), "pull", 404, "NAME_UNKNOWN"},
		{"carol, token", bearer(carolTok), "push", 403, "DENIED"},
		{"carol, token", bearer(carolTok), "delete", 403, "DENIED"},
		{"robot, Basic", basic("ci", ci), "pull", 404, "NAME_UNKNOWN"},
		{"robot, token", bearer(ciTok), "pull", 404, "NAME_UNKNOWN"},
		{"robot, token", bearer(ciTok), "push", 403, "DENIED"},
	} {
		exists := e.check(t, c.authz, "team/secret", "", c.need)
		missing := e.check(t, c.authz, "team/ghost", "", c.need)
		wantStatus(t, c.who+" "+c.need+" team/secret", exists, c.status, c.code)
		if exists.status != missing.status || string(exists.body) != string(missing.body) || !sameHeaders(exists.header, missing.header) {
			t.Errorf("%s %s: team/secret answers %d %v %s, team/ghost %d %v %s", c.who, c.need,
				exists.status, exists.header, exists.body, missing.status, missing.header, missing.body)
		}
		if strings.Contains(string(exists.body), "secret") {
			t.Errorf("%s %s: the answer names the repository: %s", c.who, c.need, exists.body)
		}
	}
	// Anonymous callers are asked for credentials for either, the same way.
	exists := e.check(t, "", "team/secret", "", "pull")
	missing := e.check(t, "", "team/ghost", "", "pull")
	if exists.status != 401 || missing.status != 401 || string(exists.body) != string(missing.body) ||
		strings.ReplaceAll(exists.header.Get("WWW-Authenticate"), "secret", "ghost") != missing.header.Get("WWW-Authenticate") {
		t.Errorf("anonymous: team/secret answers %d %v, team/ghost %d %v", exists.status, exists.header, missing.status, missing.header)
	}
}

// sameHeaders compares headers but for the date.
func sameHeaders(a, b http.Header) bool {
	a, b = a.Clone(), b.Clone()
	a.Del("Date")
	b.Del("Date")
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestAuthorizeGrants(t *testing.T) {
	e := newEnv(t, Options{})
	puller := e.user(t, "puller")
	pusher := e.user(t, "pusher")
	deleter := e.user(t, "deleter")
	admin := e.user(t, "admin")
	member := e.user(t, "member", "devs")
	e.grant(t, "user:puller", "team/*", "pull")
	e.grant(t, "user:pusher", "team/*", "pull", "push")
	e.grant(t, "user:deleter", "team/*", "delete")
	e.grant(t, "user:admin", "*", "admin")
	e.grant(t, "group:devs", "team/*", "pull", "push")

	for _, c := range []struct {
		user, pw, name, need string
		status               int
		code, actions        string
	}{
		{"puller", puller, "team/a", "pull", 200, "", "pull"},
		{"puller", puller, "team/a/b", "pull", 200, "", "pull"},
		{"puller", puller, "team/a", "push", 403, "DENIED", ""},
		{"puller", puller, "team/a", "delete", 403, "DENIED", ""},
		{"puller", puller, "team", "pull", 404, "NAME_UNKNOWN", ""},
		{"puller", puller, "other/a", "pull", 404, "NAME_UNKNOWN", ""},
		{"pusher", pusher, "team/a", "push", 200, "", "pull,push"},
		{"pusher", pusher, "team/a", "delete", 403, "DENIED", ""},
		// Delete without pull: it may delete what it cannot read (a cleanup robot), and reads
		// are refused as for a repository it cannot see.
		{"deleter", deleter, "team/a", "delete", 200, "", "delete"},
		{"deleter", deleter, "team/a", "pull", 404, "NAME_UNKNOWN", ""},
		{"deleter", deleter, "team/a", "push", 403, "DENIED", ""},
		{"admin", admin, "anything/at/all", "delete", 200, "", "pull,push,delete,fetch,admin"},
		{"admin", admin, "x", "push", 200, "", "pull,push,delete,fetch,admin"},
		{"member", member, "team/a", "push", 200, "", "pull,push"},
		{"member", member, "other/a", "pull", 404, "NAME_UNKNOWN", ""},
	} {
		what := c.user + " " + c.need + " " + c.name
		// Basic on the request works like a token.
		tok := e.token(t, basic(c.user, c.pw), "repository:"+c.name+":pull,push,delete")
		for _, authz := range []string{basic(c.user, c.pw), bearer(tok)} {
			r := e.check(t, authz, c.name, "", c.need)
			wantStatus(t, what+" ("+strings.Fields(authz)[0]+")", r, c.status, c.code)
			if c.status == 200 {
				if m := r.json(t); m["subject"] != "user:"+c.user {
					t.Errorf("%s: subject %v", what, m["subject"])
				} else if strings.HasPrefix(authz, "Basic") && m["actions"] != c.actions {
					t.Errorf("%s: actions %v, want %s", what, m["actions"], c.actions)
				}
			}
		}
	}

	// Wrong credentials: 401, asking again, never 403 or 404.
	for _, authz := range []string{basic("puller", "wrong"), basic("nobody", "x"), "Basic !!", "Digest x", bearer("not-a-token")} {
		r := e.check(t, authz, "team/a", "", "pull")
		wantStatus(t, "bad credentials "+authz, r, 401, "UNAUTHORIZED")
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("bad credentials %q: WWW-Authenticate %q", authz, r.header.Get("WWW-Authenticate"))
		}
	}
}

// The base endpoint (need 0) asks only for valid credentials.
func TestAuthorizeBase(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "nogrants")
	ci := e.robot(t, "ci", time.Time{})
	ciTok := e.token(t, basic("ci", ci))
	wantChallenge(t, e, "anonymous", e.check(t, "", "", ""), "", "")
	for what, authz := range map[string]string{
		"user without grants, Basic": basic("nogrants", pw),
		"robot, Basic":               basic("ci", ci),
		"robot's token, no scope":    bearer(ciTok),
	} {
		r := e.check(t, authz, "", "")
		wantStatus(t, what, r, 200, "")
	}
	wantStatus(t, "wrong password", e.check(t, basic("nogrants", "x"), "", ""), 401, "UNAUTHORIZED")
	wantChallenge(t, e, "invalid token", e.check(t, bearer(ciTok+"x"), "", ""), "", "invalid_token")
}

// A token names what it allows per repository; a token for A does nothing for B.
func TestTokenReplay(t *testing.T) {
	e := newEnv(t, Options{})
	alice := e.user(t, "alice")
	bob := e.user(t, "bob")
	e.grant(t, "user:alice", "team/*", "pull", "push")
	e.grant(t, "user:bob", "team/a", "pull")

	aliceA := e.token(t, basic("alice", alice), "repository:team/a:pull")
	// Alice may do more than her token says: she is sent to get a token with the right scope.
	wantChallenge(t, e, "alice's team/a token on team/b", e.check(t, bearer(aliceA), "team/b", "", "pull"), "repository:team/b:pull", "insufficient_scope")
	wantChallenge(t, e, "alice's pull token for a push", e.check(t, bearer(aliceA), "team/a", "", "push"), "repository:team/a:pull,push", "insufficient_scope")
	// But not where her grants would not allow it either.
	wantStatus(t, "alice's token on other/x, pull", e.check(t, bearer(aliceA), "other/x", "", "pull"), 404, "NAME_UNKNOWN")
	wantStatus(t, "alice's token on other/x, push", e.check(t, bearer(aliceA), "other/x", "", "push"), 403, "DENIED")
	wantStatus(t, "alice's token, delete", e.check(t, bearer(aliceA), "team/a", "", "delete"), 403, "DENIED")

	bobA := e.token(t, basic("bob", bob), "repository:team/a:pull,push")
	_, sc := e.scopeOf(t, bobA)
	wantScope(t, "bob's token", sc, "repository:team/a:pull")
	wantStatus(t, "bob's token, pull team/a", e.check(t, bearer(bobA), "team/a", "", "pull"), 200, "")
	wantStatus(t, "bob's token, push team/a", e.check(t, bearer(bobA), "team/a", "", "push"), 403, "DENIED")
	wantStatus(t, "bob's token, pull team/b", e.check(t, bearer(bobA), "team/b", "", "pull"), 404, "NAME_UNKNOWN")
	wantStatus(t, "bob's token, push team/b", e.check(t, bearer(bobA), "team/b", "", "push"), 403, "DENIED")

	// Grants revoked after the token was made: the token still carries its scope until it
	// expires (minutes), but the caller is no longer sent for a wider one.
	if err := e.st.RevokeGrant(bg, "user:alice", "team/*"); err != nil {
		t.Fatal(err)
	}
	e.grant(t, "user:other", "x", "pull") // reloads the policy
	wantStatus(t, "alice's token after revocation, team/b", e.check(t, bearer(aliceA), "team/b", "", "pull"), 404, "NAME_UNKNOWN")
	// A token of a deleted account is not sent for a new one.
	if err := e.st.DeleteAccount(bg, "bob"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "bob's token after deletion, push", e.check(t, bearer(bobA), "team/a", "", "push"), 403, "DENIED")
}

// The pull-through cache: a token for the name a client asked for carries what the caller may
// do on the local repository that serves it; fetch (making berth ask the upstream) only when
// granted; and a cache grant never spills onto a local repository of the same name.
func TestAuthorizeCache(t *testing.T) {
	candidates := map[string][]string{
		"library/nginx": {"docker-hub/library/nginx"},
		"foo/bar":       {"docker-hub/foo/bar"},
	}
	e := newEnv(t, Options{Candidates: func(name string) []string { return candidates[name] }})
	reader := e.robot(t, "reader", time.Time{})
	fetcher := e.robot(t, "fetcher", time.Time{})
	admin := e.robot(t, "admin", time.Time{})
	local := e.robot(t, "local", time.Time{})
	e.grant(t, "robot:reader", "docker-hub/*", "pull")
	e.grant(t, "robot:fetcher", "docker-hub/*", "pull", "fetch")
	e.grant(t, "robot:admin", "*", "admin")
	e.grant(t, "robot:local", "foo/*", "pull")

	for _, c := range []struct {
		who, secret string
		scope       []string
		actions     string // on docker-hub/library/nginx with Basic
	}{
		{"reader", reader, []string{"repository:docker-hub/library/nginx:pull"}, "pull"},
		{"fetcher", fetcher, []string{"repository:docker-hub/library/nginx:pull,fetch"}, "pull,fetch"},
		{"admin", admin, []string{"repository:docker-hub/library/nginx:pull,fetch", "repository:library/nginx:pull,fetch"}, "pull,push,delete,fetch,admin"},
		{"local", local, nil, ""},
	} {
		tok := e.token(t, basic(c.who, c.secret), "repository:library/nginx:pull")
		_, sc := e.scopeOf(t, tok)
		wantScope(t, c.who+"'s token for library/nginx", sc, c.scope...)
		for _, authz := range []string{bearer(tok), basic(c.who, c.secret)} {
			what := c.who + " (" + strings.Fields(authz)[0] + ") pull library/nginx from the cache"
			r := e.check(t, authz, "library/nginx", "docker-hub/library/nginx", "pull")
			if c.actions == "" {
				wantStatus(t, what, r, 404, "NAME_UNKNOWN")
				continue
			}
			wantStatus(t, what, r, 200, "")
			got, _ := r.json(t)["actions"].(string)
			if strings.Contains(got, "fetch") != strings.Contains(c.actions, "fetch") {
				t.Errorf("%s: actions %q, want fetch only if %q has it", what, got, c.actions)
			}
		}
	}

	// foo/bar is a local repository; the cache would serve docker-hub/foo/bar.
	tok := e.token(t, basic("fetcher", fetcher), "repository:foo/bar:pull,push")
	_, sc := e.scopeOf(t, tok)
	wantScope(t, "fetcher's token for foo/bar", sc, "repository:docker-hub/foo/bar:pull,fetch")
	for _, authz := range []string{bearer(tok), basic("fetcher", fetcher)} {
		wantStatus(t, "fetcher pulls the local foo/bar", e.check(t, authz, "foo/bar", "foo/bar", "pull"), 404, "NAME_UNKNOWN")
		wantStatus(t, "fetcher pushes the local foo/bar", e.check(t, authz, "foo/bar", "foo/bar", "push"), 403, "DENIED")
		wantStatus(t, "fetcher pulls foo/bar from the cache", e.check(t, authz, "foo/bar", "docker-hub/foo/bar", "pull"), 200, "")
	}
	// And the other way: a grant on the local foo/* does not reach the cache's copy.
	tok = e.token(t, basic("local", local), "repository:foo/bar:pull")
	_, sc = e.scopeOf(t, tok)
	wantScope(t, "local's token for foo/bar", sc, "repository:foo/bar:pull")
	wantStatus(t, "local pulls foo/bar", e.check(t, bearer(tok), "foo/bar", "foo/bar", "pull"), 200, "")
	wantStatus(t, "local pulls foo/bar from the cache", e.check(t, bearer(tok), "foo/bar", "docker-hub/foo/bar", "pull"), 404, "NAME_UNKNOWN")
}

func TestCanListAndCan(t *testing.T) {
	e := newEnv(t, Options{})
	alice := e.user(t, "alice")
	e.user(t, "bob")
	e.grant(t, "user:alice", "team/*", "pull")
	e.grant(t, "user:alice", "team/secret", "delete")
	e.grant(t, "anonymous", "public/*", "pull")

	principal := func(authz string) *Principal {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/v2/_catalog", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		p, err := e.svc.Authenticate(req)
		if err != nil {
			t.Fatalf("Authenticate(%s): %v", authz, err)
		}
		return p
	}
	aliceBasic := principal(basic("alice", alice))
	aliceTok := principal(bearer(e.token(t, basic("alice", alice), "repository:team/a:pull", "registry:catalog:*")))
	aliceTokNoCatalog := principal(bearer(e.token(t, basic("alice", alice), "repository:team/a:pull")))
	anonTok := principal(bearer(e.token(t, "", "repository:public/x:pull", "registry:catalog:*")))

	for _, c := range []struct {
		who  string
		p    *Principal
		name string
		want bool
	}{
		{"alice Basic", aliceBasic, "team/a", true},
		{"alice Basic", aliceBasic, "team/b/c", true},
		{"alice Basic", aliceBasic, "public/x", true},
		{"alice Basic", aliceBasic, "other/x", false},
		{"alice token", aliceTok, "team/a", true},
		{"alice token", aliceTok, "team/b", true}, // her grants, though not in the token
		{"alice token", aliceTok, "public/y", true},
		{"alice token", aliceTok, "other/x", false},
		{"alice token without catalog scope", aliceTokNoCatalog, "team/b", true}, // the catalog is filtered, not refused
		{"alice token without catalog scope", aliceTokNoCatalog, "other/x", false},
		{"anonymous", Anonymous, "public/x", true},
		{"anonymous", Anonymous, "team/a", false},
		{"anonymous token", anonTok, "public/x", true},
		{"anonymous token", anonTok, "public/y", false}, // only what the token carries
		{"anonymous token", anonTok, "team/a", false},
	} {
		if got := e.svc.CanList(bg, c.p, c.name); got != c.want {
			t.Errorf("CanList(%s, %s) = %v, want %v", c.who, c.name, got, c.want)
		}
	}

	for _, c := range []struct {
		who  string
		p    *Principal
		name string
		need Actions
		want bool
	}{
		{"alice Basic", aliceBasic, "team/a", Pull, true},
		{"alice Basic", aliceBasic, "team/a", Push, false},
		{"alice Basic", aliceBasic, "team/secret", Pull | Delete, true},
		{"alice Basic", aliceBasic, "team/a", Delete, false},
		{"alice Basic", aliceBasic, "public/x", Pull, true},
		{"alice token", aliceTok, "team/a", Pull, true},
		{"alice token", aliceTok, "team/b", Pull, false}, // a token is what it carries
		{"alice token", aliceTok, "team/a", Push, false},
		{"anonymous", Anonymous, "public/x", Pull, true},
		{"anonymous", Anonymous, "public/x", Push, false},
		{"anonymous", Anonymous, "team/a", Pull, false},
	} {
		if got := e.svc.Can(bg, c.p, c.name, c.need); got != c.want {
			t.Errorf("Can(%s, %s, %v) = %v, want %v", c.who, c.name, c.need, got, c.want)
		}
	}

}

// Grants changed in the store are seen by a running service within policyReload.
func TestPolicyReload(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	wantStatus(t, "before the grant", e.check(t, basic("alice", pw), "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	if err := e.st.AddGrant(bg, grantOf("user:alice", "team/*", "pull")); err != nil {
		t.Fatal(err)
	}
	// As if policyReload had passed.
	old := *e.svc.snap.Load()
	old.at = time.Now().Add(-2 * policyReload)
	e.svc.snap.Store(&old)
	wantStatus(t, "after the grant", e.check(t, basic("alice", pw), "team/a", "", "pull"), 200, "")
}

// A change another process notifies (Changed) is seen by the next request, however fresh the
// snapshot: the store's version is compared then.
func TestChangedReloads(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	wantStatus(t, "before the grant", e.check(t, basic("alice", pw), "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	if err := e.st.AddGrant(bg, grantOf("user:alice", "team/*", "pull")); err != nil {
		t.Fatal(err)
	}
	// A snapshot that polling would keep for an hour.
	fresh := *e.svc.snap.Load()
	fresh.at = time.Now().Add(time.Hour)
	e.svc.snap.Store(&fresh)
	wantStatus(t, "after the grant, not notified", e.check(t, basic("alice", pw), "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	e.svc.Changed()
	wantStatus(t, "after the grant, notified", e.check(t, basic("alice", pw), "team/a", "", "pull"), 200, "")
}

// A token is judged against the grants and accounts of now, not only of when it was issued: a
// revoke, a removed robot or a robot past its expiry stops a token already handed out within
// policyReload, and a robot created a moment ago is not refused for being newer than the snapshot.
func TestTokenRevocation(t *testing.T) {
	e := newEnv(t, Options{})
	expire := func() { // as if policyReload had passed
		old := *e.svc.snap.Load()
		old.at = time.Now().Add(-2 * policyReload)
		e.svc.snap.Store(&old)
	}
	e.svc.current(bg) // a snapshot older than the robots below
	ci := e.robot(t, "ci", time.Time{})
	cd := e.robot(t, "cd", time.Time{})
	if err := e.st.AddGrant(bg, grantOf("robot:ci", "team/*", "pull")); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddGrant(bg, grantOf("robot:cd", "team/*", "pull")); err != nil {
		t.Fatal(err)
	}
	e.svc.snap.Store(nil) // the token endpoint sees the grants
	ciTok := bearer(e.token(t, basic("ci", ci), "repository:team/a:pull"))
	cdTok := bearer(e.token(t, basic("cd", cd), "repository:team/a:pull"))
	wantStatus(t, "ci's token", e.check(t, ciTok, "team/a", "", "pull"), 200, "")

	if err := e.st.RevokeGrant(bg, "robot:ci", "team/*"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteAccount(bg, "cd"); err != nil {
		t.Fatal(err)
	}
	expire()
	wantStatus(t, "ci's token after the revoke", e.check(t, ciTok, "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	wantStatus(t, "cd's token after robot rm", e.check(t, cdTok, "team/a", "", "pull"), 404, "NAME_UNKNOWN")

	// A robot newer than the snapshot is looked up, not refused.
	fresh := e.robot(t, "fresh", time.Time{})
	if err := e.st.AddGrant(bg, grantOf("robot:fresh", "team/*", "pull")); err != nil {
		t.Fatal(err)
	}
	e.svc.snap.Store(nil)
	freshTok := bearer(e.token(t, basic("fresh", fresh), "repository:team/a:pull"))
	old := *e.svc.snap.Load()
	delete(old.accounts, "fresh")
	e.svc.snap.Store(&old)
	wantStatus(t, "a robot newer than the snapshot", e.check(t, freshTok, "team/a", "", "pull"), 200, "")
}

// Basic credentials are judged against the accounts of now, like tokens: a removed user, one
// taken out of a group, or a changed password stops within policyReload, even while the
// verified login is remembered (item 6 of issue 8: Basic lagged 10 s behind).
func TestBasicFollowsAccountChanges(t *testing.T) {
	e := newEnv(t, Options{})
	expire := func() { // as if policyReload had passed
		old := *e.svc.snap.Load()
		old.at = time.Now().Add(-2 * policyReload)
		e.svc.snap.Store(&old)
	}
	bob := e.user(t, "bob", "devs")
	carol := e.user(t, "carol", "devs")
	dave := e.user(t, "dave")
	e.grant(t, "group:devs", "team/*", "pull")
	e.grant(t, "user:dave", "team/*", "pull")
	for _, c := range []struct{ who, pw string }{{"bob", bob}, {"carol", carol}, {"dave", dave}} {
		wantStatus(t, c.who+" before", e.check(t, basic(c.who, c.pw), "team/a", "", "pull"), 200, "")
	}
	// bob leaves the group; carol is removed; dave's password changes.
	if err := e.st.UpdateAccount(bg, &metadata.Account{Name: "bob", Kind: metadata.KindUser, Secret: cheapHash(t, bob)}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteAccount(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.UpdateAccount(bg, &metadata.Account{Name: "dave", Kind: metadata.KindUser, Secret: cheapHash(t, "a new password")}); err != nil {
		t.Fatal(err)
	}
	expire()
	wantStatus(t, "bob out of the group (Basic)", e.check(t, basic("bob", bob), "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	wantStatus(t, "carol removed (Basic)", e.check(t, basic("carol", carol), "team/a", "", "pull"), 401, "UNAUTHORIZED")
	wantStatus(t, "dave's old password (Basic)", e.check(t, basic("dave", dave), "team/a", "", "pull"), 401, "UNAUTHORIZED")
	wantStatus(t, "dave's new password (Basic)", e.check(t, basic("dave", "a new password"), "team/a", "", "pull"), 200, "")
	// Back in the group: at once too.
	if err := e.st.UpdateAccount(bg, &metadata.Account{Name: "bob", Kind: metadata.KindUser, Secret: cheapHash(t, bob), Groups: []string{"devs"}}); err != nil {
		t.Fatal(err)
	}
	expire()
	wantStatus(t, "bob back in the group (Basic)", e.check(t, basic("bob", bob), "team/a", "", "pull"), 200, "")
}

// A token belongs to the account it was issued to, never to a later account of the same name
// (item 7 of issue 8: a deleted account's token revived when its name was taken again).
func TestTokenNotInherited(t *testing.T) {
	e := newEnv(t, Options{})
	e.user(t, "alice")
	e.grant(t, "user:alice", "team/*", "pull,push")
	old := bearer(e.token(t, basic("alice", "pw-alice"), "repository:team/a:pull,push"))
	wantStatus(t, "alice's token", e.check(t, old, "team/a", "", "push"), 200, "")
	if err := e.st.DeleteAccount(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	e.user(t, "alice") // the same name, the same password, the same grants
	e.grant(t, "user:alice", "team/*", "pull,push")
	wantStatus(t, "the deleted alice's token (pull)", e.check(t, old, "team/a", "", "pull"), 404, "NAME_UNKNOWN")
	wantStatus(t, "the deleted alice's token (push)", e.check(t, old, "team/a", "", "push"), 403, "DENIED")
	tok := bearer(e.token(t, basic("alice", "pw-alice"), "repository:team/a:pull,push"))
	wantStatus(t, "the new alice's own token", e.check(t, tok, "team/a", "", "push"), 200, "")
	if e.svc.CanList(bg, &Principal{Subject: "user:alice", account: "an old ID"}, "team/a") {
		t.Error("CanList lists for a principal of another account of the name")
	}
}
