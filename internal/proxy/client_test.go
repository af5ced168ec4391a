package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// scriptedRegistry is a scripted upstream: a registry on one httptest server and its token endpoint on
// another. It counts every request, issues Bearer (or Basic) challenges, serves tokens with expiry,
// and lets a test take over any request with handle.
type scriptedRegistry struct {
	t        *testing.T
	srv      *httptest.Server // the registry
	auth     *httptest.Server // the token endpoint
	release  chan struct{}    // closed at cleanup: handlers that block return
	mu       sync.Mutex
	mode     string // "bearer" (default), "basic" or "none"
	user     string // credentials the token endpoint (or Basic registry) requires; "" allows anonymous
	pass     string
	ttl      int // expires_in of tokens; 0 omits it
	field    string
	tokenHit func(w http.ResponseWriter, r *http.Request) bool // takes over a token request when true
	handle   func(w http.ResponseWriter, r *http.Request) bool // takes over a registry request when true
	issued   map[string]string                                 // token -> scope
	next     int
	counts   map[string]int    // "GET manifest", "HEAD manifest", "GET blob", "HEAD blob", "GET tags", "401", "token"
	tokAuth  []string          // the Authorization header of each token request
	tokQuery []string          // the query of each token request
	manif    map[string][]byte // "repo:ref" -> body (refs by tag and by digest)
	blobs    map[string][]byte // digest -> body
	extra    http.Header       // headers added to every registry response
}

const scriptedMediaType = oci.MediaTypeImageManifest

func newScriptedRegistry(t *testing.T) *scriptedRegistry {
	t.Helper()
	f := &scriptedRegistry{t: t, mode: "bearer", field: "token", ttl: 300, release: make(chan struct{}),
		issued: map[string]string{}, counts: map[string]int{}, manif: map[string][]byte{}, blobs: map[string][]byte{},
		extra: http.Header{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serveRegistry))
	f.auth = httptest.NewServer(http.HandlerFunc(f.serveToken))
	t.Cleanup(f.auth.Close)
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.release) }) // runs first: blocked handlers return before Close waits for them
	return f
}

// addImage stores a manifest under repo:tag and repo:digest and returns its digest.
func (f *scriptedRegistry) addImage(repo, tag string, body []byte) oci.Digest {
	d := digest.FromBytes(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.manif[repo+":"+tag] = body
	f.manif[repo+":"+d.String()] = body
	return d
}

func (f *scriptedRegistry) addBlob(body []byte) oci.Digest {
	d := digest.FromBytes(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[d.String()] = body
	return d
}

func (f *scriptedRegistry) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[key]
}

func (f *scriptedRegistry) realm() string { return f.auth.URL + "/token" }

func (f *scriptedRegistry) serveToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.counts["token"]++
	f.tokAuth = append(f.tokAuth, r.Header.Get("Authorization"))
	f.tokQuery = append(f.tokQuery, r.URL.RawQuery)
	hook, user, pass, ttl, field := f.tokenHit, f.user, f.pass, f.ttl, f.field
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if user != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"details":"incorrect username or password"}`)
			return
		}
	}
	f.mu.Lock()
	f.next++
	tok := fmt.Sprintf("tok-%d", f.next)
	f.issued[tok] = r.URL.Query().Get("scope")
	f.mu.Unlock()
	resp := map[string]any{field: tok, "issued_at": time.Now().UTC().Format(time.RFC3339)}
	if ttl != 0 {
		resp["expires_in"] = ttl
	}
	json.NewEncoder(w).Encode(resp)
}

// route splits /v2/<repo>/<kind>/<ref> the way the registry's router does, from the right.
func scriptedRoute(path string) (repo, kind, ref string) {
	p := strings.TrimPrefix(path, "/v2/")
	if r, ok := strings.CutSuffix(p, "/tags/list"); ok {
		return r, "tags", ""
	}
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(p, "/"+k+"/"); i >= 0 {
			return p[:i], k, p[i+len(k)+2:]
		}
	}
	return "", "", ""
}

func (f *scriptedRegistry) serveRegistry(w http.ResponseWriter, r *http.Request) {
	repo, kind, ref := scriptedRoute(r.URL.Path)
	key := r.Method + " " + strings.TrimSuffix(kind, "s")
	f.mu.Lock()
	f.counts[key]++
	for k, vs := range f.extra {
		w.Header()[k] = vs
	}
	mode, hook := f.mode, f.handle
	f.mu.Unlock()
	if !f.authorized(w, r, mode, repo) {
		return
	}
	if hook != nil && hook(w, r) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind {
	case "manifests":
		body, ok := f.manif[repo+":"+ref]
		if !ok {
			writeOCIError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		w.Header().Set("Content-Type", scriptedMediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	case "blobs":
		body, ok := f.blobs[ref]
		if !ok {
			writeOCIError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	default:
		writeOCIError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such route")
	}
}

// authorized answers a 401 challenge unless the request carries what mode requires.
func (f *scriptedRegistry) authorized(w http.ResponseWriter, r *http.Request, mode, repo string) bool {
	authz := r.Header.Get("Authorization")
	switch mode {
	case "none":
		return true
	case "basic":
		u, p, ok := r.BasicAuth()
		if ok && u == f.user && p == f.pass {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
	default:
		tok, ok := strings.CutPrefix(authz, "Bearer ")
		f.mu.Lock()
		scope, valid := f.issued[tok]
		f.mu.Unlock()
		if ok && valid && (scope == "repository:"+repo+":pull" || repo == "") { // repo "": not under /v2/
			return true
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="fake.test",scope="repository:%s:pull"`, f.realm(), repo))
	}
	f.mu.Lock()
	f.counts["401"]++
	f.mu.Unlock()
	writeOCIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	return false
}

// revoke forgets every token issued, as a registry whose tokens expired early would.
func (f *scriptedRegistry) revoke() {
	f.mu.Lock()
	f.issued = map[string]string{}
	f.mu.Unlock()
}

func writeOCIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func (f *scriptedRegistry) upstream(t *testing.T, mod func(*UpstreamConfig)) *Upstream {
	t.Helper()
	cfg := UpstreamConfig{Name: "fake", URL: f.srv.URL, StallTimeout: 2 * time.Second, HeaderTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	u, err := NewUpstream(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.CloseIdleConnections)
	return u
}

// stepClock is a clock the test moves.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func scriptedManifest(name string) []byte {
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[]}`,
		scriptedMediaType, digest.FromString(name))
}

func wantUpstreamKind(t *testing.T, err error, kind ErrorKind, status int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want an *Error of kind %s", err, err, kind)
	}
	if e.Kind != kind || (status != 0 && e.Status != status) {
		t.Fatalf("error %v: kind %s status %d, want %s %d", err, e.Kind, e.Status, kind, status)
	}
	return e
}

func TestNewUpstreamURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url  string
		ok   bool
		base string
	}{
		{"https://registry-1.docker.io", true, "https://registry-1.docker.io"},
		{"https://registry-1.docker.io/", true, "https://registry-1.docker.io"},
		{"http://127.0.0.1:5000", true, "http://127.0.0.1:5000"},
		{"http://[::1]:5000/", true, "http://[::1]:5000"},
		{"ftp://example.com", false, ""},
		{"registry-1.docker.io", false, ""},
		{"https://", false, ""},
		{"https://example.com/v2/", false, ""},
		{"https://example.com/prefix", false, ""},
		{"https://example.com/?x=1", false, ""},
		{"https://example.com/#frag", false, ""},
		{"https://user:pass@example.com", false, ""},
		{"https://exa mple.com", false, ""},
		{"", false, ""},
	} {
		u, err := NewUpstream(UpstreamConfig{URL: c.url}, nil)
		if (err == nil) != c.ok {
			t.Errorf("NewUpstream(%q): err %v, want ok=%v", c.url, err, c.ok)
			continue
		}
		if c.ok {
			if got := u.st.base.String(); got != c.base {
				t.Errorf("NewUpstream(%q): base %q, want %q", c.url, got, c.base)
			}
			if u.Name() == "" || u.cfg.StallTimeout != defaultStallTimeout || u.cfg.HeaderTimeout != defaultHeaderTimeout || u.cfg.DialTimeout != defaultDialTimeout {
				t.Errorf("NewUpstream(%q): name %q, config %+v", c.url, u.Name(), u.cfg)
			}
		}
	}
	if _, err := NewUpstream(UpstreamConfig{URL: "https://example.com", StallTimeout: -1}, nil); err == nil {
		t.Error("a negative timeout was accepted")
	}
}

func TestManifestBlobAndStats(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.mode = "none"
	body := scriptedManifest("a")
	d := f.addImage("library/nginx", "1.27", body)
	blob := []byte(strings.Repeat("layer", 1000))
	bd := f.addBlob(blob)
	u := f.upstream(t, nil)
	ctx := context.Background()

	desc, err := u.HeadManifest(ctx, "library/nginx", "1.27")
	if err != nil {
		t.Fatal(err)
	}
	if desc != (Descriptor{MediaType: scriptedMediaType, Digest: d, Size: int64(len(body))}) {
		t.Errorf("HeadManifest = %+v", desc)
	}
	for _, ref := range []string{"1.27", d.String()} {
		got, mt, err := u.GetManifest(ctx, "library/nginx", ref)
		if err != nil || string(got) != string(body) || mt != scriptedMediaType {
			t.Errorf("GetManifest(%s) = %q, %q, %v", ref, got, mt, err)
		}
	}
	size, err := u.HeadBlob(ctx, "library/nginx", bd)
	if err != nil || size != int64(len(blob)) {
		t.Errorf("HeadBlob = %d, %v", size, err)
	}
	rc, size, err := u.GetBlob(ctx, "library/nginx", bd)
	if err != nil || size != int64(len(blob)) {
		t.Fatalf("GetBlob = %d, %v", size, err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != string(blob) {
		t.Errorf("blob body %d bytes, %v", len(got), err)
	}
	s := u.Stats()
	want := UpstreamStats{ManifestGets: 2, ManifestHeads: 1, BlobGets: 1, BlobHeads: 1, BlobBytes: int64(len(blob)), Errors: map[ErrorKind]int64{},
		Responses: map[string]map[int]int64{"manifest_get": {200: 2}, "manifest_head": {200: 1}, "blob_get": {200: 1}, "blob_head": {200: 1}}}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if f.count("GET manifest") != 2 || f.count("HEAD manifest") != 1 || f.count("GET blob") != 1 || f.count("HEAD blob") != 1 {
		t.Errorf("upstream saw %v", f.counts)
	}
	// Stats is a copy.
	s.Errors[KindNetwork] = 5
	if u.Stats().Errors[KindNetwork] != 0 {
		t.Error("Stats shares its Errors map")
	}
	if u.Name() != "fake" {
		t.Errorf("Name() = %q", u.Name())
	}
}

func TestTokenFlowAnonymous(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.addImage("library/nginx", "latest", scriptedManifest("n"))
	f.addImage("library/redis", "latest", scriptedManifest("r"))
	u := f.upstream(t, nil)
	ctx := context.Background()

	for range 3 {
		if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("token"); n != 1 {
		t.Errorf("%d token requests for one repository, want 1", n)
	}
	if n := f.count("401"); n != 1 {
		t.Errorf("%d challenges, want 1 (the first request only)", n)
	}
	if f.tokAuth[0] != "" {
		t.Errorf("anonymous token request sent Authorization %q", f.tokAuth[0])
	}
	if q := f.tokQuery[0]; q != "scope=repository%3Alibrary%2Fnginx%3Apull&service=fake.test" {
		t.Errorf("token query %q", q)
	}
	// Another repository: the challenge is known, so its token is fetched before the request and
	// the registry sees no unauthenticated request.
	if _, _, err := u.GetManifest(ctx, "library/redis", "latest"); err != nil {
		t.Fatal(err)
	}
	if f.count("token") != 2 || f.count("401") != 1 || f.count("GET manifest") != 1 {
		t.Errorf("second repository: upstream saw %v", f.counts)
	}
	if s := u.Stats(); s.TokenRequests != 2 || s.ManifestHeads != 4 || s.ManifestGets != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestTokenCredentials(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, user, pass string
		wantUser         string
	}{
		{"user and password", "alice", "s3cret", "alice"},
		{"token only", "", "dckr_pat_x", "<token>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newScriptedRegistry(t)
			f.user, f.pass = c.wantUser, c.pass
			f.addImage("team/app", "v1", scriptedManifest("x"))
			u := f.upstream(t, func(cfg *UpstreamConfig) { cfg.Username, cfg.Password = c.user, c.pass })
			if _, _, err := u.GetManifest(context.Background(), "team/app", "v1"); err != nil {
				t.Fatal(err)
			}
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte(c.wantUser+":"+c.pass))
			if len(f.tokAuth) != 1 || f.tokAuth[0] != want {
				t.Errorf("token requests sent %q, want [%q]", f.tokAuth, want)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.user, f.pass = "alice", "right"
		u := f.upstream(t, func(cfg *UpstreamConfig) { cfg.Username, cfg.Password = "alice", "wrong" })
		_, _, err := u.GetManifest(context.Background(), "team/app", "v1")
		e := wantUpstreamKind(t, err, KindAuth, http.StatusUnauthorized)
		if !strings.Contains(e.Message, "incorrect username or password") {
			t.Errorf("message %q", e.Message)
		}
	})
}

func TestTokenConcurrent(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	d := f.addImage("library/nginx", "latest", scriptedManifest("n"))
	gate := make(chan struct{})
	f.tokenHit = func(w http.ResponseWriter, r *http.Request) bool {
		<-gate // hold the token request until every request is waiting for it
		return false
	}
	u := f.upstream(t, nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, _, err := u.GetManifest(context.Background(), "library/nginx", d.String())
			errs <- err
		})
	}
	waiters := func() int {
		u.mu.Lock()
		defer u.mu.Unlock()
		if c := u.st.inflight["repository:library/nginx:pull"]; c != nil {
			return c.waiters
		}
		return 0
	}
	deadline := time.Now().Add(2 * time.Second)
	for waiters() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if w := waiters(); w != n {
		t.Errorf("%d requests wait for the token, want %d", w, n)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.count("token"); got != 1 {
		t.Errorf("%d concurrent requests made %d token requests, want 1", n, got)
	}
	if s, challenged := u.Stats(), f.count("401"); s.TokenRequests != 1 || s.ManifestGets != int64(n+challenged) {
		t.Errorf("stats %+v, %d challenges (every request sent counts, the 401s too)", s, challenged)
	}
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		ttl        int
		field      string
		stillValid time.Duration // the token is reused this long after it was issued
		renewed    time.Duration // and replaced by then
	}{
		{"expires_in 300", 300, "token", 289 * time.Second, 291 * time.Second},
		{"no expires_in: 60 s", 0, "token", 53 * time.Second, 55 * time.Second},
		{"access_token", 30, "access_token", 26 * time.Second, 28 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newScriptedRegistry(t)
			f.ttl, f.field = c.ttl, c.field
			f.addImage("library/nginx", "latest", scriptedManifest("n"))
			u := f.upstream(t, nil)
			clock := &stepClock{t: time.Unix(1_700_000_000, 0)}
			u.st.now = clock.now
			ctx := context.Background()
			head := func() {
				t.Helper()
				if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
					t.Fatal(err)
				}
			}
			head()
			clock.advance(c.stillValid)
			head()
			if n := f.count("token"); n != 1 {
				t.Fatalf("after %s: %d token requests, want 1", c.stillValid, n)
			}
			clock.advance(c.renewed - c.stillValid)
			head()
			if n := f.count("token"); n != 2 {
				t.Fatalf("after %s: %d token requests, want 2", c.renewed, n)
			}
			if n := f.count("401"); n != 1 {
				t.Errorf("%d challenges: an expired token was sent", n)
			}
		})
	}
}

// Tokens are cached per scope, that is per upstream repository: the expired ones must not pile
// up, one for every repository ever pulled, for as long as berth runs. The valid ones stay.
func TestTokenCacheForgetsExpired(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	u := f.upstream(t, nil)
	clock := &stepClock{t: time.Unix(1_700_000_000, 0)}
	u.st.now = clock.now
	ctx := context.Background()
	head := func(repo string) {
		t.Helper()
		if _, err := u.HeadManifest(ctx, repo, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	const repos = 300
	for i := range repos {
		repo := fmt.Sprintf("team/old-%d", i)
		f.addImage(repo, "v1", scriptedManifest(repo))
		head(repo)
		clock.advance(301 * time.Second) // past expires_in: this repository's token is dead
	}
	cached := func() int {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.tokens)
	}
	if n := cached(); n > minTokenPrune {
		t.Errorf("%d tokens cached after %d repositories whose tokens all expired, want at most %d", n, repos, minTokenPrune)
	}
	// Live tokens, more than a prune's threshold: none is dropped, so pulling them again asks for
	// no new token.
	const live = 3 * minTokenPrune
	for i := range live {
		repo := fmt.Sprintf("team/live-%d", i)
		f.addImage(repo, "v1", scriptedManifest(repo))
		head(repo)
	}
	before := f.count("token")
	for i := range live {
		head(fmt.Sprintf("team/live-%d", i))
	}
	if n := f.count("token") - before; n != 0 {
		t.Errorf("pulling %d repositories again with valid tokens made %d token requests, want 0", live, n)
	}
	if n := cached(); n < live || n > 2*live {
		t.Errorf("%d tokens cached with %d valid ones, want %d to %d", n, live, live, 2*live)
	}
}

func TestTokenRefused(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.addImage("library/nginx", "latest", scriptedManifest("n"))
	u := f.upstream(t, nil)
	ctx := context.Background()
	if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	// A cached token the registry no longer accepts is replaced once, and the request succeeds.
	f.revoke()
	if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	if n := f.count("token"); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	// A fresh token that is refused (Docker Hub's answer for a private or missing repository) is
	// KindAuth at once: one token request, one request, no loop.
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/private/") {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="fake.test",scope="repository:private/x:pull",error="insufficient_scope"`, f.realm()))
			writeOCIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return true
		}
		return false
	}
	before, beforeGets := f.count("token"), f.count("GET manifest")
	_, _, err := u.GetManifest(ctx, "private/x", "latest")
	e := wantUpstreamKind(t, err, KindAuth, http.StatusUnauthorized)
	if e.Message != "authentication required" {
		t.Errorf("message %q", e.Message)
	}
	if tok, gets := f.count("token")-before, f.count("GET manifest")-beforeGets; tok != 1 || gets != 1 {
		t.Errorf("a refused repository cost %d token requests and %d GETs, want 1 and 1", tok, gets)
	}
	// 403 with a token: KindAuth.
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		writeOCIError(w, http.StatusForbidden, "DENIED", "denied")
		return true
	}
	_, err = u.HeadManifest(ctx, "library/nginx", "latest")
	wantUpstreamKind(t, err, KindAuth, http.StatusForbidden)
}

func TestBasicChallenge(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.mode, f.user, f.pass = "basic", "bob", "pw"
	f.addImage("team/app", "v1", scriptedManifest("b"))
	u := f.upstream(t, func(c *UpstreamConfig) { c.Username, c.Password = "bob", "pw" })
	ctx := context.Background()
	for range 2 {
		if _, _, err := u.GetManifest(ctx, "team/app", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if f.count("401") != 1 || f.count("token") != 0 || f.count("GET manifest") != 3 {
		t.Errorf("upstream saw %v; want one challenge, then Basic on every request", f.counts)
	}

	anon := f.upstream(t, nil)
	_, _, err := anon.GetManifest(ctx, "team/app", "v1")
	wantUpstreamKind(t, err, KindAuth, http.StatusUnauthorized)
	wrong := f.upstream(t, func(c *UpstreamConfig) { c.Username, c.Password = "bob", "nope" })
	_, _, err = wrong.GetManifest(ctx, "team/app", "v1")
	wantUpstreamKind(t, err, KindAuth, http.StatusUnauthorized)
}

func TestTokenEndpointFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		answer  func(w http.ResponseWriter)
		kind    ErrorKind
		status  int
		message string
		retry   time.Duration
	}{
		{"500", func(w http.ResponseWriter) { w.WriteHeader(500) }, KindAuth, 500, "", 0},
		{"503 with body", func(w http.ResponseWriter) { writeOCIError(w, 503, "UNAVAILABLE", "down for maintenance") }, KindAuth, 503, "down for maintenance", 0},
		{"401", func(w http.ResponseWriter) { w.WriteHeader(401) }, KindAuth, 401, "", 0},
		{"429", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "120")
			writeOCIError(w, 429, "TOOMANYREQUESTS", "slow down")
		}, KindRateLimited, 429, "slow down", 120 * time.Second},
		{"not JSON", func(w http.ResponseWriter) { io.WriteString(w, "<html>") }, KindAuth, 200, "not JSON", 0},
		{"no token", func(w http.ResponseWriter) { io.WriteString(w, `{"expires_in":300}`) }, KindAuth, 200, "no token", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newScriptedRegistry(t)
			f.tokenHit = func(w http.ResponseWriter, r *http.Request) bool { c.answer(w); return true }
			u := f.upstream(t, nil)
			_, err := u.HeadManifest(context.Background(), "library/nginx", "latest")
			e := wantUpstreamKind(t, err, c.kind, c.status)
			if !strings.Contains(e.Message, "token endpoint") || !strings.Contains(e.Message, c.message) || e.RetryAfter != c.retry {
				t.Errorf("error %+v", e)
			}
			if s := u.Stats(); s.Errors[c.kind] != 1 || s.TokenRequests != 1 || s.ManifestHeads != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.auth.Close()
		u := f.upstream(t, nil)
		_, err := u.HeadManifest(context.Background(), "library/nginx", "latest")
		e := wantUpstreamKind(t, err, KindAuth, 0)
		if KindOf(e.Err) != KindNetwork {
			t.Errorf("cause %v, want a network error", e.Err)
		}
	})
	t.Run("bad realm", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.handle = func(w http.ResponseWriter, r *http.Request) bool { return false }
		f.mode = "bearer"
		u := f.upstream(t, nil)
		u.st.challenge = authChallenge{scheme: "bearer", params: map[string]string{"realm": "ftp://x"}}
		_, err := u.HeadManifest(context.Background(), "library/nginx", "latest")
		wantUpstreamKind(t, err, KindAuth, 0)
		if f.count("HEAD manifest") != 0 {
			t.Error("the request was sent without a token")
		}
	})
}

func TestErrorKinds(t *testing.T) {
	t.Parallel()
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		name    string
		answer  func(w http.ResponseWriter)
		kind    ErrorKind
		status  int
		message string
		retry   time.Duration // minimum; checked to within 5 s
	}{
		{"404 OCI body", func(w http.ResponseWriter) { writeOCIError(w, 404, "MANIFEST_UNKNOWN", "manifest unknown") }, KindNotFound, 404, "manifest unknown", 0},
		{"404 bare", func(w http.ResponseWriter) { w.WriteHeader(404) }, KindNotFound, 404, "", 0},
		{"429 Docker Hub", func(w http.ResponseWriter) {
			w.Header().Set("ratelimit-limit", "100;w=21600")
			w.Header().Set("ratelimit-remaining", "0;w=21600")
			writeOCIError(w, 429, "TOOMANYREQUESTS", "You have reached your unauthenticated pull rate limit.")
		}, KindRateLimited, 429, "You have reached your unauthenticated pull rate limit.", 6 * time.Hour},
		{"429 Retry-After seconds", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(429)
		}, KindRateLimited, 429, "", 30 * time.Second},
		{"429 Retry-After date", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", date)
			w.WriteHeader(429)
		}, KindRateLimited, 429, "", 85 * time.Second},
		{"429 bare", func(w http.ResponseWriter) { w.WriteHeader(429) }, KindRateLimited, 429, "", 0},
		{"500", func(w http.ResponseWriter) { w.WriteHeader(500) }, KindUnavailable, 500, "", 0},
		{"502 HTML", func(w http.ResponseWriter) { w.WriteHeader(502); io.WriteString(w, "<html>bad gateway</html>") }, KindUnavailable, 502, "", 0},
		{"503", func(w http.ResponseWriter) { writeOCIError(w, 503, "UNAVAILABLE", "maintenance") }, KindUnavailable, 503, "maintenance", 0},
		{"403", func(w http.ResponseWriter) {
			writeOCIError(w, 403, "DENIED", "requested access to the resource is denied")
		}, KindAuth, 403, "requested access to the resource is denied", 0},
		{"400", func(w http.ResponseWriter) { writeOCIError(w, 400, "NAME_INVALID", "bad name") }, KindInvalid, 400, "bad name", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newScriptedRegistry(t)
			f.handle = func(w http.ResponseWriter, r *http.Request) bool { c.answer(w); return true }
			u := f.upstream(t, nil)
			ctx := context.Background()
			_, _, err := u.GetManifest(ctx, "library/nginx", "latest")
			e := wantUpstreamKind(t, err, c.kind, c.status)
			if e.Message != c.message || e.RetryAfter < c.retry || e.RetryAfter > c.retry+5*time.Second {
				t.Errorf("GET: message %q retry %s, want %q %s", e.Message, e.RetryAfter, c.message, c.retry)
			}
			_, err = u.HeadManifest(ctx, "library/nginx", "latest")
			wantUpstreamKind(t, err, c.kind, c.status)
			_, err = u.HeadBlob(ctx, "library/nginx", digest.FromString("x"))
			wantUpstreamKind(t, err, c.kind, c.status)
			_, _, err = u.GetBlob(ctx, "library/nginx", digest.FromString("x"))
			wantUpstreamKind(t, err, c.kind, c.status)
			_, err = u.Tags(ctx, "library/nginx")
			wantUpstreamKind(t, err, c.kind, c.status)
			s := u.Stats()
			if s.Errors[c.kind] != 5 || len(s.Errors) != 1 {
				t.Errorf("errors counted %v, want 5 %s", s.Errors, c.kind)
			}
			// Never a fallback from HEAD to GET, never a retry.
			if s.ManifestGets != 2 || s.ManifestHeads != 1 || s.BlobHeads != 1 || s.BlobGets != 1 {
				t.Errorf("stats %+v", s)
			}
			if f.count("GET manifest") != 2 || f.count("HEAD manifest") != 1 {
				t.Errorf("upstream saw %v", f.counts)
			}
		})
	}
}

func TestNetworkAndTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		u, err := NewUpstream(UpstreamConfig{URL: srv.URL}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = u.HeadManifest(ctx, "library/nginx", "latest")
		wantUpstreamKind(t, err, KindNetwork, 0)
		if s := u.Stats(); s.ManifestHeads != 1 || s.Errors[KindNetwork] != 1 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("connection cut", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.mode = "none"
		f.handle = func(w http.ResponseWriter, r *http.Request) bool { panic(http.ErrAbortHandler) }
		u := f.upstream(t, nil)
		_, err := u.HeadManifest(ctx, "library/nginx", "latest")
		wantUpstreamKind(t, err, KindNetwork, 0)
	})
	t.Run("header timeout", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.mode = "none"
		f.handle = func(w http.ResponseWriter, r *http.Request) bool {
			select {
			case <-r.Context().Done():
			case <-f.release:
			}
			return true
		}
		u := f.upstream(t, func(c *UpstreamConfig) { c.HeaderTimeout = 100 * time.Millisecond })
		start := time.Now()
		_, err := u.HeadManifest(ctx, "library/nginx", "latest")
		wantUpstreamKind(t, err, KindTimeout, 0)
		if d := time.Since(start); d > 20*time.Second { // a hang bound: the handler never answers
			t.Errorf("timed out after %s", d)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.mode = "none"
		f.handle = func(w http.ResponseWriter, r *http.Request) bool {
			select {
			case <-r.Context().Done():
			case <-f.release:
			}
			return true
		}
		u := f.upstream(t, nil)
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, _, err := u.GetManifest(cctx, "library/nginx", "latest")
		if !errors.Is(err, context.DeadlineExceeded) || KindOf(err) != "" {
			t.Errorf("error %v, want the caller's context error", err)
		}
		if s := u.Stats(); len(s.Errors) != 0 || s.ManifestGets != 1 {
			t.Errorf("stats %+v: the caller's cancellation was counted", s)
		}
	})
	t.Run("caller cancels while waiting for a token", func(t *testing.T) {
		t.Parallel()
		f := newScriptedRegistry(t)
		f.tokenHit = func(w http.ResponseWriter, r *http.Request) bool {
			select {
			case <-r.Context().Done():
			case <-f.release:
			}
			return true
		}
		u := f.upstream(t, nil)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := u.HeadManifest(cctx, "library/nginx", "latest")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
	})
}

// stallingHandler sends half of body, then nothing until the client gives up.
func (f *scriptedRegistry) stallingHandler(body []byte) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", scriptedMediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-f.release:
		}
		return true
	}
}

func TestStallTimeout(t *testing.T) {
	t.Parallel()
	const stall = 150 * time.Millisecond
	blob := []byte(strings.Repeat("0123456789", 10_000))
	f := newScriptedRegistry(t)
	f.mode = "none"
	f.handle = f.stallingHandler(blob)
	u := f.upstream(t, func(c *UpstreamConfig) { c.StallTimeout = stall })
	ctx := context.Background()

	rc, size, err := u.GetBlob(ctx, "library/nginx", digest.FromBytes(blob))
	if err != nil || size != int64(len(blob)) {
		t.Fatalf("GetBlob = %d, %v", size, err)
	}
	// A slow reader is not a stalled upstream: the clock runs only while a Read waits.
	time.Sleep(2 * stall)
	start := time.Now()
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	wantUpstreamKind(t, err, KindTimeout, 0)
	if n != int64(len(blob)/2) {
		t.Errorf("read %d bytes before the stall, want %d", n, len(blob)/2)
	}
	if d := time.Since(start); d < stall || d > stall+20*time.Second { // the upper bound: a hang
		t.Errorf("stall detected after %s, want about %s", d, stall)
	}
	if _, err := rc.Read(make([]byte, 1)); KindOf(err) != KindTimeout {
		t.Errorf("read after the stall: %v", err)
	}
	s := u.Stats()
	if s.BlobBytes != n || s.Errors[KindTimeout] != 1 {
		t.Errorf("stats %+v", s)
	}

	// A manifest body that stalls.
	_, _, err = u.GetManifest(ctx, "library/nginx", "latest")
	wantUpstreamKind(t, err, KindTimeout, 0)
	if s := u.Stats(); s.Errors[KindTimeout] != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestTruncatedBlob(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.mode = "none"
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "short")
		return true // the handler returns: the server ends the response early
	}
	u := f.upstream(t, nil)
	rc, _, err := u.GetBlob(context.Background(), "library/nginx", digest.FromString("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	wantUpstreamKind(t, err, KindInvalid, 0)
	if s := u.Stats(); s.BlobBytes != 5 || s.Errors[KindInvalid] != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestRedirectDropsAuthorization(t *testing.T) {
	t.Parallel()
	blob := []byte("layer bytes in object storage")
	var mu sync.Mutex
	var storageAuth []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		if r.Method == http.MethodGet {
			w.Write(blob)
		}
	}))
	t.Cleanup(storage.Close)

	f := newScriptedRegistry(t)
	var sameHostAuth string
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/data/"): // a redirect on the registry's own host
			mu.Lock()
			sameHostAuth = r.Header.Get("Authorization")
			mu.Unlock()
			w.Write(blob)
		case strings.HasPrefix(r.URL.Path, "/v2/library/nginx/blobs/"):
			// Same host name (127.0.0.1) as the registry, another port: Go's client would forward
			// the Authorization header there by itself.
			http.Redirect(w, r, storage.URL+"/bucket/blob?X-Amz-Signature=abc", http.StatusTemporaryRedirect)
		default:
			http.Redirect(w, r, "/data/blob", http.StatusTemporaryRedirect)
		}
		return true
	}
	u := f.upstream(t, nil)
	ctx := context.Background()
	d := digest.FromBytes(blob)

	rc, size, err := u.GetBlob(ctx, "library/nginx", d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != string(blob) || size != int64(len(blob)) {
		t.Fatalf("blob %q (%d), %v", got, size, err)
	}
	if size, err := u.HeadBlob(ctx, "library/nginx", d); err != nil || size != int64(len(blob)) {
		t.Fatalf("HeadBlob = %d, %v", size, err)
	}
	mu.Lock()
	seen := storageAuth
	mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("object storage saw %d requests, want 2", len(seen))
	}
	for _, a := range seen {
		if a != "" {
			t.Errorf("object storage received Authorization %q", a)
		}
	}
	if s := u.Stats(); s.BlobBytes != int64(len(blob)) || s.BlobGets != 2 || s.BlobHeads != 1 {
		t.Errorf("stats %+v (a GET and a HEAD after the first 401)", s)
	}

	// A redirect to the registry's own scheme and host keeps the token.
	rc, _, err = u.GetBlob(ctx, "library/redis", d)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	mu.Lock()
	auth := sameHostAuth
	mu.Unlock()
	if err != nil || string(got) != string(blob) || !strings.HasPrefix(auth, "Bearer tok-") {
		t.Errorf("same-host redirect: %q, %v, Authorization %q", got, err, auth)
	}
}

func TestManifestVerification(t *testing.T) {
	t.Parallel()
	good := scriptedManifest("good")
	evil := scriptedManifest("evil")
	gd := digest.FromBytes(good)
	for _, c := range []struct {
		name    string
		ref     string
		head    bool
		answer  func(w http.ResponseWriter)
		message string
	}{
		{"wrong body for a digest", gd.String(), false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", scriptedMediaType)
			w.Write(evil)
		}, "not " + gd.String()},
		{"body does not match Docker-Content-Digest", "latest", false, func(w http.ResponseWriter) {
			w.Header().Set("Docker-Content-Digest", gd.String())
			w.Write(evil)
		}, "not " + gd.String()},
		{"too large by Content-Length", "latest", false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(oci.MaxManifestSize+1))
			w.WriteHeader(200)
		}, "larger than"},
		{"too large, chunked", "latest", false, func(w http.ResponseWriter) {
			chunk := make([]byte, 64<<10)
			for range oci.MaxManifestSize/len(chunk) + 1 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, "larger than"},
		{"HEAD answers another digest", gd.String(), true, func(w http.ResponseWriter) {
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(evil).String())
		}, "upstream answered"},
		{"HEAD of a tag without a digest", "latest", true, func(w http.ResponseWriter) {}, "without Docker-Content-Digest"},
		{"HEAD with a bad digest", "latest", true, func(w http.ResponseWriter) {
			w.Header().Set("Docker-Content-Digest", "sha256:xyz")
		}, "bad Docker-Content-Digest"},
		{"206", "latest", false, func(w http.ResponseWriter) { w.WriteHeader(http.StatusPartialContent) }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newScriptedRegistry(t)
			f.mode = "none"
			f.handle = func(w http.ResponseWriter, r *http.Request) bool { c.answer(w); return true }
			u := f.upstream(t, nil)
			var err error
			if c.head {
				_, err = u.HeadManifest(context.Background(), "library/nginx", c.ref)
			} else {
				_, _, err = u.GetManifest(context.Background(), "library/nginx", c.ref)
			}
			e := wantUpstreamKind(t, err, KindInvalid, 0)
			if !strings.Contains(e.Message, c.message) {
				t.Errorf("message %q, want %q in it", e.Message, c.message)
			}
			if s := u.Stats(); s.Errors[KindInvalid] != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestManifestMediaType(t *testing.T) {
	t.Parallel()
	body := scriptedManifest("m")
	for _, c := range []struct{ contentType, want string }{
		{scriptedMediaType + "; charset=utf-8", scriptedMediaType},
		{oci.MediaTypeDockerList, oci.MediaTypeDockerList},
		{"application/json", scriptedMediaType}, // generic: the body's mediaType
		{"", scriptedMediaType},
	} {
		f := newScriptedRegistry(t)
		f.mode = "none"
		f.handle = func(w http.ResponseWriter, r *http.Request) bool {
			if got := r.Header.Get("Accept"); got != ManifestAccept {
				t.Errorf("Accept %q", got)
			}
			w.Header()["Content-Type"] = []string{c.contentType}
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
			w.Write(body)
			return true
		}
		u := f.upstream(t, nil)
		got, mt, err := u.GetManifest(context.Background(), "library/nginx", "latest")
		if err != nil || mt != c.want || string(got) != string(body) {
			t.Errorf("Content-Type %q: media type %q, %v; want %q", c.contentType, mt, err, c.want)
		}
		d, err := u.HeadManifest(context.Background(), "library/nginx", "latest")
		if err != nil || d.Size != int64(len(body)) || d.Digest != digest.FromBytes(body) {
			t.Errorf("HEAD: %+v, %v", d, err)
		}
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	u := f.upstream(t, nil)
	ctx := context.Background()
	for _, c := range []struct{ repo, ref string }{
		{"../etc", "latest"}, {"Library/Nginx", "latest"}, {"library/nginx", "../../x"},
		{"library/nginx", "sha256:short"}, {"library/nginx", "md5:d41d8cd98f00b204e9800998ecf8427e"}, {"", "latest"},
	} {
		if _, err := u.HeadManifest(ctx, c.repo, c.ref); oci.AsError(err) == nil {
			t.Errorf("HeadManifest(%q, %q) = %v, want an *oci.Error", c.repo, c.ref, err)
		}
		if _, _, err := u.GetManifest(ctx, c.repo, c.ref); oci.AsError(err) == nil {
			t.Errorf("GetManifest(%q, %q) = %v, want an *oci.Error", c.repo, c.ref, err)
		}
	}
	if _, _, err := u.GetBlob(ctx, "library/nginx", "sha256:nothex"); oci.AsError(err) == nil {
		t.Errorf("GetBlob with a bad digest: %v", err)
	}
	if _, err := u.HeadBlob(ctx, "a//b", digest.FromString("x")); oci.AsError(err) == nil {
		t.Errorf("HeadBlob with a bad name: %v", err)
	}
	if _, err := u.Tags(ctx, "UPPER"); oci.AsError(err) == nil {
		t.Errorf("Tags with a bad name: %v", err)
	}
	if n := f.count("HEAD manifest") + f.count("GET manifest") + f.count("GET blob") + f.count("token"); n != 0 {
		t.Errorf("%d requests sent for bad input", n)
	}
	if s := u.Stats(); len(s.Errors) != 0 {
		t.Errorf("bad input counted as upstream errors: %v", s.Errors)
	}
}

func TestTags(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	pages := map[string]struct {
		tags []string
		link string
	}{
		"":   {[]string{"a", "b"}, `</v2/library/nginx/tags/list?last=b&n=2>; rel="next"`},
		"b":  {[]string{"c", "d"}, `<http://` + f.srv.Listener.Addr().String() + `/v2/library/nginx/tags/list?last=d&n=2>; rel=next, <https://example.com/docs>; rel="help"`},
		"d":  {[]string{"e"}, ""},
		"x":  {[]string{"x"}, `<` + other.URL + `/v2/library/nginx/tags/list?last=y>; rel="next"`},
		"lp": {[]string{"l"}, `</v2/library/loop/tags/list?last=lp>; rel="next"`},
	}
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		last := r.URL.Query().Get("last")
		switch {
		case strings.Contains(r.URL.Path, "/cross/"):
			last = "x"
		case strings.Contains(r.URL.Path, "/loop/"):
			last = "lp"
		case strings.Contains(r.URL.Path, "/empty/"):
			io.WriteString(w, `{"name":"library/empty","tags":null}`)
			return true
		}
		p := pages[last]
		if p.link != "" {
			w.Header().Set("Link", p.link)
		}
		json.NewEncoder(w).Encode(map[string]any{"name": "library/nginx", "tags": p.tags})
		return true
	}
	u := f.upstream(t, nil)
	ctx := context.Background()
	tags, err := u.Tags(ctx, "library/nginx")
	if err != nil || strings.Join(tags, ",") != "a,b,c,d,e" {
		t.Errorf("Tags = %q, %v", tags, err)
	}
	if tags, err := u.Tags(ctx, "library/empty"); err != nil || tags == nil || len(tags) != 0 {
		t.Errorf("empty Tags = %#v, %v", tags, err)
	}
	// A Link to another host would carry the token there.
	_, err = u.Tags(ctx, "library/cross")
	wantUpstreamKind(t, err, KindInvalid, 0)
	// A Link that never ends.
	_, err = u.Tags(ctx, "library/loop")
	wantUpstreamKind(t, err, KindInvalid, 0)
}

func TestParseChallenges(t *testing.T) {
	t.Parallel()
	type m = map[string]string
	for _, c := range []struct {
		name   string
		values []string
		want   []authChallenge
	}{
		{"Docker Hub", []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`},
			[]authChallenge{{"bearer", m{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull"}}}},
		{"comma in a quoted value", []string{`Bearer realm="https://a/token",scope="repository:x/y:pull,push",error="insufficient_scope"`},
			[]authChallenge{{"bearer", m{"realm": "https://a/token", "scope": "repository:x/y:pull,push", "error": "insufficient_scope"}}}},
		{"spaces, case, bare values", []string{`  bearer   Realm = "https://a/token" ,  SERVICE=reg.io , scope=repository:a:pull`},
			[]authChallenge{{"bearer", m{"realm": "https://a/token", "service": "reg.io", "scope": "repository:a:pull"}}}},
		{"escapes", []string{`Bearer realm="https://a/t?x=\"y\"",service="s\\1"`},
			[]authChallenge{{"bearer", m{"realm": `https://a/t?x="y"`, "service": `s\1`}}}},
		{"two challenges in one value", []string{`Basic realm="reg", Bearer realm="https://a/token",service="s"`},
			[]authChallenge{{"basic", m{"realm": "reg"}}, {"bearer", m{"realm": "https://a/token", "service": "s"}}}},
		{"two values", []string{`Basic realm="reg"`, `Bearer realm="https://a/token"`},
			[]authChallenge{{"basic", m{"realm": "reg"}}, {"bearer", m{"realm": "https://a/token"}}}},
		{"scheme alone", []string{`Basic`}, []authChallenge{{"basic", m{}}}},
		{"unterminated quote", []string{`Bearer realm="https://a/token`}, []authChallenge{{"bearer", m{"realm": "https://a/token"}}}},
		{"garbage", []string{`"quoted"`, `=`, ``, `,,,`}, nil},
		{"garbage after a challenge", []string{`Bearer realm="r" "junk" Basic`}, []authChallenge{{"bearer", m{"realm": "r"}}}},
	} {
		got := parseChallenges(c.values)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// Bearer wins over Basic.
	if c, ok := pickChallenge([]string{`Basic realm="reg"`, `Bearer realm="https://a/token"`}); !ok || c.scheme != "bearer" {
		t.Errorf("pickChallenge = %v, %v", c, ok)
	}
	if c, ok := pickChallenge([]string{`Bearer service="no realm"`, `Basic realm="reg"`}); !ok || c.scheme != "basic" {
		t.Errorf("pickChallenge = %v, %v", c, ok)
	}
	if _, ok := pickChallenge([]string{`Negotiate`}); ok {
		t.Error("pickChallenge accepted Negotiate")
	}
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		values []string
		want   string
	}{
		{[]string{`</v2/a/tags/list?last=b&n=2>; rel="next"`}, "/v2/a/tags/list?last=b&n=2"},
		{[]string{`<https://x/help>; rel="help", </v2/a/tags/list?last=c>; rel=next`}, "/v2/a/tags/list?last=c"},
		{[]string{`<https://x/help>; rel="help"`, `</next>;rel="prev next"`}, "/next"},
		{[]string{`</prev>; rel="prev"`}, ""},
		{[]string{`garbage`}, ""},
		{[]string{`<unterminated; rel="next"`}, ""},
		{nil, ""},
	} {
		if got := linkNext(c.values); got != c.want {
			t.Errorf("linkNext(%q) = %q, want %q", c.values, got, c.want)
		}
	}
}

func TestNoCredentialsToPlainHTTPRealm(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t) // its token endpoint is plain http
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="s"`, f.realm()))
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(reg.Close)
	u, err := NewUpstream(UpstreamConfig{URL: reg.URL, Username: "alice", Password: "pw", Transport: reg.Client().Transport}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.HeadManifest(context.Background(), "library/nginx", "latest")
	e := wantUpstreamKind(t, err, KindAuth, 0)
	if !strings.Contains(e.Message, "plain-http") || f.count("token") != 0 {
		t.Errorf("error %v; token endpoint saw %d requests", e, f.count("token"))
	}
}
