package hubemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, opts Options) *Hub {
	t.Helper()
	h, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// response is a finished request.
type response struct {
	*http.Response
	body []byte
	err  error // reading the body
}

func do(t *testing.T, c *http.Client, method, u, auth string) response {
	t.Helper()
	r, err := send(c, method, u, auth)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return r
}

func send(c *http.Client, method, u, auth string) (response, error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return response{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{Response: resp, body: body, err: err}, nil
}

// token gets a token for the scopes, with Basic credentials if user is set, and returns the
// Authorization header value.
func token(t *testing.T, h *Hub, user, pass string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {Service}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodGet, h.AuthURL()+"?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("token: %d %s", resp.StatusCode, b)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	if tr.Token == "" || tr.Token != tr.AccessToken {
		t.Fatalf("token %q, access_token %q", tr.Token, tr.AccessToken)
	}
	if _, err := time.Parse(time.RFC3339, tr.IssuedAt); err != nil {
		t.Fatalf("issued_at: %v", err)
	}
	return "Bearer " + tr.Token
}

func pull(repo string) string { return "repository:" + repo + ":pull" }

func (h *Hub) manifestURL(repo, ref string) string {
	return h.RegistryURL() + "/v2/" + repo + "/manifests/" + ref
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
}

func TestChallengeAndTokenFlow(t *testing.T) {
	h := start(t, Options{})
	img, err := h.PushImage("library/nginx", "latest")
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", "")
	wantStatus(t, r, http.StatusUnauthorized)
	want := fmt.Sprintf(`Bearer realm="%s",service="registry.docker.io"`, h.AuthURL())
	if got := r.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge %q, want %q", got, want)
	}
	if !strings.HasSuffix(h.AuthURL(), "/token") || !strings.HasPrefix(h.AuthURL(), "http://127.0.0.1:") {
		t.Fatalf("AuthURL %q", h.AuthURL())
	}

	// The manifest's challenge names the scope.
	r = do(t, nil, http.MethodGet, h.manifestURL("library/nginx", "latest"), "")
	wantStatus(t, r, http.StatusUnauthorized)
	if got := r.Header.Get("WWW-Authenticate"); got != want+`,scope="repository:library/nginx:pull"` {
		t.Fatalf("challenge %q", got)
	}
	if !bytes.Contains(r.body, []byte(`"code":"UNAUTHORIZED"`)) {
		t.Fatalf("body %s", r.body)
	}

	// The raw token response has Docker Hub's fields.
	r = do(t, nil, http.MethodGet, h.AuthURL()+"?service=registry.docker.io&scope=repository:library/nginx:pull", "")
	wantStatus(t, r, http.StatusOK)
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["expires_in"] != 300.0 || raw["token"] == nil || raw["access_token"] != raw["token"] || raw["issued_at"] == nil {
		t.Fatalf("token response %s", r.body)
	}

	tok := "Bearer " + raw["token"].(string)
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", tok), http.StatusOK)
	r = do(t, nil, http.MethodGet, h.manifestURL("library/nginx", "latest"), tok)
	wantStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.body, img.Manifest) || r.Header.Get("Docker-Content-Digest") != img.Digest {
		t.Fatalf("manifest %s, digest %s", r.body, r.Header.Get("Docker-Content-Digest"))
	}
	r = do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/nginx/blobs/"+img.Layers[0], tok)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != "library/nginx:latest" {
		t.Fatalf("layer %q", r.body)
	}
	// A made-up token is no token.
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", "Bearer nope"), http.StatusUnauthorized)
	// Wrong service.
	wantStatus(t, do(t, nil, http.MethodGet, h.AuthURL()+"?service=other&scope=repository:library/nginx:pull", ""), http.StatusBadRequest)
}

func TestScope(t *testing.T) {
	h := start(t, Options{})
	a, _ := h.PushImage("library/a", "1")
	if _, err := h.PushImage("library/b", "1"); err != nil {
		t.Fatal(err)
	}
	tok := token(t, h, "", "", pull("library/a"))
	wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/a", "1"), tok), http.StatusOK)
	wantStatus(t, do(t, nil, http.MethodHead, h.RegistryURL()+"/v2/library/a/blobs/"+a.Layers[0], tok), http.StatusOK)
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/a/tags/list", tok), http.StatusOK)

	r := do(t, nil, http.MethodGet, h.manifestURL("library/b", "1"), tok)
	wantStatus(t, r, http.StatusUnauthorized)
	if got := r.Header.Get("WWW-Authenticate"); !strings.HasSuffix(got, `,scope="repository:library/b:pull",error="insufficient_scope"`) {
		t.Fatalf("challenge %q", got)
	}
	// A blob of a, asked for through b, is b's business.
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/b/blobs/"+a.Layers[0], tok), http.StatusUnauthorized)

	// One token for two scopes (repeated parameter).
	both := token(t, h, "", "", pull("library/a"), pull("library/b"))
	wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/b", "1"), both), http.StatusOK)

	// Writes are never granted.
	r = do(t, nil, http.MethodDelete, h.manifestURL("library/a", "1"), both)
	wantStatus(t, r, http.StatusUnauthorized)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `scope="repository:library/a:pull,push"`) {
		t.Fatalf("challenge %q", got)
	}

	// A repository that does not exist: the token carries no access, the registry says 401 (as
	// Docker Hub does), even for a 404-worthy manifest.
	none := token(t, h, "", "", pull("library/missing"))
	wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/missing", "1"), none), http.StatusUnauthorized)
	// An existing repository with a missing tag is a 404.
	wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/a", "nope"), tok), http.StatusNotFound)
}

func TestBasicCredentials(t *testing.T) {
	h := start(t, Options{Limit: 5, AuthenticatedLimit: 2, Users: map[string]string{"alice": "s3cret"}})
	if _, err := h.PushImage("library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	q := "?service=registry.docker.io&scope=" + pull("library/nginx")
	req, _ := http.NewRequest(http.MethodGet, h.AuthURL()+q, nil)
	req.SetBasicAuth("alice", "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}

	tok := token(t, h, "alice", "s3cret", pull("library/nginx"))
	for i, want := range []string{"1;w=21600", "0;w=21600"} {
		r := do(t, nil, http.MethodGet, h.manifestURL("library/nginx", "latest"), tok)
		wantStatus(t, r, http.StatusOK)
		if r.Header.Get("RateLimit-Limit") != "2;w=21600" || r.Header.Get("RateLimit-Remaining") != want ||
			r.Header.Get("Docker-RateLimit-Source") != "alice" {
			t.Fatalf("pull %d: headers %v", i, r.Header)
		}
	}
	r := do(t, nil, http.MethodGet, h.manifestURL("library/nginx", "latest"), tok)
	wantStatus(t, r, http.StatusTooManyRequests)
	if !bytes.Contains(r.body, []byte(`You have reached your pull rate limit as 'alice'`)) {
		t.Fatalf("body %s", r.body)
	}
	// Alice's pulls were not the IP's.
	if got := h.QuotaRemaining("127.0.0.1"); got != 5 {
		t.Fatalf("IP quota %d, want 5", got)
	}
	anon := token(t, h, "", "", pull("library/nginx"))
	wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/nginx", "latest"), anon), http.StatusOK)
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	h := start(t, Options{TokenTTL: 200 * time.Millisecond})
	if _, err := h.PushImage("library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	tok := token(t, h, "", "", pull("library/nginx"))
	wantStatus(t, do(t, nil, http.MethodHead, h.manifestURL("library/nginx", "latest"), tok), http.StatusOK)
	time.Sleep(250 * time.Millisecond)
	r := do(t, nil, http.MethodHead, h.manifestURL("library/nginx", "latest"), tok)
	wantStatus(t, r, http.StatusUnauthorized)
	if got := r.Header.Get("WWW-Authenticate"); !strings.HasSuffix(got, `error="invalid_token"`) {
		t.Fatalf("challenge %q", got)
	}
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", tok), http.StatusUnauthorized)
	wantStatus(t, do(t, nil, http.MethodHead, h.manifestURL("library/nginx", "latest"), token(t, h, "", "", pull("library/nginx"))), http.StatusOK)
}

func TestQuotaCountsGetNotHead(t *testing.T) {
	h := start(t, Options{Limit: 3})
	img, _ := h.PushImage("library/nginx", "latest")
	tok := token(t, h, "", "", pull("library/nginx"))
	u := h.manifestURL("library/nginx", "latest")
	check := func(r response, remaining string) {
		t.Helper()
		if r.Header.Get("RateLimit-Limit") != "3;w=21600" || r.Header.Get("RateLimit-Remaining") != remaining+";w=21600" ||
			r.Header.Get("Docker-RateLimit-Source") != "127.0.0.1" {
			t.Fatalf("%s: headers limit %q remaining %q source %q, want remaining %s", r.Request.Method,
				r.Header.Get("RateLimit-Limit"), r.Header.Get("RateLimit-Remaining"), r.Header.Get("Docker-RateLimit-Source"), remaining)
		}
	}
	for range 3 {
		r := do(t, nil, http.MethodHead, u, tok)
		wantStatus(t, r, http.StatusOK)
		check(r, "3")
	}
	// Blobs and tag lists are free and carry no rate-limit headers.
	r := do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/nginx/blobs/"+img.Layers[0], tok)
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("RateLimit-Limit") != "" {
		t.Fatal("rate-limit header on a blob")
	}
	for _, want := range []string{"2", "1", "0"} {
		r := do(t, nil, http.MethodGet, u, tok)
		wantStatus(t, r, http.StatusOK)
		check(r, want)
	}
	r = do(t, nil, http.MethodGet, "http://"+h.Host()+"/v2/library/nginx/manifests/"+img.Digest, tok)
	wantStatus(t, r, http.StatusTooManyRequests)
	check(r, "0")
	want := `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"}]}`
	if string(r.body) != want {
		t.Fatalf("429 body %s", r.body)
	}
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || ra < 21590 || ra > 21600 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// HEAD still passes at zero (by default), and blobs too.
	r = do(t, nil, http.MethodHead, u, tok)
	wantStatus(t, r, http.StatusOK)
	check(r, "0")
	wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/nginx/blobs/"+img.Layers[0], tok), http.StatusOK)
	c := h.Counts()
	if c.ManifestGet != 4 || c.ManifestHead != 4 || c.Pulls != 3 || c.Rejected429 != 1 || c.BlobGet != 2 {
		t.Fatalf("counts %+v", c)
	}
}

func TestHeadLimitedAtZero(t *testing.T) {
	h := start(t, Options{Limit: 1, HeadLimitedAtZero: true})
	tok := token(t, h, "", "", pull("ratelimitpreview/test"))
	u := h.manifestURL("ratelimitpreview/test", "latest")
	wantStatus(t, do(t, nil, http.MethodHead, u, tok), http.StatusOK)
	wantStatus(t, do(t, nil, http.MethodGet, u, tok), http.StatusOK)
	r := do(t, nil, http.MethodHead, u, tok)
	wantStatus(t, r, http.StatusTooManyRequests)
	if r.Header.Get("Retry-After") == "" || r.Header.Get("RateLimit-Remaining") != "0;w=21600" {
		t.Fatalf("headers %v", r.Header)
	}
}

func TestWindowSlides(t *testing.T) {
	t.Parallel()
	// A 2 s window and pulls a second apart: every step below has about a second of slack for a
	// busy machine, measured from when the previous request returned.
	h := start(t, Options{Limit: 2, Window: 2 * time.Second})
	tok := token(t, h, "", "", pull("ratelimitpreview/test"))
	u := h.manifestURL("ratelimitpreview/test", "latest")
	wantStatus(t, do(t, nil, http.MethodGet, u, tok), http.StatusOK)
	first := time.Now() // the first pull was counted before this
	time.Sleep(time.Second)
	r := do(t, nil, http.MethodGet, u, tok)
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("RateLimit-Limit") != "2;w=2" || r.Header.Get("RateLimit-Remaining") != "0;w=2" {
		t.Fatalf("headers %v", r.Header)
	}
	r = do(t, nil, http.MethodGet, u, tok)
	wantStatus(t, r, http.StatusTooManyRequests)
	if r.Header.Get("Retry-After") != "1" { // the first pull leaves the window in about a second
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// The first pull leaves the window two seconds after it was made; the second is still in it.
	time.Sleep(time.Until(first.Add(2*time.Second + 50*time.Millisecond)))
	r = do(t, nil, http.MethodGet, u, tok)
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("RateLimit-Remaining") != "0;w=2" {
		t.Fatalf("remaining %q", r.Header.Get("RateLimit-Remaining"))
	}
	// After a whole window without pulls, the quota is full.
	time.Sleep(2*time.Second + 100*time.Millisecond)
	r = do(t, nil, http.MethodHead, u, tok)
	if r.Header.Get("RateLimit-Remaining") != "2;w=2" {
		t.Fatalf("remaining %q", r.Header.Get("RateLimit-Remaining"))
	}
}

func TestNoLimitNoHeaders(t *testing.T) {
	h := start(t, Options{})
	tok := token(t, h, "", "", pull("ratelimitpreview/test"))
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		r := do(t, nil, m, h.manifestURL("ratelimitpreview/test", "latest"), tok)
		wantStatus(t, r, http.StatusOK)
		for _, k := range []string{"RateLimit-Limit", "RateLimit-Remaining", "Docker-RateLimit-Source"} {
			if v := r.Header.Get(k); v != "" {
				t.Fatalf("%s: %s: %s", m, k, v)
			}
		}
	}
	if c := h.Counts(); c.Pulls != 1 || h.QuotaRemaining("127.0.0.1") != -1 {
		t.Fatalf("pulls %d, remaining %d", c.Pulls, h.QuotaRemaining("127.0.0.1"))
	}
}

// TestRateLimitPreview follows docs.docker.com/docker-hub/download-rate-limit/ word for word.
func TestRateLimitPreview(t *testing.T) {
	h := start(t, Options{Limit: 100})
	r := do(t, nil, http.MethodGet, h.AuthURL()+"?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull", "")
	var tr struct{ Token string }
	json.Unmarshal(r.body, &tr)
	for range 2 {
		r = do(t, nil, http.MethodHead, h.manifestURL("ratelimitpreview/test", "latest"), "Bearer "+tr.Token)
		wantStatus(t, r, http.StatusOK)
		if r.Header.Get("RateLimit-Limit") != "100;w=21600" || r.Header.Get("RateLimit-Remaining") != "100;w=21600" ||
			r.Header.Get("Docker-RateLimit-Source") != "127.0.0.1" {
			t.Fatalf("headers %v", r.Header)
		}
	}
}

func TestSetQuota(t *testing.T) {
	h := start(t, Options{Limit: 10, AuthenticatedLimit: 20, Users: map[string]string{"bob": "pw"}})
	tok := token(t, h, "", "", pull("ratelimitpreview/test"))
	u := h.manifestURL("ratelimitpreview/test", "latest")
	h.SetQuotaRemaining("127.0.0.1", 1)
	r := do(t, nil, http.MethodGet, u, tok)
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("RateLimit-Remaining") != "0;w=21600" {
		t.Fatalf("remaining %q", r.Header.Get("RateLimit-Remaining"))
	}
	wantStatus(t, do(t, nil, http.MethodGet, u, tok), http.StatusTooManyRequests)
	h.SetQuotaRemaining("127.0.0.1", 7)
	if got := h.QuotaRemaining("127.0.0.1"); got != 7 {
		t.Fatalf("remaining %d", got)
	}
	h.ExhaustQuota()
	if h.QuotaRemaining("127.0.0.1") != 0 || h.QuotaRemaining("bob") != 0 {
		t.Fatalf("after ExhaustQuota: ip %d, bob %d", h.QuotaRemaining("127.0.0.1"), h.QuotaRemaining("bob"))
	}
	r = do(t, nil, http.MethodGet, u, token(t, h, "bob", "pw", pull("ratelimitpreview/test")))
	wantStatus(t, r, http.StatusTooManyRequests)
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 21590 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
}

func TestSourceIP(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:5000":                    "127.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443":        "2001:db8:1:2::",
		"[::ffff:192.0.2.7]:80":             "192.0.2.7",
		"[2001:db8:1:2:ffff:ffff:ffff:1]:1": "2001:db8:1:2::",
	} {
		if got := sourceIP(&http.Request{RemoteAddr: addr}); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestFaults(t *testing.T) {
	h := start(t, Options{})
	layer := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	img, err := h.PushImage("library/nginx", "latest", layer)
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, h, "", "", pull("library/nginx"))
	blobURL := h.RegistryURL() + "/v2/library/nginx/blobs/" + img.Layers[0]
	manURL := h.manifestURL("library/nginx", "latest")
	// A fresh connection per request: Go's transport retries an idempotent request once when a
	// reused connection closes without an answer, which would hide Down.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	t.Run("Down", func(t *testing.T) {
		h.SetFault(Fault{Kind: Down, On: Manifests})
		defer h.SetFault()
		if _, err := send(fresh, http.MethodGet, manURL, tok); err == nil {
			t.Fatal("manifest GET succeeded while down")
		}
		wantStatus(t, do(t, fresh, http.MethodGet, blobURL, tok), http.StatusOK) // blobs unaffected
		h.SetFault(Fault{Kind: Down, On: Tokens})
		if _, err := send(fresh, http.MethodGet, h.AuthURL()+"?scope="+pull("library/nginx"), ""); err == nil {
			t.Fatal("token GET succeeded while down")
		}
	})
	t.Run("Status5xx", func(t *testing.T) {
		h.SetFault(Fault{Kind: Status5xx})
		defer h.SetFault()
		r := do(t, nil, http.MethodGet, manURL, tok)
		wantStatus(t, r, http.StatusServiceUnavailable)
		if !bytes.Contains(r.body, []byte("UNAVAILABLE")) {
			t.Fatalf("body %s", r.body)
		}
		wantStatus(t, do(t, nil, http.MethodGet, h.AuthURL(), ""), http.StatusServiceUnavailable)
		h.SetFault(Fault{Kind: Status5xx, Status: http.StatusTooManyRequests, On: Blobs})
		r = do(t, nil, http.MethodGet, blobURL, tok)
		wantStatus(t, r, http.StatusTooManyRequests)
		if len(r.body) != 0 {
			t.Fatalf("abuse 429 body %q", r.body)
		}
	})
	t.Run("Token429", func(t *testing.T) {
		h.SetFault(Fault{Kind: Token429})
		defer h.SetFault()
		wantStatus(t, do(t, nil, http.MethodGet, h.AuthURL()+"?scope="+pull("library/nginx"), ""), http.StatusTooManyRequests)
		wantStatus(t, do(t, nil, http.MethodGet, manURL, tok), http.StatusOK) // the registry is fine
	})
	t.Run("Slow", func(t *testing.T) {
		h.SetFault(Fault{Kind: Slow, Delay: 200 * time.Millisecond, On: Manifests})
		defer h.SetFault()
		t0 := time.Now()
		wantStatus(t, do(t, nil, http.MethodHead, manURL, tok), http.StatusOK)
		if d := time.Since(t0); d < 200*time.Millisecond || d > 30*time.Second { // the upper bound: a hang
			t.Fatalf("took %v", d)
		}
		// A client that gives up sees a timeout.
		c := &http.Client{Timeout: 50 * time.Millisecond}
		if _, err := send(c, http.MethodHead, manURL, tok); err == nil {
			t.Fatal("no timeout")
		}
	})
	t.Run("Stall", func(t *testing.T) {
		// The stall comes in the middle of the body: the client has the headers and the first
		// half while the emulator holds the rest (for a minute, cut short by the client leaving).
		// Bytes are counted before they are sent, so the count says where the sender is.
		h.SetFault(Fault{Kind: Stall, Delay: time.Minute, On: Blobs})
		before := h.Counts().BlobBytes
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang bound
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobURL, nil)
		req.Header.Set("Authorization", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		first := make([]byte, len(layer)/2)
		if _, err := io.ReadFull(resp.Body, first); err != nil || !bytes.Equal(first, layer[:len(first)]) {
			t.Fatalf("first half: %v", err)
		}
		if sent := h.Counts().BlobBytes - before; sent != int64(len(first)) {
			t.Errorf("the emulator has sent %d bytes while the client holds the first half, want %d (stalled there)", sent, len(first))
		}
		cancel()
		resp.Body.Close()

		// A short stall delays the rest, which then arrives whole.
		h.SetFault(Fault{Kind: Stall, Delay: 300 * time.Millisecond, On: Blobs})
		defer h.SetFault()
		t0 := time.Now()
		r := do(t, nil, http.MethodGet, blobURL, tok)
		if r.err != nil || !bytes.Equal(r.body, layer) {
			t.Fatalf("body after a short stall: %d bytes, %v", len(r.body), r.err)
		}
		if d := time.Since(t0); d < 300*time.Millisecond {
			t.Fatalf("no stall: %v", d)
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		h.SetFault(Fault{Kind: Truncated, On: Blobs})
		defer h.SetFault()
		before := h.Counts().BlobBytes
		r := do(t, nil, http.MethodGet, blobURL, tok)
		wantStatus(t, r, http.StatusOK)
		if r.ContentLength != int64(len(layer)) || len(r.body) != len(layer)/2 || !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Fatalf("Content-Length %d, got %d bytes, err %v", r.ContentLength, len(r.body), r.err)
		}
		if got := h.Counts().BlobBytes - before; got != int64(len(layer)/2) {
			t.Fatalf("BlobBytes %d", got)
		}
		h.SetFault(Fault{Kind: Truncated, After: 10, On: Manifests})
		r = do(t, nil, http.MethodGet, manURL, tok)
		if len(r.body) != 10 || r.err == nil {
			t.Fatalf("manifest: %d bytes, err %v", len(r.body), r.err)
		}
	})
	t.Run("Corrupt", func(t *testing.T) {
		h.SetFault(Fault{Kind: Corrupt, On: Blobs})
		defer h.SetFault()
		r := do(t, nil, http.MethodGet, blobURL, tok)
		wantStatus(t, r, http.StatusOK)
		if r.err != nil || len(r.body) != len(layer) || digestOf(r.body) == img.Layers[0] {
			t.Fatalf("err %v, %d bytes, digest %s", r.err, len(r.body), digestOf(r.body))
		}
		if n := countDiff(r.body, layer); n != 1 {
			t.Fatalf("%d bytes differ", n)
		}
		// Range requests are corrupted where they cover the byte.
		req, _ := http.NewRequest(http.MethodGet, blobURL, nil)
		req.Header.Set("Authorization", tok)
		req.Header.Set("Range", "bytes=0-99")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || countDiff(b, layer[:100]) != 1 {
			t.Fatalf("range: %d, %d bytes differ", resp.StatusCode, countDiff(b, layer[:100]))
		}
	})
	t.Run("TimesAndRepo", func(t *testing.T) {
		other, _ := h.PushImage("library/other", "1")
		tok2 := token(t, h, "", "", pull("library/nginx"), pull("library/other"))
		h.SetFault(Fault{Kind: Status5xx, Times: 2, Repo: "library/nginx"})
		defer h.SetFault()
		wantStatus(t, do(t, nil, http.MethodGet, h.manifestURL("library/other", "1"), tok2), http.StatusOK)
		wantStatus(t, do(t, nil, http.MethodGet, manURL, tok2), http.StatusServiceUnavailable)
		wantStatus(t, do(t, nil, http.MethodGet, manURL, tok2), http.StatusServiceUnavailable)
		wantStatus(t, do(t, nil, http.MethodGet, manURL, tok2), http.StatusOK)
		wantStatus(t, do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/other/blobs/"+other.Layers[0], tok2), http.StatusOK)
	})
	t.Run("Concurrent", func(t *testing.T) {
		// SetFault while requests run: the race detector's business.
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 10 {
					if (i+j)%3 == 0 {
						h.SetFault(Fault{Kind: Corrupt, On: Blobs, Times: 1})
					}
					send(nil, http.MethodGet, blobURL, tok)
				}
			}()
		}
		wg.Wait()
		h.SetFault()
	})
}

func countDiff(a, b []byte) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n + max(len(a), len(b)) - min(len(a), len(b))
}

func TestThrottle(t *testing.T) {
	h := start(t, Options{})
	layer := bytes.Repeat([]byte{7}, 1<<20)
	img, _ := h.PushImage("library/big", "1", layer)
	tok := token(t, h, "", "", pull("library/big"))
	u := h.RegistryURL() + "/v2/library/big/blobs/" + img.Layers[0]
	// A hang bound: every request below takes far less.
	c := &http.Client{Timeout: 30 * time.Second}
	wantStatus(t, do(t, c, http.MethodGet, u, tok), http.StatusOK) // warm up the connection
	h.SetThrottle(4 << 20)

	// The throttle holds a body back: 1 MiB at 4 MiB/s takes at least 250 ms. (How close to 250
	// ms it comes depends on the machine's load: that is bench/'s business.)
	t0 := time.Now()
	r := do(t, c, http.MethodGet, u, tok)
	d := time.Since(t0)
	if r.err != nil || len(r.body) != len(layer) {
		t.Fatalf("%d bytes, %v", len(r.body), r.err)
	}
	if d < 240*time.Millisecond {
		t.Fatalf("1 MiB at 4 MiB/s took %v, want at least 250ms", d)
	}

	// Two at once share the link: 2 x 512 KiB take at least 250 ms, not 125 ms.
	half := bytes.Repeat([]byte{9}, 512<<10)
	img2, _ := h.PushImage("library/big", "2", half)
	u2 := h.RegistryURL() + "/v2/library/big/blobs/" + img2.Layers[0]
	var wg sync.WaitGroup
	t0 = time.Now()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := send(c, http.MethodGet, u2, tok)
			if err != nil || r.err != nil || len(r.body) != len(half) {
				t.Errorf("%v %v", err, r.err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(t0); d < 240*time.Millisecond {
		t.Fatalf("2 x 512 KiB at 4 MiB/s took %v, want at least 250ms", d)
	}

	// Manifests are not throttled; 0 lifts the limit. At 1 byte/s, a throttled manifest or the
	// 1 MiB blob would take minutes: the client's timeout would end them.
	h.SetThrottle(1)
	if r, err := send(c, http.MethodGet, h.manifestURL("library/big", "1"), tok); err != nil || r.err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("manifest GET with the link at 1 byte/s: %v %v", err, r.err)
	}
	h.SetThrottle(0)
	if r, err := send(c, http.MethodGet, u, tok); err != nil || r.err != nil || len(r.body) != len(layer) {
		t.Fatalf("blob GET after SetThrottle(0): %v %v", err, r.err)
	}
}

func TestCloseCutsRequests(t *testing.T) {
	h, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, h, "", "", pull("ratelimitpreview/test"))
	h.SetFault(Fault{Kind: Slow, Delay: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := send(nil, http.MethodGet, h.manifestURL("ratelimitpreview/test", "latest"), tok)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	h.Close()
	if d := time.Since(t0); d > 20*time.Second { // against the fault's minute
		t.Fatalf("Close took %v", d)
	}
	if err := <-done; err == nil {
		t.Fatal("request survived Close")
	}
	if _, err := os.Stat(h.dir); !os.IsNotExist(err) {
		t.Fatalf("data left behind: %v", err)
	}
}

func TestCounts(t *testing.T) {
	h := start(t, Options{})
	img, _ := h.PushImage("library/nginx", "latest", []byte("hello"))
	if c := h.Counts(); !reflect.DeepEqual(c, Counts{Repos: map[string]RepoCounts{}}) {
		t.Fatalf("seeding was counted: %+v", c)
	}
	base := h.RegistryURL() + "/v2/library/nginx/"
	do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", "") // 401
	tok := token(t, h, "", "", pull("library/nginx"))
	do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/", tok)
	do(t, nil, http.MethodGet, base+"manifests/latest", tok)
	do(t, nil, http.MethodHead, base+"manifests/latest", tok)
	do(t, nil, http.MethodHead, base+"manifests/latest", tok)
	do(t, nil, http.MethodGet, base+"blobs/"+img.Layers[0], tok)
	do(t, nil, http.MethodHead, base+"blobs/"+img.Config, tok)
	do(t, nil, http.MethodGet, base+"tags/list", tok)
	do(t, nil, http.MethodGet, base+"referrers/"+img.Digest, tok)
	c := h.Counts()
	want := Counts{ManifestGet: 1, ManifestHead: 2, BlobGet: 1, BlobHead: 1, TagList: 1, Base: 1, Other: 1,
		Token: 1, Pulls: 1, Unauthorized: 1, BlobBytes: 5}
	got := c
	got.Repos = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("counts\n got %+v\nwant %+v", got, want)
	}
	if rc := c.Repos["library/nginx"]; rc != (RepoCounts{ManifestGet: 1, ManifestHead: 2, BlobGet: 1, BlobHead: 1, TagList: 1, Other: 1}) {
		t.Fatalf("repo counts %+v", rc)
	}
	h.ResetCounts()
	if c := h.Counts(); c.ManifestGet != 0 || len(c.Repos) != 0 {
		t.Fatalf("after reset %+v", c)
	}
}

func TestPushIndexAndTags(t *testing.T) {
	h := start(t, Options{Limit: 10})
	idx, err := h.PushIndex("library/multi", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Children) != 2 || idx.Children[1].Platform != "linux/arm64/v8" {
		t.Fatalf("index %+v", idx)
	}
	tok := token(t, h, "", "", pull("library/multi"))
	r := do(t, nil, http.MethodGet, h.manifestURL("library/multi", "1"), tok)
	wantStatus(t, r, http.StatusOK)
	var index struct {
		Manifests []struct {
			Digest   string
			Platform struct{ OS, Architecture, Variant string }
		}
	}
	json.Unmarshal(r.body, &index)
	if r.Header.Get("Content-Type") != idx.MediaType || len(index.Manifests) != 2 ||
		index.Manifests[1].Platform.Architecture != "arm64" || index.Manifests[1].Platform.Variant != "v8" {
		t.Fatalf("index %s", r.body)
	}
	// A multi-arch pull is one pull per manifest fetched.
	r = do(t, nil, http.MethodGet, h.manifestURL("library/multi", index.Manifests[0].Digest), tok)
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("RateLimit-Remaining") != "8;w=21600" {
		t.Fatalf("remaining %q", r.Header.Get("RateLimit-Remaining"))
	}

	// Move the tag, then drop it.
	img, _ := h.PushImage("library/multi", "2")
	if err := h.SetTag("library/multi", "1", img.Digest); err != nil {
		t.Fatal(err)
	}
	r = do(t, nil, http.MethodHead, h.manifestURL("library/multi", "1"), tok)
	if r.Header.Get("Docker-Content-Digest") != img.Digest {
		t.Fatalf("tag 1 is %s, want %s", r.Header.Get("Docker-Content-Digest"), img.Digest)
	}
	if err := h.DeleteTag("library/multi", "1"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, do(t, nil, http.MethodHead, h.manifestURL("library/multi", "1"), tok), http.StatusNotFound)
	r = do(t, nil, http.MethodGet, h.RegistryURL()+"/v2/library/multi/tags/list", tok)
	if !bytes.Contains(r.body, []byte(`"2"`)) || bytes.Contains(r.body, []byte(`"1"`)) {
		t.Fatalf("tags %s", r.body)
	}
	d, err := h.PushManifest("library/multi", "docker", "application/vnd.docker.distribution.manifest.v2+json",
		bytes.ReplaceAll(img.Manifest, []byte("application/vnd.oci.image.manifest.v1+json"), []byte("application/vnd.docker.distribution.manifest.v2+json")))
	if err != nil || d == img.Digest {
		t.Fatalf("PushManifest: %s %v", d, err)
	}
}

func TestRedirectBlobs(t *testing.T) {
	h := start(t, Options{RedirectBlobs: true})
	img, _ := h.PushImage("library/nginx", "latest", []byte("layer bytes"))
	tok := token(t, h, "", "", pull("library/nginx"))
	u := h.RegistryURL() + "/v2/library/nginx/blobs/" + img.Layers[0]

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r := do(t, noFollow, http.MethodGet, u, tok)
	wantStatus(t, r, http.StatusTemporaryRedirect)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, h.CDNURL()+"/") {
		t.Fatalf("Location %q", loc)
	}
	// The CDN needs no token, and checks its signature.
	r = do(t, nil, http.MethodGet, loc, "")
	if r.StatusCode != http.StatusOK || string(r.body) != "layer bytes" {
		t.Fatalf("CDN: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, do(t, nil, http.MethodGet, strings.Replace(loc, "sig=", "sig=0", 1), ""), http.StatusForbidden)
	// A client that follows redirects just gets the blob; HEAD is answered in place.
	r = do(t, nil, http.MethodGet, u, tok)
	if r.StatusCode != http.StatusOK || string(r.body) != "layer bytes" {
		t.Fatalf("followed: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, do(t, noFollow, http.MethodHead, u, tok), http.StatusOK)
	// A missing blob is a 404 from the registry, not a redirect.
	wantStatus(t, do(t, noFollow, http.MethodGet, h.RegistryURL()+"/v2/library/nginx/blobs/"+digestOf([]byte("x")), tok), http.StatusNotFound)
	// Body faults act at the CDN.
	h.SetFault(Fault{Kind: Corrupt, On: Blobs})
	r = do(t, nil, http.MethodGet, u, tok)
	if countDiff(r.body, []byte("layer bytes")) != 1 {
		t.Fatalf("corrupt via CDN: %q", r.body)
	}
	c := h.Counts()
	if c.BlobGet != 4 || c.CDNGet != 4 || c.BlobHead != 1 || c.BlobBytes != 3*11 {
		t.Fatalf("counts %+v", c)
	}
}

// TestCrane pulls through the emulator with a real client, which does the token flow itself.
func TestCrane(t *testing.T) {
	t.Parallel()
	crane, err := exec.LookPath("crane")
	if err != nil {
		crane = "../../.tools/bin/crane"
		if _, err := os.Stat(crane); err != nil {
			t.Skip("no crane")
		}
	}
	h := start(t, Options{Limit: 5, RealmOnRegistry: true})
	idx, err := h.PushIndex("library/nginx", "1.27")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, crane, args...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("crane %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ref := h.Host() + "/library/nginx:1.27"
	if got := run("digest", ref); got != idx.Digest {
		t.Fatalf("crane digest %s, want %s", got, idx.Digest)
	}
	if c := h.Counts(); c.Pulls != 0 || c.ManifestHead == 0 {
		t.Fatalf("crane digest: %+v", c)
	}
	run("pull", "--platform", "linux/arm64/v8", ref, t.TempDir()+"/img.tar")
	c := h.Counts()
	if c.Pulls != 2 || h.QuotaRemaining("127.0.0.1") != 3 || c.BlobGet < 2 {
		t.Fatalf("crane pull: pulls %d, remaining %d, %+v", c.Pulls, h.QuotaRemaining("127.0.0.1"), c)
	}
	// (At quota 0 crane retries the 429 with a backoff of seconds: not tested here.)
}
