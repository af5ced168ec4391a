package console_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/console"
	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage/fs"
)

// env is a console over a real SQLite store and auth service, served over real HTTP, with a
// clock the test moves.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	store *sqlite.Store
	blobs *fs.Store
	authn *auth.Service
	mu    sync.Mutex
	now   time.Time
}

func (e *env) clock() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func newEnv(t *testing.T) *env { t.Helper(); return newEnvWith(t, nil) }

// newEnvWith is newEnv with the console's options changed by edit.
func newEnvWith(t *testing.T, edit func(*console.Options)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(ctx, auth.Options{Accounts: st})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, blobs: blobs, authn: authn, now: time.Now()}
	adm := admin.New(admin.Options{Accounts: st, Authorizer: authn,
		Lifecycle: &admin.Lifecycle{Settings: st, Runner: expiry.Runner{Store: st, Pulls: st}}})
	opt := console.Options{Auth: authn, Store: st, Blobs: blobs, Admin: adm, Now: e.clock, Version: "test"}
	if edit != nil {
		edit(&opt)
	}
	c, err := console.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(c)
	t.Cleanup(e.srv.Close)
	e.user("alice", "alice-password-1", metadata.Grant{Pattern: "team/*", Actions: []string{"pull", "push"}})
	e.user("root", "root-password-1", metadata.Grant{Pattern: "*", Actions: []string{"admin"}})
	e.user("nobody", "nobody-password-1")
	e.image("team/app", "v1", "layer one")
	e.image("secret/db", "v1", "layer two")
	return e
}

// user creates a user with grants.
func (e *env) user(name, password string, grants ...metadata.Grant) {
	e.t.Helper()
	ctx := context.Background()
	hash, err := auth.HashPassword(password)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.CreateAccount(ctx, &metadata.Account{Name: name, Kind: metadata.KindUser, Secret: hash}); err != nil {
		e.t.Fatal(err)
	}
	for _, g := range grants {
		g.Subject = "user:" + name
		if err := e.store.AddGrant(ctx, g); err != nil {
			e.t.Fatal(err)
		}
	}
	e.authn.Changed()
}

// image stores an image manifest (config and one layer) under repo:tag, as a push would.
func (e *env) image(repo, tag, layer string) oci.Digest {
	e.t.Helper()
	ctx := context.Background()
	cfg := []byte(`{"os":"linux","architecture":"arm64","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd, ld := digest.FromBytes(cfg), digest.FromString(layer)
	for _, b := range []struct {
		d oci.Digest
		n int64
	}{{cd, int64(len(cfg))}, {ld, int64(len(layer))}} {
		content := cfg
		if b.d == ld {
			content = []byte(layer)
		}
		if _, err := e.blobs.Put(ctx, b.d, bytes.NewReader(content)); err != nil {
			e.t.Fatal(err)
		}
		if err := e.store.ReserveBlob(ctx, b.d); err != nil {
			e.t.Fatal(err)
		}
		if err := e.store.LinkBlob(ctx, repo, b.d, b.n); err != nil {
			e.t.Fatal(err)
		}
	}
	body, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}},
	})
	d := digest.FromBytes(body)
	m := &metadata.NewManifest{Manifest: metadata.Manifest{Digest: d, MediaType: oci.MediaTypeImageManifest, Content: body, Created: time.Now()},
		Blobs: []oci.Digest{cd, ld}}
	if err := e.store.PutManifest(ctx, repo, m, tag); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// browser is a client with its own cookies that does not follow redirects.
type browser struct {
	e   *env
	c   *http.Client
	jar *cookiejar.Jar
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, jar: jar, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	code     int
	location string
	body     string
	header   http.Header
}

func (b *browser) do(method, path string, form url.Values, origin string) page {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	all, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, resp.Header.Get("Location"), string(all), resp.Header}
}

func (b *browser) get(path string) page { return b.do("GET", path, nil, "") }
func (b *browser) post(path string, form url.Values) page {
	return b.do("POST", path, form, b.e.srv.URL)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// csrf is the CSRF token of the forms of a page.
func csrf(t *testing.T, p page) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token on the page (%d):\n%s", p.code, p.body)
	}
	return m[1]
}

// login logs the browser in and fails the test if that does not work.
func (b *browser) login(user, password string) {
	b.e.t.Helper()
	p := b.get("/ui/login")
	r := b.post("/ui/login", url.Values{"csrf": {csrf(b.e.t, p)}, "username": {user}, "password": {password}, "next": {"/ui/"}})
	if r.code != http.StatusSeeOther || r.location != "/ui/" {
		b.e.t.Fatalf("login as %s: %d %s\n%s", user, r.code, r.location, r.body)
	}
}

// loggedIn reports whether the browser's session works (the repositories page, not the login page).
func (b *browser) loggedIn() bool {
	b.e.t.Helper()
	p := b.get("/ui/")
	if p.code == http.StatusOK && strings.Contains(p.body, "<h1>Repositories</h1>") {
		return true
	}
	if p.code != http.StatusSeeOther || !strings.HasPrefix(p.location, "/ui/login") {
		b.e.t.Fatalf("GET /ui/: %d %s, want the page or a redirect to the login", p.code, p.location)
	}
	return false
}

func TestLoginAndBrowse(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	p := b.get("/ui/repo/team/app")
	if p.code != http.StatusSeeOther || p.location != "/ui/login?next=%2Fui%2Frepo%2Fteam%2Fapp" {
		t.Fatalf("before login: %d %q, want 303 to the login page", p.code, p.location)
	}
	form := b.get("/ui/login")
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Referrer-Policy", "X-Content-Type-Options"} {
		if form.header.Get(h) == "" {
			t.Errorf("login page without %s", h)
		}
	}
	if csp := form.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if p := b.get("/ui/static/style.css"); p.code != http.StatusOK || !strings.Contains(p.header.Get("Content-Type"), "text/css") {
		t.Errorf("the stylesheet: %d %s", p.code, p.header.Get("Content-Type"))
	}
	if p := b.get("/ui/static/"); p.code != http.StatusNotFound {
		t.Errorf("the static directory: %d, want 404 (no listing)", p.code)
	}
	// Bad input: the form again, with a message that says what is wrong.
	for _, c := range []struct {
		user, password string
		code           int
		want           string
	}{
		{"", "", http.StatusBadRequest, "Enter your user name and password."},
		{"alice", "", http.StatusBadRequest, "Enter your password."},
		{"", "x", http.StatusBadRequest, "Enter your user name."},
		{"alice", "wrong password", http.StatusUnauthorized, "Wrong user name or password."},
		{"nosuchuser", "wrong password", http.StatusUnauthorized, "Wrong user name or password."},
	} {
		r := b.post("/ui/login", url.Values{"csrf": {csrf(t, form)}, "username": {c.user}, "password": {c.password}})
		if r.code != c.code || !strings.Contains(r.body, c.want) || !strings.Contains(r.body, `action="/ui/login"`) {
			t.Errorf("login %q/%q: %d, want %d with %q:\n%s", c.user, c.password, r.code, c.code, c.want, r.body)
		}
		form = r
	}
	r := b.post("/ui/login", url.Values{"csrf": {csrf(t, form)}, "username": {"alice"}, "password": {"alice-password-1"},
		"next": {"/ui/repo/team/app"}})
	if r.code != http.StatusSeeOther || r.location != "/ui/repo/team/app" {
		t.Fatalf("login: %d %q", r.code, r.location)
	}
	ck := r.header.Get("Set-Cookie")
	for _, want := range []string{"berth_session=", "HttpOnly", "SameSite=Lax", "Path=/ui/"} {
		if !strings.Contains(r.header.Values("Set-Cookie")[0], want) {
			t.Errorf("session cookie %q lacks %s", ck, want)
		}
	}
	list := b.get("/ui/")
	if !strings.Contains(list.body, `href="/ui/repo/team/app"`) || strings.Contains(list.body, "secret/db") {
		t.Errorf("alice's repositories: want team/app and not secret/db:\n%s", list.body)
	}
	repo := b.get("/ui/repo/team/app")
	for _, want := range []string{">v1<", "linux/arm64", "docker pull " + strings.TrimPrefix(e.srv.URL, "http://") + "/team/app:v1", `data-copy="docker pull`} {
		if !strings.Contains(repo.body, want) {
			t.Errorf("team/app page lacks %q:\n%s", want, repo.body)
		}
	}
	// A login to a page elsewhere goes to the console instead.
	b2 := e.browser()
	f := b2.get("/ui/login")
	r = b2.post("/ui/login", url.Values{"csrf": {csrf(t, f)}, "username": {"alice"}, "password": {"alice-password-1"}, "next": {"//evil.example/"}})
	if r.location != "/ui/" {
		t.Errorf("login with next=//evil.example/ went to %q", r.location)
	}
}

// TestNoGrants: a user without grants sees no repository, and a repository's page answers 404
// whether it exists or not, as the registry API does.
func TestNoGrants(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login("nobody", "nobody-password-1")
	list := b.get("/ui/")
	if list.code != http.StatusOK || strings.Contains(list.body, "team/app") || strings.Contains(list.body, "secret/db") ||
		!strings.Contains(list.body, `id="no-repos"`) {
		t.Errorf("nobody's repositories page shows something:\n%s", list.body)
	}
	exists, missing := b.get("/ui/repo/secret/db"), b.get("/ui/repo/no/such")
	if exists.code != http.StatusNotFound || missing.code != http.StatusNotFound || exists.body != missing.body {
		t.Errorf("a guessed repository: %d, a missing one: %d; want the same 404", exists.code, missing.code)
	}
	if p := b.get("/ui/repo/secret/db?digest=" + string(e.image("secret/db", "v2", "x"))); p.code != http.StatusNotFound {
		t.Errorf("a guessed manifest: %d", p.code)
	}
	for _, path := range []string{"/ui/upstreams", "/ui/admin/", "/ui/admin/cache"} {
		if p := b.get(path); p.code != http.StatusNotFound {
			t.Errorf("%s for a user without admin: %d", path, p.code)
		}
	}
	// alice may pull team/* and nothing else.
	a := e.browser()
	a.login("alice", "alice-password-1")
	if p := a.get("/ui/repo/secret/db"); p.code != http.StatusNotFound {
		t.Errorf("alice on secret/db: %d", p.code)
	}
	if p := a.get("/ui/?q=db"); strings.Contains(p.body, "secret/db") {
		t.Errorf("alice's filtered list shows secret/db")
	}
	// root (admin on *) sees both.
	r := e.browser()
	r.login("root", "root-password-1")
	if p := r.get("/ui/"); !strings.Contains(p.body, "secret/db") || !strings.Contains(p.body, "team/app") {
		t.Errorf("root's list:\n%s", p.body)
	}
	if p := r.get("/ui/admin/cache"); p.code != http.StatusOK {
		t.Errorf("root on the admin pages: %d", p.code)
	}
}

// TestCSRF: a POST without the session's token, with another session's, or from another origin
// changes nothing (logging out is the change here: the session goes on working).
func TestCSRF(t *testing.T) {
	e := newEnv(t)
	b, other := e.browser(), e.browser()
	b.login("alice", "alice-password-1")
	other.login("alice", "alice-password-1")
	good, foreign := csrf(t, b.get("/ui/")), csrf(t, other.get("/ui/"))
	if good == foreign {
		t.Fatal("two sessions have the same CSRF token")
	}
	for _, c := range []struct {
		name   string
		form   url.Values
		origin string
	}{
		{"no token", url.Values{}, e.srv.URL},
		{"empty token", url.Values{"csrf": {""}}, e.srv.URL},
		{"another session's token", url.Values{"csrf": {foreign}}, e.srv.URL},
		{"a made-up token", url.Values{"csrf": {strings.Repeat("0", len(good))}}, e.srv.URL},
		{"right token, another origin", url.Values{"csrf": {good}}, "https://evil.example"},
		{"right token, opaque origin", url.Values{"csrf": {good}}, "null"},
	} {
		p := b.do("POST", "/ui/logout", c.form, c.origin)
		if p.code != http.StatusForbidden || !strings.Contains(p.body, "Form expired or forged") {
			t.Errorf("%s: %d, want 403", c.name, p.code)
		}
		if !b.loggedIn() {
			t.Fatalf("%s: the session ended", c.name)
		}
	}
	// The login form too: its token is bound to its own cookie.
	fresh := e.browser()
	f := fresh.get("/ui/login")
	if p := fresh.post("/ui/login", url.Values{"username": {"alice"}, "password": {"alice-password-1"}}); p.code != http.StatusForbidden {
		t.Errorf("login without a token: %d", p.code)
	}
	if p := e.browser().post("/ui/login", url.Values{"csrf": {csrf(t, f)}, "username": {"alice"}, "password": {"alice-password-1"}}); p.code != http.StatusForbidden {
		t.Errorf("login with a token and without its cookie: %d", p.code)
	}
	if p := b.post("/ui/logout", url.Values{"csrf": {good}}); p.code != http.StatusSeeOther || b.loggedIn() {
		t.Errorf("logout with the right token: %d, still logged in", p.code)
	}
}

// TestSessionExpiry: a session idle for longer than IdleTimeout, or older than MaxAge, goes to the
// login page; one in use is renewed.
func TestSessionExpiry(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login("alice", "alice-password-1")
	for range 3 { // 3 × 20 min in use: renewed each time
		e.advance(console.IdleTimeout * 2 / 3)
		if !b.loggedIn() {
			t.Fatal("a session in use expired")
		}
	}
	e.advance(console.IdleTimeout + time.Minute)
	if b.loggedIn() {
		t.Error("an idle session still works")
	}
	b.login("alice", "alice-password-1")
	issued := e.clock()
	for e.advance(20 * time.Minute); e.clock().Sub(issued) < console.MaxAge; e.advance(20 * time.Minute) {
		if !b.loggedIn() {
			t.Fatalf("a session in use expired after %s", e.clock().Sub(issued))
		}
	}
	if b.loggedIn() {
		t.Error("a session older than MaxAge still works")
	}
}

// TestTamperedCookie: a session cookie changed in any way is a visitor without a session.
func TestTamperedCookie(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login("alice", "alice-password-1")
	u, _ := url.Parse(e.srv.URL + "/ui/")
	var value string
	for _, c := range b.jar.Cookies(u) {
		if c.Name == "berth_session" {
			value = c.Value
		}
	}
	payload, sig, _ := strings.Cut(value, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	root := strings.Replace(string(raw), `"u":"alice"`, `"u":"root"`, 1)
	for name, v := range map[string]string{
		"user changed":      base64.RawURLEncoding.EncodeToString([]byte(root)) + "." + sig,
		"signature changed": payload + "." + strings.Repeat("A", len(sig)),
		"no signature":      payload,
		"garbage":           "not a cookie",
	} {
		t.Run(name, func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			jar.SetCookies(u, []*http.Cookie{{Name: "berth_session", Value: v, Path: "/ui/"}})
			tb := &browser{e: e, jar: jar, c: &http.Client{Jar: jar, CheckRedirect: b.c.CheckRedirect}}
			if tb.loggedIn() {
				t.Error("a tampered cookie is a session")
			}
		})
	}
}

// TestSessionRevoked: a session ends with its account — deleted, given a new password, expired.
func TestSessionRevoked(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	b := e.browser()
	b.login("alice", "alice-password-1")
	a, err := e.store.Account(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	a.Secret, _ = auth.HashPassword("alice-password-2")
	if err := e.store.UpdateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	e.authn.Changed()
	if b.loggedIn() {
		t.Error("a session survived its account's new password")
	}
	b.login("alice", "alice-password-2")
	if err := e.store.DeleteAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	e.authn.Changed()
	if b.loggedIn() {
		t.Error("a session survived its account's deletion")
	}
	// A new account of the same name and password is another account: the old session stays ended.
	e.user("alice", "alice-password-2", metadata.Grant{Pattern: "team/*", Actions: []string{"pull"}})
	if b.loggedIn() {
		t.Error("a session of a deleted account works for its namesake")
	}
	b.login("alice", "alice-password-2")
	a, _ = e.store.Account(ctx, "alice")
	a.Expires = time.Now().Add(-time.Minute)
	e.store.UpdateAccount(ctx, a)
	e.authn.Changed()
	if b.loggedIn() {
		t.Error("a session survived its account's expiry")
	}
}

// TestLoginThrottled: the console's login goes through berth's login throttles: after the
// guesses the budget of a name and an address allows, the form says to wait, with Retry-After,
// and even the right password is not checked meanwhile.
func TestLoginThrottled(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	form := b.get("/ui/login")
	var last page
	for i := range 10 {
		last = b.post("/ui/login", url.Values{"csrf": {csrf(t, form)}, "username": {"alice"}, "password": {fmt.Sprintf("guess %d", i)}})
		form = last
		if last.code == http.StatusTooManyRequests {
			break
		}
	}
	if last.code != http.StatusTooManyRequests || !strings.Contains(last.body, "Too many failed logins: try again in") || last.header.Get("Retry-After") == "" {
		t.Fatalf("after 10 wrong passwords: %d (Retry-After %q)\n%s", last.code, last.header.Get("Retry-After"), last.body)
	}
	if p := b.post("/ui/login", url.Values{"csrf": {csrf(t, form)}, "username": {"alice"}, "password": {"alice-password-1"}}); p.code != http.StatusTooManyRequests {
		t.Errorf("the right password while throttled: %d, want 429", p.code)
	}
}

var secretPattern = regexp.MustCompile(`berth_rbt_[A-Za-z0-9_-]{43}`)

// TestAdminForms: the admin forms change accounts, robots and grants through the admin service;
// bad input gets the form again with a message and changes nothing; a new robot's secret is on
// the page that created it and never again; deleting a user ends its session; the lifecycle
// preview lists and deletes nothing.
func TestAdminForms(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	b := e.browser()
	b.login("root", "root-password-1")
	form := func(path string, v url.Values) page {
		t.Helper()
		v.Set("csrf", csrf(t, b.get(path)))
		return b.post(path, v)
	}
	exists := func(name string) bool {
		_, err := e.store.Account(ctx, name)
		return err == nil
	}

	// Users.
	for _, c := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"op": {"create"}, "name": {"Bad Name"}, "password": {"long enough pass"}, "password2": {"long enough pass"}}, "User name: name"},
		{url.Values{"op": {"create"}, "name": {"carol"}, "password": {"short"}, "password2": {"short"}}, "Password: at least 12 characters."},
		{url.Values{"op": {"create"}, "name": {"carol"}, "password": {"long enough pass"}, "password2": {"other long pass"}}, "The two passwords differ."},
		{url.Values{"op": {"create"}, "name": {"carol"}, "password": {"long enough pass"}, "password2": {"long enough pass"}, "groups": {"Bad!"}}, "Groups: name"},
		{url.Values{"op": {"create"}, "name": {"alice"}, "password": {"long enough pass"}, "password2": {"long enough pass"}}, "already exists"},
	} {
		p := form("/ui/admin/accounts", c.form)
		if p.code != http.StatusBadRequest || !strings.Contains(p.body, c.want) || !strings.Contains(p.body, `role="alert"`) {
			t.Errorf("create user %v: %d, want 400 with %q:\n%s", c.form, p.code, c.want, p.body)
		}
	}
	if exists("carol") {
		t.Fatal("bad input created carol")
	}
	p := form("/ui/admin/accounts", url.Values{"op": {"create"}, "name": {"carol"}, "password": {"long enough pass"}, "password2": {"long enough pass"}})
	if p.code != http.StatusOK || !strings.Contains(p.body, "Created user carol.") || !exists("carol") {
		t.Fatalf("create carol: %d\n%s", p.code, p.body)
	}
	c := e.browser()
	c.login("carol", "long enough pass")

	// Robots: the secret once.
	for _, bad := range []url.Values{
		{"op": {"create"}, "name": {"-ci"}},
		{"op": {"create"}, "name": {"ci"}, "days": {"0"}},
		{"op": {"create"}, "name": {"ci"}, "days": {"soon"}},
	} {
		if p := form("/ui/admin/robots", bad); p.code != http.StatusBadRequest || !strings.Contains(p.body, `role="alert"`) || secretPattern.MatchString(p.body) {
			t.Errorf("create robot %v: %d, want 400 with a message", bad, p.code)
		}
	}
	if exists("ci") {
		t.Fatal("bad input created the robot ci")
	}
	p = form("/ui/admin/robots", url.Values{"op": {"create"}, "name": {"ci"}, "description": {"the CI"}, "days": {"30"}})
	secret := secretPattern.FindString(p.body)
	if p.code != http.StatusOK || secret == "" || p.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create robot: %d, secret %q, Cache-Control %q\n%s", p.code, secret, p.header.Get("Cache-Control"), p.body)
	}
	req, _ := http.NewRequest("GET", "/v2/", nil)
	req.SetBasicAuth("ci", secret)
	if pr, err := e.authn.Authenticate(req); err != nil || pr.Subject != "robot:ci" {
		t.Errorf("the secret shown does not log in as robot:ci: %v %v", pr, err)
	}
	if again := b.get("/ui/admin/robots"); !strings.Contains(again.body, "the CI") || secretPattern.MatchString(again.body) {
		t.Errorf("the robots page again: the robot listed, its secret not; got\n%s", again.body)
	}

	// Grants.
	for _, bad := range []url.Values{
		{"op": {"add"}, "subject": {"bob"}, "pattern": {"team/*"}, "actions": {"pull"}},
		{"op": {"add"}, "subject": {"robot:ci"}, "pattern": {"Team/*"}, "actions": {"pull"}},
		{"op": {"add"}, "subject": {"robot:ci"}, "pattern": {"team/*"}},
		{"op": {"add"}, "subject": {"robot:ci"}, "pattern": {"team/*"}, "actions": {"fly"}},
		{"op": {"add"}, "subject": {"user:nosuch"}, "pattern": {"team/*"}, "actions": {"pull"}},
	} {
		if p := form("/ui/admin/grants", bad); p.code != http.StatusBadRequest || !strings.Contains(p.body, `role="alert"`) {
			t.Errorf("grant %v: %d, want 400 with a message\n%s", bad, p.code, p.body)
		}
	}
	p = form("/ui/admin/grants", url.Values{"op": {"add"}, "subject": {"user:carol"}, "pattern": {"secret/*"}, "actions": {"pull", "push"}})
	if p.code != http.StatusOK || !strings.Contains(p.body, "Granted pull, push on secret/* to user:carol.") {
		t.Fatalf("grant: %d\n%s", p.code, p.body)
	}
	e.authn.Changed()
	if l := c.get("/ui/"); !strings.Contains(l.body, "secret/db") {
		t.Error("carol does not see secret/db after the grant")
	}
	p = form("/ui/admin/grants", url.Values{"op": {"revoke"}, "subject": {"user:carol"}, "pattern": {"secret/*"}})
	e.authn.Changed()
	if l := c.get("/ui/"); p.code != http.StatusOK || strings.Contains(l.body, "secret/db") {
		t.Errorf("revoke: %d; carol still sees secret/db", p.code)
	}

	// Deleting carol ends her session.
	if p := form("/ui/admin/accounts", url.Values{"op": {"delete"}, "name": {"carol"}}); p.code != http.StatusOK || exists("carol") {
		t.Errorf("delete carol: %d", p.code)
	}
	e.authn.Changed()
	if c.loggedIn() {
		t.Error("carol's session survived her deletion")
	}

	// The lifecycle preview: no policy expires anything; then one keeping one image expires one
	// of two, and deletes nothing; a bad name is said so.
	if p := b.get("/ui/admin/lifecycle?repository=team/app"); p.code != http.StatusOK || !strings.Contains(p.body, `id="nothing-expires"`) {
		t.Errorf("lifecycle preview: %d\n%s", p.code, p.body)
	}
	e.image("team/app", "v2", "a newer layer")
	policy := `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}`
	if err := expiry.Set(ctx, e.store, "team/*", []byte(policy)); err != nil {
		t.Fatal(err)
	}
	p = b.get("/ui/admin/lifecycle?repository=team/app")
	if p.code != http.StatusOK || !strings.Contains(p.body, `id="expired"`) || !strings.Contains(p.body, "1 manifest(s) would be expired.") {
		t.Errorf("lifecycle preview with a policy: %d, want one manifest listed\n%s", p.code, p.body)
	}
	if ms, err := e.store.ListManifests(ctx, "team/app"); err != nil || len(ms) != 2 {
		t.Errorf("after the preview team/app has %d manifests, want 2 (%v)", len(ms), err)
	}
	if p := b.get("/ui/admin/lifecycle?repository=Team//x"); p.code != http.StatusBadRequest || !strings.Contains(p.body, "is not a repository name") {
		t.Errorf("lifecycle preview of a bad name: %d", p.code)
	}
}

// TestAdminFormsRefused: a post that changes something without the session's CSRF token, with
// another's, or by a user who is not an administrator changes nothing.
func TestAdminFormsRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	root, alice := e.browser(), e.browser()
	root.login("root", "root-password-1")
	alice.login("alice", "alice-password-1")
	aliceToken := csrf(t, alice.get("/ui/"))
	for name, c := range map[string]struct {
		b     *browser
		token string
		code  int
	}{
		"root without a token":      {root, "", http.StatusForbidden},
		"root with alice's token":   {root, aliceToken, http.StatusForbidden},
		"alice, not administrator":  {alice, aliceToken, http.StatusNotFound},
		"root with a made-up token": {root, strings.Repeat("a", len(aliceToken)), http.StatusForbidden},
	} {
		v := url.Values{"op": {"create"}, "name": {"sneaky"}}
		if c.token != "" {
			v.Set("csrf", c.token)
		}
		if p := c.b.post("/ui/admin/robots", v); p.code != c.code || secretPattern.MatchString(p.body) {
			t.Errorf("%s: %d, want %d", name, p.code, c.code)
		}
		if _, err := e.store.Account(ctx, "sneaky"); err == nil {
			t.Fatalf("%s: the robot was created", name)
		}
	}
}

// TestSessionAnyReplica: a session made by one berth is accepted by another sharing the store
// (the key is in the store, not in the process), and its CSRF token too.
func TestSessionAnyReplica(t *testing.T) {
	e := newEnv(t)
	authn2, err := auth.New(context.Background(), auth.Options{Accounts: e.store})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := console.New(console.Options{Auth: authn2, Store: e.store, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	other := httptest.NewServer(c2)
	defer other.Close()
	b := e.browser()
	b.login("alice", "alice-password-1")
	token := csrf(t, b.get("/ui/"))
	// The same cookies, sent to the other replica.
	u1, _ := url.Parse(e.srv.URL + "/ui/")
	u2, _ := url.Parse(other.URL + "/ui/")
	b.jar.SetCookies(u2, b.jar.Cookies(u1))
	e.srv.URL, other.URL = other.URL, e.srv.URL // b now talks to the other replica
	defer func() { e.srv.URL, other.URL = other.URL, e.srv.URL }()
	p := b.get("/ui/repo/team/app")
	if p.code != http.StatusOK || !strings.Contains(p.body, "team/app") {
		t.Fatalf("the other replica: %d %s", p.code, p.location)
	}
	if got := csrf(t, p); got != token {
		t.Errorf("the other replica's CSRF token %q, want %q", got, token)
	}
}
