package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
)

// The tests run against a real SQLite store in a temporary directory, a Service serving /token
// and a /check endpoint that calls Authorize the way the registry does.

var bg = context.Background()

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

// fakeClock is the throttle's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a bytes.Buffer for a logger that handlers on several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	s.b.Reset()
	s.mu.Unlock()
}

// lines returns the JSON lines logged so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.Lines(s.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

type env struct {
	st    *sqlite.Store
	svc   *Service
	srv   *httptest.Server
	clock *fakeClock
	audit *syncBuffer
}

// newEnv starts a Service on a new store; opt.Accounts and opt.Audit are filled in.
func newEnv(t *testing.T, opt Options) *env {
	t.Helper()
	e := &env{st: openStore(t), clock: newFakeClock(), audit: &syncBuffer{}}
	opt.Accounts = e.st
	if opt.Audit == nil {
		opt.Audit = slog.New(slog.NewJSONHandler(e.audit, nil))
	}
	e.svc = newService(t, opt)
	e.svc.guard.now = e.clock.now
	mux := http.NewServeMux()
	mux.Handle("/token", e.svc)
	mux.HandleFunc("/check", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		visible, local := q.Get("name"), q.Get("local")
		if local == "" {
			local = visible
		}
		need, err := ParseActions(q["need"]...)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, have, err := e.svc.Authorize(r, visible, local, need)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"subject": p.Subject, "actions": have.String()})
	})
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

func newService(t *testing.T, opt Options) *Service {
	t.Helper()
	s, err := New(bg, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// writeError answers like the registry does.
func writeError(w http.ResponseWriter, err error) {
	e := oci.AsError(err)
	if e == nil {
		http.Error(w, "internal error: "+err.Error(), http.StatusInternalServerError)
		return
	}
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.HTTPStatus())
	json.NewEncoder(w).Encode(map[string]any{"errors": []*oci.Error{e}})
}

// cheapHash is an argon2id hash in HashPassword's format with tiny parameters, so that tests can
// log users in many times without paying 20 MiB and two passes each time. verifySecret honours
// the parameters the hash names.
func cheapHash(t *testing.T, password string) string {
	t.Helper()
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(password), salt, 1, 64, 1, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=64,t=1,p=1$%s$%s", argon2.Version, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// user creates a user whose password is "pw-NAME".
func (e *env) user(t *testing.T, name string, groups ...string) (password string) {
	t.Helper()
	password = "pw-" + name
	if err := e.st.CreateAccount(bg, &metadata.Account{Name: name, Kind: metadata.KindUser,
		Secret: cheapHash(t, password), Groups: groups}); err != nil {
		t.Fatalf("CreateAccount(%s): %v", name, err)
	}
	return password
}

// robot creates a robot account and returns its secret.
func (e *env) robot(t *testing.T, name string, expires time.Time) string {
	t.Helper()
	secret, hash, err := NewRobotSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateAccount(bg, &metadata.Account{Name: name, Kind: metadata.KindRobot, Secret: hash, Expires: expires}); err != nil {
		t.Fatalf("CreateAccount(%s): %v", name, err)
	}
	return secret
}

// accountID is the ID of account name.
func (e *env) accountID(t *testing.T, name string) string {
	t.Helper()
	a, err := e.st.Account(bg, name)
	if err != nil {
		t.Fatalf("Account(%s): %v", name, err)
	}
	return a.ID
}

// grant adds a grant and makes the service see it at once.
func (e *env) grant(t *testing.T, subject, pattern string, actions ...string) {
	t.Helper()
	if err := e.st.AddGrant(bg, metadata.Grant{Subject: subject, Pattern: pattern, Actions: actions}); err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	e.svc.snap.Store(nil)
}

// forgetLogins empties the cache of verified passwords, as 10 seconds would.
func (e *env) forgetLogins() {
	e.svc.logins.mu.Lock()
	clear(e.svc.logins.cache)
	e.svc.logins.mu.Unlock()
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func bearer(tok string) string { return "Bearer " + tok }

// response is a response read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d %q: %v", r.status, short(r.body), err)
	}
	return m
}

// errorCode is the first code of a registry error body.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("response %d %q: no error code (%v)", r.status, short(r.body), err)
	}
	return body.Errors[0].Code
}

func (e *env) do(t *testing.T, method, path, authz string, body io.Reader, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// getToken asks GET /token for scopes.
func (e *env) getToken(t *testing.T, authz string, scopes ...string) response {
	t.Helper()
	q := url.Values{"service": {"berth"}}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	return e.do(t, http.MethodGet, "/token?"+q.Encode(), authz, nil)
}

// token is getToken that must succeed; it returns the token.
func (e *env) token(t *testing.T, authz string, scopes ...string) string {
	t.Helper()
	r := e.getToken(t, authz, scopes...)
	if r.status != http.StatusOK {
		t.Fatalf("GET /token %v: %d %s", scopes, r.status, short(r.body))
	}
	var body tokenResponse
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Token == "" || body.Token != body.AccessToken {
		t.Fatalf("GET /token: token %q, access_token %q", body.Token, body.AccessToken)
	}
	return body.Token
}

// postToken posts an OAuth2 form to /token.
func (e *env) postToken(t *testing.T, form url.Values) response {
	t.Helper()
	return e.do(t, http.MethodPost, "/token", "", strings.NewReader(form.Encode()),
		"Content-Type", "application/x-www-form-urlencoded")
}

// check asks /check whether authz may do need on name (served from local when given).
func (e *env) check(t *testing.T, authz, name, local string, need ...string) response {
	t.Helper()
	q := url.Values{"name": {name}, "local": {local}, "need": need}
	return e.do(t, http.MethodGet, "/check?"+q.Encode(), authz, nil)
}

// wantStatus checks a response's status and, for registry errors, its code.
func wantStatus(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d %s, want %d", what, r.status, short(r.body), status)
		return
	}
	if code != "" {
		if got := r.errorCode(t); got != code {
			t.Errorf("%s: code %s, want %s", what, got, code)
		}
	}
}

// scopeOf verifies a token with the service and renders what it grants.
func (e *env) scopeOf(t *testing.T, tok string) (sub string, scope []string) {
	t.Helper()
	v, err := e.svc.tokens.verify(bg, tok)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return v.sub, scopeStrings(v.scope())
}

func wantScope(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: scope %q, want %q", what, got, want)
	}
}

// challengeParams parses a Bearer challenge.
func challengeParams(t *testing.T, h string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		t.Fatalf("challenge %q is not Bearer", h)
	}
	out := map[string]string{}
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok || !strings.HasPrefix(v, `"`) {
			t.Fatalf("challenge %q: malformed at %q", h, rest)
		}
		end := strings.IndexByte(v[1:], '"')
		if end < 0 {
			t.Fatalf("challenge %q: unterminated", h)
		}
		out[k] = v[1 : end+1]
		rest = strings.TrimPrefix(v[end+2:], ",")
	}
	return out
}

// short cuts a response body for a test failure message.
func short(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

func grantOf(subject, pattern string, actions ...string) metadata.Grant {
	return metadata.Grant{Subject: subject, Pattern: pattern, Actions: actions}
}
