package admin_test

// The admin API over real HTTP against a real berth: server.Run in process (authentication on, a
// SQLite store, the filesystem blob store) with a pull-through rule in front of the Docker Hub
// emulator, whose request counts prove what revalidation and eviction did upstream.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/server"
)

// berth is a berth served in process.
type berth struct {
	url      string
	data     string
	cfg      config.Config
	password string // admin's
	hub      *hubemu.Hub
}

// keepOne is a lifecycle policy that keeps the most recently pushed image of each repository.
const keepOne = `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}`

// startBerth serves a new data directory with authentication on, a docker-hub rule in front of
// a hub emulator (revalidating tags once a day: a pull within the day never asks the upstream),
// and keepOne on team/*.
func startBerth(t *testing.T, dev bool) *berth {
	t.Helper()
	hub, err := hubemu.Start(hubemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "berth.yaml")
	yaml := fmt.Sprintf(`addr: %s
data: %s
dev: %t
shutdown:
  drain: 0s
proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: ttl:24h
lifecycle:
  - repositories: "team/*"
    policy: '%s'
`, addr, filepath.Join(dir, "data"), dev, hub.RegistryURL(), keepOne)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- server.Run(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server.Run: %v", err)
		}
	})
	b := &berth{url: "http://" + addr, data: cfg.Data, cfg: cfg, hub: hub}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(b.url + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server.Run: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("berth did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !dev {
		p, err := os.ReadFile(filepath.Join(cfg.Data, server.AdminPasswordFile))
		if err != nil {
			t.Fatal(err)
		}
		b.password = strings.TrimSpace(string(p))
	}
	return b
}

// answer is an HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

// errorCode is the first error code of a JSON error body.
func (a answer) errorCode() string {
	var doc struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal(a.body, &doc) != nil || len(doc.Errors) == 0 {
		return ""
	}
	return doc.Errors[0].Code
}

// call sends a request as user (none when ""), with body as application/json unless it is nil.
func (b *berth) call(t *testing.T, method, path, user, password string, body any) answer {
	t.Helper()
	var rd io.Reader
	var ct string
	switch v := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(v), "application/json"
	default:
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd, ct = bytes.NewReader(data), "application/json"
	}
	return b.send(t, method, path, user, password, ct, rd)
}

func (b *berth) send(t *testing.T, method, path, user, password, contentType string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, b.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, data}
}

// asAdmin calls as admin and wants status.
func (b *berth) asAdmin(t *testing.T, method, path string, body any, status int) answer {
	t.Helper()
	a := b.call(t, method, path, "admin", b.password, body)
	if a.status != status {
		t.Fatalf("%s %s: %s, want %d", method, path, a, status)
	}
	return a
}

func decodeJSON[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	return v
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// push pushes an image of one layer (content) to repo:tag as user and returns its digest.
func (b *berth) push(t *testing.T, user, password, repo, tag, content string) string {
	t.Helper()
	layer := []byte(content)
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	for _, blob := range [][]byte{layer, cfgBlob} {
		a := b.send(t, "POST", "/v2/"+repo+"/blobs/uploads/?digest="+sha(blob), user, password, "application/octet-stream", bytes.NewReader(blob))
		if a.status != http.StatusCreated {
			t.Fatalf("push blob to %s: %s", repo, a)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		sha(cfgBlob), len(cfgBlob), sha(layer), len(layer))
	a := b.send(t, "PUT", "/v2/"+repo+"/manifests/"+tag, user, password, "application/vnd.oci.image.manifest.v1+json", strings.NewReader(m))
	if a.status != http.StatusCreated {
		t.Fatalf("push manifest %s:%s: %s", repo, tag, a)
	}
	return sha([]byte(m))
}

// manifest GETs repo:ref as user and returns the answer.
func (b *berth) manifest(t *testing.T, user, password, repo, ref string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", b.url+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, data}
}

// eventually polls check for up to 15 s (grant changes reach a running berth within seconds).
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !check(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15 s: %s", what)
		}
	}
}

type created struct {
	Account  admin.Account `json:"account"`
	Password string        `json:"password"`
	Secret   string        `json:"secret"`
}

// every endpoint, with a body that would do something.
var endpoints = []struct {
	method, path string
	body         any
}{
	{"GET", "/berth/v1/accounts", nil},
	{"POST", "/berth/v1/accounts", map[string]any{"name": "x1"}},
	{"GET", "/berth/v1/accounts/admin", nil},
	{"PATCH", "/berth/v1/accounts/admin", map[string]any{"groups": []string{"g"}}},
	{"DELETE", "/berth/v1/accounts/admin", nil},
	{"PUT", "/berth/v1/accounts/admin/password", map[string]any{}},
	{"GET", "/berth/v1/robots", nil},
	{"POST", "/berth/v1/robots", map[string]any{"name": "r1"}},
	{"GET", "/berth/v1/grants", nil},
	{"POST", "/berth/v1/grants", map[string]any{"subject": "anonymous", "pattern": "*", "actions": []string{"admin"}}},
	{"DELETE", "/berth/v1/grants?subject=user:admin&pattern=*", nil},
	{"POST", "/berth/v1/cache/revalidate", map[string]any{"repository": "docker-hub/library/a", "tag": "1"}},
	{"POST", "/berth/v1/cache/evict", map[string]any{"repository": "docker-hub/library/a", "reference": "1"}},
	{"GET", "/berth/v1/lifecycle/preview", nil},
}

// TestAccounts: users and robots through the API, as admin; a robot's secret is answered once
// and never listed; what the API creates logs in on /v2/.
func TestAccounts(t *testing.T) {
	b := startBerth(t, false)

	// A user with a password of their own, and one with a generated password, answered once.
	a := b.asAdmin(t, "POST", "/berth/v1/accounts", map[string]any{"name": "alice", "password": "alice-password-1", "groups": []string{"dev"}}, http.StatusCreated)
	c := decodeJSON[created](t, a)
	if c.Account.Name != "alice" || c.Account.Kind != "user" || !slices.Equal(c.Account.Groups, []string{"dev"}) || c.Password != "" || c.Account.Created.IsZero() {
		t.Errorf("created alice: %s", a.body)
	}
	if a.header.Get("Location") != "/berth/v1/accounts/alice" {
		t.Errorf("Location %q", a.header.Get("Location"))
	}
	a = b.asAdmin(t, "POST", "/berth/v1/accounts", map[string]any{"name": "bob"}, http.StatusCreated)
	bob := decodeJSON[created](t, a)
	if len(bob.Password) < 12 {
		t.Fatalf("bob's generated password: %s", a.body)
	}
	for user, pw := range map[string]string{"alice": "alice-password-1", "bob": bob.Password} {
		if got := b.call(t, "GET", "/v2/", user, pw, nil); got.status != http.StatusOK {
			t.Errorf("%s logs in on /v2/: %s", user, got)
		}
	}
	if a := b.call(t, "POST", "/berth/v1/accounts", "admin", b.password, map[string]any{"name": "alice", "password": "another-password-2"}); a.status != http.StatusConflict || a.errorCode() != "EXISTS" {
		t.Errorf("alice again: %s", a)
	}
	for _, bad := range []map[string]any{
		{"name": "Not A Name"},
		{"name": "carol", "password": "short"},
		{"name": "carol", "groups": []string{"bad group"}},
	} {
		if a := b.call(t, "POST", "/berth/v1/accounts", "admin", b.password, bad); a.status != http.StatusBadRequest || a.errorCode() != "INVALID" {
			t.Errorf("POST %v: %s, want 400 INVALID", bad, a)
		}
	}

	// A robot: its secret once.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	a = b.asAdmin(t, "POST", "/berth/v1/robots", map[string]any{"name": "ci", "description": "the CI", "expires": exp}, http.StatusCreated)
	robot := decodeJSON[created](t, a)
	if !strings.HasPrefix(robot.Secret, "berth_rbt_") || robot.Account.Kind != "robot" || !robot.Account.Expires.Equal(exp) || robot.Account.Description != "the CI" {
		t.Fatalf("created robot: %s", a.body)
	}
	if got := b.call(t, "GET", "/v2/", "ci", robot.Secret, nil); got.status != http.StatusOK {
		t.Errorf("the robot logs in: %s", got)
	}
	for _, path := range []string{"/berth/v1/robots", "/berth/v1/accounts", "/berth/v1/accounts/ci", "/berth/v1/accounts?kind=robot"} {
		a := b.asAdmin(t, "GET", path, nil, http.StatusOK)
		if bytes.Contains(a.body, []byte(robot.Secret)) || bytes.Contains(a.body, []byte(strings.TrimPrefix(robot.Secret, "berth_rbt_"))) ||
			bytes.Contains(a.body, []byte(`"secret"`)) || bytes.Contains(a.body, []byte("argon2")) {
			t.Errorf("GET %s shows the robot's secret or its hash: %s", path, a.body)
		}
	}
	if a := b.call(t, "POST", "/berth/v1/robots", "admin", b.password, map[string]any{"name": "old", "expires": time.Now().Add(-time.Hour)}); a.status != http.StatusBadRequest {
		t.Errorf("a robot expired already: %s", a)
	}

	robots := decodeJSON[struct{ Robots []admin.Account }](t, b.asAdmin(t, "GET", "/berth/v1/robots", nil, http.StatusOK))
	users := decodeJSON[struct{ Accounts []admin.Account }](t, b.asAdmin(t, "GET", "/berth/v1/accounts?kind=user", nil, http.StatusOK))
	names := func(as []admin.Account) (out []string) {
		for _, a := range as {
			out = append(out, a.Name)
		}
		return out
	}
	if got := names(robots.Robots); !slices.Equal(got, []string{"ci"}) {
		t.Errorf("robots %v", got)
	}
	if got := names(users.Accounts); !slices.Equal(got, []string{"admin", "alice", "bob"}) {
		t.Errorf("users %v", got)
	}

	// Groups, password, removal.
	got := decodeJSON[admin.Account](t, b.asAdmin(t, "PATCH", "/berth/v1/accounts/alice", map[string]any{"groups": []string{"ops", "dev"}}, http.StatusOK))
	if !slices.Equal(got.Groups, []string{"ops", "dev"}) {
		t.Errorf("alice's groups: %v", got.Groups)
	}
	b.asAdmin(t, "PUT", "/berth/v1/accounts/alice/password", map[string]any{"password": "alice-password-2"}, http.StatusOK)
	eventually(t, "alice's new password works and the old one does not", func() bool {
		return b.call(t, "GET", "/v2/", "alice", "alice-password-2", nil).status == http.StatusOK &&
			b.call(t, "GET", "/v2/", "alice", "alice-password-1", nil).status == http.StatusUnauthorized
	})
	if a := b.call(t, "PUT", "/berth/v1/accounts/ci/password", "admin", b.password, map[string]any{}); a.status != http.StatusBadRequest {
		t.Errorf("a robot's password: %s", a)
	}
	if a := b.call(t, "DELETE", "/berth/v1/accounts/ci?kind=user", "admin", b.password, nil); a.status != http.StatusBadRequest {
		t.Errorf("removing a robot as a user: %s", a)
	}
	b.asAdmin(t, "DELETE", "/berth/v1/accounts/ci", nil, http.StatusNoContent)
	if a := b.call(t, "GET", "/berth/v1/accounts/ci", "admin", b.password, nil); a.status != http.StatusNotFound || a.errorCode() != "NOT_FOUND" {
		t.Errorf("GET a removed account: %s", a)
	}
	eventually(t, "the removed robot no longer logs in", func() bool {
		return b.call(t, "GET", "/v2/", "ci", robot.Secret, nil).status == http.StatusUnauthorized
	})
}

// TestRefusals: without credentials every endpoint answers 401 with /v2/'s challenge; a user
// without admin 403 naming the grant; a registry token is no admin; bad bodies, methods and
// paths get JSON errors.
func TestRefusals(t *testing.T) {
	b := startBerth(t, false)
	b.asAdmin(t, "POST", "/berth/v1/accounts", map[string]any{"name": "eve", "password": "eve-password-12"}, http.StatusCreated)
	v2 := b.call(t, "GET", "/v2/", "", "", nil)
	for _, e := range endpoints {
		a := b.call(t, e.method, e.path, "", "", e.body)
		if a.status != http.StatusUnauthorized || a.errorCode() != "UNAUTHORIZED" || a.header.Get("WWW-Authenticate") != v2.header.Get("WWW-Authenticate") {
			t.Errorf("%s %s without credentials: %s %v, want 401 UNAUTHORIZED with %q", e.method, e.path, a, a.header, v2.header.Get("WWW-Authenticate"))
		}
		if a := b.call(t, e.method, e.path, "ghost", "wrong-password", e.body); a.status != http.StatusUnauthorized && a.status != http.StatusTooManyRequests {
			t.Errorf("%s %s with a wrong password: %s", e.method, e.path, a)
		}
		a = b.call(t, e.method, e.path, "eve", "eve-password-12", e.body)
		if a.status != http.StatusForbidden || a.errorCode() != "DENIED" || !strings.Contains(string(a.body), "admin on") {
			t.Errorf("%s %s as a user without admin: %s, want 403 DENIED naming the grant", e.method, e.path, a)
		}
	}
	// Guessing passwords on the admin API is throttled as on /v2/ and /token.
	if a := b.call(t, "GET", "/berth/v1/accounts", "ghost", "wrong-password", nil); a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Errorf("after %d wrong passwords: %s, want 429 with Retry-After", len(endpoints), a)
	}
	if a := b.call(t, "GET", "/berth/v1/accounts", "eve", "eve-password-12", nil); !strings.Contains(string(a.body), "user:eve needs a grant of admin on *") {
		t.Errorf("the refusal does not name the grant: %s", a)
	}
	// A registry token of admin's: /v2/'s scopes, not the admin API.
	tok := b.call(t, "GET", "/token?service=berth&scope=repository:team/app:pull", "admin", b.password, nil)
	var tr struct{ Token string }
	if tok.status != http.StatusOK || json.Unmarshal(tok.body, &tr) != nil || tr.Token == "" {
		t.Fatalf("token: %s", tok)
	}
	req, _ := http.NewRequest("GET", b.url+"/berth/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer "+tr.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("admin's registry token on the admin API: %d, want 403", resp.StatusCode)
	}

	// Strict JSON.
	for _, c := range []struct {
		name, body, contentType string
		status                  int
	}{
		{"an unknown field", `{"name":"x2","pasword":"typo-in-the-field"}`, "application/json", 400},
		{"two values", `{"name":"x3"}{"name":"x4"}`, "application/json", 400},
		{"not JSON", `name=x5`, "application/json", 400},
		{"a wrong type", `{"name":5}`, "application/json", 400},
		{"no content type", `{"name":"x6"}`, "", 415},
		{"a form", `{"name":"x7"}`, "application/x-www-form-urlencoded", 415},
		{"text/plain (what a cross-site form may send)", `{"name":"x8"}`, "text/plain", 415},
		{"too long", `{"name":"x9","description":"` + strings.Repeat("a", 70<<10) + `"}`, "application/json", 413},
	} {
		a := b.send(t, "POST", "/berth/v1/accounts", "admin", b.password, c.contentType, strings.NewReader(c.body))
		if a.status != c.status || a.errorCode() == "" || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s, want %d with a JSON error", c.name, a, c.status)
		}
	}
	if a := b.call(t, "GET", "/berth/v1/accounts?kinds=user", "admin", b.password, nil); a.status != http.StatusBadRequest {
		t.Errorf("an unknown query parameter: %s", a)
	}
	if a := b.call(t, "POST", "/berth/v1/grants", "admin", b.password, map[string]any{"subject": "user:eve", "pattern": "team/*", "actions": []string{"pull"}, "extra": 1}); a.status != http.StatusBadRequest || !strings.Contains(string(a.body), "extra") {
		t.Errorf("a grant with an unknown field: %s", a)
	}
	// Methods and paths.
	a := b.call(t, "PUT", "/berth/v1/accounts", "admin", b.password, map[string]any{})
	if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "GET, POST, HEAD" || a.errorCode() != "UNSUPPORTED" {
		t.Errorf("PUT /berth/v1/accounts: %s Allow %q", a, a.header.Get("Allow"))
	}
	if a := b.call(t, "GET", "/berth/v1/cache/evict", "admin", b.password, nil); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "POST" {
		t.Errorf("GET /berth/v1/cache/evict: %s Allow %q", a, a.header.Get("Allow"))
	}
	if a := b.call(t, "GET", "/berth/v1/nothing-here", "admin", b.password, nil); a.status != http.StatusNotFound || a.errorCode() != "NOT_FOUND" {
		t.Errorf("an unknown path: %s", a)
	}
	// berth's other endpoint under /berth/v1/ is still there.
	if a := b.call(t, "GET", "/berth/v1/upstreams", "admin", b.password, nil); a.status != http.StatusOK {
		t.Errorf("GET /berth/v1/upstreams: %s", a)
	}
}

// TestGrants: grants through the API take effect on /v2/, revoking them too; a team's admin
// manages the grants of its pattern and nothing else.
func TestGrants(t *testing.T) {
	b := startBerth(t, false)
	b.asAdmin(t, "POST", "/berth/v1/accounts", map[string]any{"name": "alice", "password": "alice-password-1"}, http.StatusCreated)
	b.asAdmin(t, "POST", "/berth/v1/accounts", map[string]any{"name": "tom", "password": "tom-password-123"}, http.StatusCreated)
	d := b.push(t, "admin", b.password, "team/app", "v1", "one")
	b.push(t, "admin", b.password, "other/app", "v1", "two")

	if a := b.call(t, "POST", "/berth/v1/grants", "admin", b.password, map[string]any{"subject": "user:nobody", "pattern": "team/*", "actions": []string{"pull"}}); a.status != http.StatusNotFound {
		t.Errorf("a grant to an account that does not exist: %s", a)
	}
	for _, bad := range []map[string]any{
		{"subject": "user:alice", "pattern": "team/*", "actions": []string{"fly"}},
		{"subject": "user:alice", "pattern": "team/*", "actions": []string{}},
		{"subject": "robot:alice", "pattern": "team/*", "actions": []string{"pull"}},
		{"subject": "someone", "pattern": "team/*", "actions": []string{"pull"}},
		{"subject": "user:alice", "pattern": "Team/**", "actions": []string{"pull"}},
	} {
		if a := b.call(t, "POST", "/berth/v1/grants", "admin", b.password, bad); a.status != http.StatusBadRequest {
			t.Errorf("POST grant %v: %s, want 400", bad, a)
		}
	}
	g := decodeJSON[admin.Grant](t, b.asAdmin(t, "POST", "/berth/v1/grants", map[string]any{"subject": "user:alice", "pattern": "team/*", "actions": []string{"pull"}}, http.StatusOK))
	if g.Subject != "user:alice" || g.Pattern != "team/*" || !slices.Equal(g.Actions, []string{"pull"}) {
		t.Errorf("grant: %+v", g)
	}
	eventually(t, "alice pulls team/app", func() bool {
		a := b.manifest(t, "alice", "alice-password-1", "team/app", "v1")
		return a.status == http.StatusOK && sha(a.body) == d
	})
	b.asAdmin(t, "DELETE", "/berth/v1/grants?"+url.Values{"subject": {"user:alice"}, "pattern": {"team/*"}}.Encode(), nil, http.StatusNoContent)
	eventually(t, "alice no longer pulls team/app", func() bool {
		return b.manifest(t, "alice", "alice-password-1", "team/app", "v1").status == http.StatusNotFound
	})
	if a := b.call(t, "DELETE", "/berth/v1/grants?"+url.Values{"subject": {"user:alice"}, "pattern": {"team/*"}}.Encode(), "admin", b.password, nil); a.status != http.StatusNotFound {
		t.Errorf("revoking a grant that is gone: %s", a)
	}

	// tom administers team/*: its grants, not other/*'s, not accounts.
	b.asAdmin(t, "POST", "/berth/v1/grants", map[string]any{"subject": "user:tom", "pattern": "team/*", "actions": []string{"admin"}}, http.StatusOK)
	b.asAdmin(t, "POST", "/berth/v1/grants", map[string]any{"subject": "user:alice", "pattern": "other/*", "actions": []string{"pull"}}, http.StatusOK)
	tom := func(method, path string, body any) answer {
		return b.call(t, method, path, "tom", "tom-password-123", body)
	}
	eventually(t, "tom grants on team/*", func() bool {
		return tom("POST", "/berth/v1/grants", map[string]any{"subject": "user:alice", "pattern": "team/*", "actions": []string{"pull", "push"}}).status == http.StatusOK
	})
	if a := tom("POST", "/berth/v1/grants", map[string]any{"subject": "user:alice", "pattern": "other/*", "actions": []string{"push"}}); a.status != http.StatusForbidden || !strings.Contains(string(a.body), "admin on other/*") {
		t.Errorf("tom grants on other/*: %s", a)
	}
	if a := tom("POST", "/berth/v1/grants", map[string]any{"subject": "user:tom", "pattern": "*", "actions": []string{"admin"}}); a.status != http.StatusForbidden {
		t.Errorf("tom makes himself admin of everything: %s", a)
	}
	if a := tom("GET", "/berth/v1/accounts", nil); a.status != http.StatusForbidden {
		t.Errorf("tom lists accounts: %s", a)
	}
	list := decodeJSON[struct{ Grants []admin.Grant }](t, tom("GET", "/berth/v1/grants", nil))
	var seen []string
	for _, g := range list.Grants {
		seen = append(seen, g.Subject+" "+g.Pattern+" "+strings.Join(g.Actions, ","))
	}
	if want := []string{"user:alice team/* pull,push", "user:tom team/* admin"}; !slices.Equal(seen, want) {
		t.Errorf("tom's grant list %v, want %v", seen, want)
	}
	all := decodeJSON[struct{ Grants []admin.Grant }](t, b.asAdmin(t, "GET", "/berth/v1/grants", nil, http.StatusOK))
	if len(all.Grants) != 4 { // admin *, alice other/*, alice team/*, tom team/*
		t.Errorf("admin's grant list: %+v", all.Grants)
	}
	// Revoking some actions leaves the rest.
	b.asAdmin(t, "DELETE", "/berth/v1/grants?"+url.Values{"subject": {"user:alice"}, "pattern": {"team/*"}, "actions": {"push"}}.Encode(), nil, http.StatusNoContent)
	eventually(t, "alice pulls team/app again, and may not push", func() bool {
		return b.manifest(t, "alice", "alice-password-1", "team/app", "v1").status == http.StatusOK
	})
}

// hubCounts is what reached the upstream during fn.
func (b *berth) hubCounts(fn func()) hubemu.Counts {
	before := b.hub.Counts()
	fn()
	after := b.hub.Counts()
	return hubemu.Counts{ManifestGet: after.ManifestGet - before.ManifestGet, ManifestHead: after.ManifestHead - before.ManifestHead,
		BlobGet: after.BlobGet - before.BlobGet}
}

// TestCacheOperations: a forced revalidation asks the upstream whatever the rule's interval, so
// that the next pull serves the tag's new digest; an eviction removes the cached image, so that
// the next pull fetches it again.
func TestCacheOperations(t *testing.T) {
	b := startBerth(t, false)
	v1, err := b.hub.PushImage("library/nginx", "stable", []byte("first layer"))
	if err != nil {
		t.Fatal(err)
	}
	const repo = "docker-hub/library/nginx"
	if a := b.manifest(t, "admin", b.password, repo, "stable"); a.status != http.StatusOK || sha(a.body) != v1.Digest {
		t.Fatalf("first pull: %s", a)
	}
	v2, err := b.hub.PushImage("library/nginx", "stable", []byte("second layer"))
	if err != nil {
		t.Fatal(err)
	}
	// Within the day, berth does not ask: the old digest.
	c := b.hubCounts(func() {
		if a := b.manifest(t, "admin", b.password, repo, "stable"); sha(a.body) != v1.Digest {
			t.Fatalf("pull within the revalidation interval: %s", a)
		}
	})
	if c.ManifestHead+c.ManifestGet != 0 {
		t.Fatalf("a pull within the interval asked the upstream: %+v", c)
	}
	var rv admin.Revalidation
	c = b.hubCounts(func() {
		rv = decodeJSON[admin.Revalidation](t, b.asAdmin(t, "POST", "/berth/v1/cache/revalidate", map[string]any{"repository": repo, "tag": "stable"}, http.StatusOK))
	})
	if c.ManifestHead != 1 || c.ManifestGet != 1 {
		t.Errorf("revalidation asked the upstream %+v, want a HEAD and the new manifest's GET", c)
	}
	if !rv.Changed || rv.Previous.String() != v1.Digest || rv.Digest.String() != v2.Digest {
		t.Errorf("revalidation: %+v, want %s -> %s", rv, v1.Digest, v2.Digest)
	}
	c = b.hubCounts(func() {
		if a := b.manifest(t, "admin", b.password, repo, "stable"); sha(a.body) != v2.Digest {
			t.Errorf("pull after revalidation: %s, want %s", a, v2.Digest)
		}
	})
	if c.ManifestHead+c.ManifestGet != 0 {
		t.Errorf("the pull after revalidation asked the upstream: %+v", c)
	}
	// Unchanged upstream: a HEAD, no GET.
	c = b.hubCounts(func() {
		rv = decodeJSON[admin.Revalidation](t, b.asAdmin(t, "POST", "/berth/v1/cache/revalidate", map[string]any{"repository": repo, "tag": "stable"}, http.StatusOK))
	})
	if rv.Changed || c.ManifestHead != 1 || c.ManifestGet != 0 {
		t.Errorf("revalidating a current tag: %+v, upstream %+v", rv, c)
	}
	for _, bad := range []struct {
		body   map[string]any
		status int
	}{
		{map[string]any{"repository": "team/app", "tag": "v1"}, 400},       // not cached
		{map[string]any{"repository": repo, "tag": "never-pulled"}, 404},   // not in the cache
		{map[string]any{"repository": repo}, 400},                          // no tag
		{map[string]any{"repository": repo, "tag": "sha256:abc"}, 400},     // a digest is no tag
		{map[string]any{"repository": "Docker-Hub/x", "tag": "v1"}, 400},   // not a name
		{map[string]any{"repository": repo, "reference": "stable"}, 400},   // evict's field
		{map[string]any{"repository": repo, "tag": "stable", "x": 1}, 400}, // unknown field
	} {
		if a := b.call(t, "POST", "/berth/v1/cache/revalidate", "admin", b.password, bad.body); a.status != bad.status {
			t.Errorf("revalidate %v: %s, want %d", bad.body, a, bad.status)
		}
	}

	// Eviction: gone from the cache; the next pull asks the upstream for the manifest.
	var ev admin.Eviction
	ev = decodeJSON[admin.Eviction](t, b.asAdmin(t, "POST", "/berth/v1/cache/evict", map[string]any{"repository": repo, "reference": "stable"}, http.StatusOK))
	if ev.Digest.String() != v2.Digest || len(ev.Manifests) != 1 {
		t.Errorf("eviction: %+v, want %s", ev, v2.Digest)
	}
	if a := b.call(t, "POST", "/berth/v1/cache/evict", "admin", b.password, map[string]any{"repository": repo, "reference": v2.Digest}); a.status != http.StatusNotFound {
		t.Errorf("evicting it again: %s", a)
	}
	c = b.hubCounts(func() {
		if a := b.manifest(t, "admin", b.password, repo, "stable"); sha(a.body) != v2.Digest {
			t.Errorf("pull after eviction: %s", a)
		}
	})
	if c.ManifestGet != 1 {
		t.Errorf("the pull after eviction asked the upstream %+v, want the manifest's GET", c)
	}
	// By digest, an index with its platform manifests; a platform manifest alone is refused.
	idx, err := b.hub.PushIndex("library/multi", "1", "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	const multi = "docker-hub/library/multi"
	if a := b.manifest(t, "admin", b.password, multi, "1"); a.status != http.StatusOK {
		t.Fatalf("pull the index: %s", a)
	}
	var index struct{ Manifests []struct{ Digest string } }
	json.Unmarshal(b.manifest(t, "admin", b.password, multi, "1").body, &index)
	for _, m := range index.Manifests {
		if a := b.manifest(t, "admin", b.password, multi, m.Digest); a.status != http.StatusOK {
			t.Fatalf("pull a platform: %s", a)
		}
	}
	if a := b.call(t, "POST", "/berth/v1/cache/evict", "admin", b.password, map[string]any{"repository": multi, "reference": index.Manifests[0].Digest}); a.status != http.StatusBadRequest || !strings.Contains(string(a.body), idx.Digest) {
		t.Errorf("evicting a platform manifest: %s, want 400 naming the index", a)
	}
	ev = decodeJSON[admin.Eviction](t, b.asAdmin(t, "POST", "/berth/v1/cache/evict", map[string]any{"repository": multi, "reference": idx.Digest}, http.StatusOK))
	if len(ev.Manifests) != 3 || ev.Manifests[0].String() != idx.Digest {
		t.Errorf("evicting the index: %+v", ev)
	}
	if a := b.call(t, "POST", "/berth/v1/cache/evict", "admin", b.password, map[string]any{"repository": "team/app", "reference": "v1"}); a.status != http.StatusBadRequest {
		t.Errorf("evicting from a repository that is not cached: %s", a)
	}
}

// TestLifecyclePreview: the API lists what the command line's store-side preview lists (the
// same operation, on the same store), and changes nothing.
func TestLifecyclePreview(t *testing.T) {
	b := startBerth(t, false)
	old := b.push(t, "admin", b.password, "team/app", "v1", "one")
	time.Sleep(20 * time.Millisecond) // a push order the policy can see
	b.push(t, "admin", b.password, "team/app", "v2", "two")
	b.push(t, "admin", b.password, "solo/app", "v1", "three") // no policy
	type list struct{ Expired []admin.Expiry }
	got := decodeJSON[list](t, b.asAdmin(t, "GET", "/berth/v1/lifecycle/preview", nil, http.StatusOK))
	if len(got.Expired) != 1 || got.Expired[0].Digest.String() != old || got.Expired[0].Repository != "team/app" ||
		!slices.Equal(got.Expired[0].Tags, []string{"v1"}) || got.Expired[0].Rule != 1 {
		t.Fatalf("preview: %+v, want team/app@%s", got.Expired, old)
	}
	one := decodeJSON[list](t, b.asAdmin(t, "GET", "/berth/v1/lifecycle/preview?repository=team/app", nil, http.StatusOK))
	none := decodeJSON[list](t, b.asAdmin(t, "GET", "/berth/v1/lifecycle/preview?repository=solo/app", nil, http.StatusOK))
	if len(one.Expired) != 1 || len(none.Expired) != 0 || none.Expired == nil {
		t.Errorf("preview of team/app %+v, of solo/app %+v", one.Expired, none.Expired)
	}
	// The store-side operation, as `berth lifecycle preview` runs it, while berth serves.
	meta, err := server.OpenMetadata(context.Background(), b.cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	local, err := server.LocalAdmin(b.cfg, meta, slog.New(slog.DiscardHandler), "test")
	if err != nil {
		t.Fatal(err)
	}
	want, err := local.LifecyclePreview(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got.Expired) || want[0].Digest != got.Expired[0].Digest || !want[0].Pushed.Equal(got.Expired[0].Pushed) {
		t.Errorf("the API's preview %+v, the store's %+v", got.Expired, want)
	}
	if a := b.manifest(t, "admin", b.password, "team/app", old); a.status != http.StatusOK {
		t.Errorf("the preview deleted what it listed: %s", a)
	}
	if a := b.call(t, "GET", "/berth/v1/lifecycle/preview?repository=Not/Valid", "admin", b.password, nil); a.status != http.StatusBadRequest {
		t.Errorf("a bad repository: %s", a)
	}
}

// TestDev: berth --dev authenticates no one: the cache and lifecycle endpoints answer anyone
// (as /v2/ lets anyone push and delete), the account and grant endpoints nobody.
func TestDev(t *testing.T) {
	b := startBerth(t, true)
	b.push(t, "", "", "team/app", "v1", "one")
	if a := b.call(t, "GET", "/berth/v1/lifecycle/preview", "", "", nil); a.status != http.StatusOK {
		t.Errorf("preview in --dev: %s", a)
	}
	for _, e := range endpoints {
		if !strings.HasPrefix(e.path, "/berth/v1/accounts") && !strings.HasPrefix(e.path, "/berth/v1/robots") && !strings.HasPrefix(e.path, "/berth/v1/grants") {
			continue
		}
		a := b.call(t, e.method, e.path, "", "", e.body)
		if a.status != http.StatusForbidden || !strings.Contains(string(a.body), "--dev") {
			t.Errorf("%s %s in --dev: %s, want 403 explaining --dev", e.method, e.path, a)
		}
	}
}

// TestClient: Client is the same API over HTTP: its answers and its errors are the Service's.
func TestClient(t *testing.T) {
	b := startBerth(t, false)
	ctx := context.Background()
	c, err := admin.NewClient(strings.TrimPrefix(b.url, "http://"), "admin", b.password, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, password, err := c.CreateUser(ctx, admin.NewUser{Name: "dana"})
	if err != nil || u.Name != "dana" || password == "" {
		t.Fatalf("CreateUser: %+v %q %v", u, password, err)
	}
	if _, _, err := c.CreateUser(ctx, admin.NewUser{Name: "dana"}); !errors.Is(err, metadata.ErrExists) {
		t.Errorf("CreateUser again: %v, want ErrExists", err)
	}
	if _, err := c.Account(ctx, "nobody"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("Account(nobody): %v, want ErrNotFound", err)
	}
	if _, err := c.Grant(ctx, "user:dana", "team/*", []string{"fly"}); !errors.Is(err, admin.ErrInvalid) || !strings.Contains(err.Error(), "fly") {
		t.Errorf("Grant(fly): %v, want ErrInvalid naming it", err)
	}
	if _, err := c.Grant(ctx, "user:dana", "team/*", []string{"pull"}); err != nil {
		t.Fatal(err)
	}
	dana, _ := admin.NewClient(b.url, "dana", password, nil)
	if _, err := dana.ListAccounts(ctx, ""); !errors.Is(err, admin.ErrDenied) || !strings.Contains(err.Error(), "admin on *") {
		t.Errorf("dana lists accounts: %v, want ErrDenied naming the grant", err)
	}
	anon, _ := admin.NewClient(b.url, "", "", nil)
	if _, err := anon.ListGrants(ctx); !errors.Is(err, admin.ErrUnauthorized) {
		t.Errorf("no credentials: %v, want ErrUnauthorized", err)
	}
	r, secret, err := c.CreateRobot(ctx, admin.NewRobot{Name: "bot", Groups: []string{"ci"}})
	if err != nil || secret == "" || !slices.Equal(r.Groups, []string{"ci"}) {
		t.Fatalf("CreateRobot: %+v %v", r, err)
	}
	list, err := c.ListAccounts(ctx, "robot")
	if err != nil || len(list) != 1 || list[0].Name != "bot" {
		t.Errorf("ListAccounts(robot): %+v %v", list, err)
	}
	if _, err := c.Revalidate(ctx, "team/app", "v1"); !errors.Is(err, admin.ErrInvalid) {
		t.Errorf("Revalidate of a repository that is not cached: %v", err)
	}
	if err := c.DeleteAccount(ctx, "bot", "user"); !errors.Is(err, admin.ErrInvalid) {
		t.Errorf("DeleteAccount(bot, user): %v", err)
	}
	if err := c.DeleteAccount(ctx, "bot", "robot"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"ftp://x", "http://", "http://host/path", "http://host?q=1"} {
		if _, err := admin.NewClient(bad, "", "", nil); err == nil {
			t.Errorf("NewClient(%q) accepted", bad)
		}
	}
}
