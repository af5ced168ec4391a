package e2e

// The account, grant, lifecycle and cache commands of the berth binary against a running berth
// process: each command run on the data directory and with --server (the admin API) leaves the
// same store, and the listings print the same bytes either way.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// adminEnv is a secure berth with a pull-through rule in front of a hub emulator and a lifecycle
// policy keeping one image per team/* repository.
type adminEnv struct {
	b   *berth
	hub *hubemu.Hub
	cfg string
}

func startAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	hub := startHubemu(t, hubemu.Options{})
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(`proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: ttl:24h
lifecycle:
  - repositories: "team/*"
    policy: '{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}'
`, hub.RegistryURL())))
	b := startSecureBerth(t, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth log:\n%s", b.Log())
		}
	})
	return &adminEnv{b: b, hub: hub, cfg: cfg}
}

// run runs the berth binary with env added to a clean environment and stdin, and returns stdout
// and stderr.
func (e *adminEnv) run(stdin string, env []string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "USER=tester"}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	err := cmd.Run()
	return o.String(), er.String(), err
}

// local runs a command on the data directory.
func (e *adminEnv) local(t *testing.T, stdin string, args ...string) (string, string) {
	t.Helper()
	o, er, err := e.run(stdin, nil, append(args, "--data", e.b.Data, "--config", e.cfg)...)
	if err != nil {
		t.Fatalf("berth %s: %v\n%s%s", strings.Join(args, " "), err, o, er)
	}
	return o, er
}

// remote runs a command with --server as admin (the password in $BERTH_PASSWORD).
func (e *adminEnv) remote(t *testing.T, stdin string, args ...string) (string, string) {
	t.Helper()
	o, er, err := e.remoteErr(stdin, "admin", e.b.AdminPassword(), args...)
	if err != nil {
		t.Fatalf("berth %s --server: %v\n%s%s", strings.Join(args, " "), err, o, er)
	}
	return o, er
}

func (e *adminEnv) remoteErr(stdin, user, password string, args ...string) (string, string, error) {
	var env []string
	if user != "" {
		env = []string{"BERTH_USERNAME=" + user, "BERTH_PASSWORD=" + password}
	}
	return e.run(stdin, env, append(args, "--server", e.b.URL())...)
}

// same runs a listing both ways and wants the same bytes.
func (e *adminEnv) same(t *testing.T, args ...string) string {
	t.Helper()
	l, _ := e.local(t, "", args...)
	r, _ := e.remote(t, "", args...)
	if l != r {
		t.Errorf("berth %s:\non the store:\n%s\nwith --server:\n%s", strings.Join(args, " "), l, r)
	}
	return l
}

func (e *adminEnv) loginStatus(t *testing.T, user, password string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.b.URL()+"/v2/", nil)
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminCLIServer: users, robots and grants made on the store and through --server are the
// same accounts: the listings print the same bytes either way, and what --server made works on
// /v2/ (and stops working when --server removes or revokes it).
func TestAdminCLIServer(t *testing.T) {
	e := startAdminEnv(t)

	// Users: one each way, with a password from standard input; then a generated one.
	e.local(t, "local-password-1\n", "user", "add", "ann", "--password-stdin", "--groups", "dev")
	e.remote(t, "remote-password-1\n", "user", "add", "ben", "--password-stdin", "--groups", "dev")
	generated, msg := e.remote(t, "", "user", "add", "cid")
	if !strings.Contains(msg, "shown once") || len(strings.TrimSpace(generated)) < 12 {
		t.Errorf("user add with --server, generated password: %q %q", generated, msg)
	}
	for user, pw := range map[string]string{"ann": "local-password-1", "ben": "remote-password-1", "cid": strings.TrimSpace(generated)} {
		if s := e.loginStatus(t, user, pw); s != http.StatusOK {
			t.Errorf("%s logs in: %d", user, s)
		}
	}
	// Robots: the secret printed once, never in a listing.
	e.local(t, "", "robot", "add", "ci-local", "--description", "made on the store")
	secret, _ := e.remote(t, "", "robot", "add", "ci-remote", "--description", "made through the API", "--expires", "720h")
	secret = strings.TrimSpace(secret)
	if s := e.loginStatus(t, "ci-remote", secret); s != http.StatusOK {
		t.Errorf("the robot made with --server logs in: %d", s)
	}
	// Grants, one each way.
	e.local(t, "", "grant", "user:ann", "team/*", "pull")
	e.remote(t, "", "grant", "robot:ci-remote", "team/*", "pull,push")
	e.remote(t, "", "user", "groups", "ben", "dev,ops")

	users := e.same(t, "user", "list")
	robots := e.same(t, "robot", "list")
	grants := e.same(t, "grant", "list")
	if !strings.Contains(users, "ben   dev,ops") && !strings.Contains(users, "dev,ops") {
		t.Errorf("user list lacks ben's groups:\n%s", users)
	}
	if strings.Contains(robots, secret) || !strings.Contains(robots, "made through the API") {
		t.Errorf("robot list:\n%s", robots)
	}
	for _, g := range []string{"user:ann", "robot:ci-remote  team/*   pull,push", "user:admin"} {
		if !strings.Contains(grants, strings.Fields(g)[0]) {
			t.Errorf("grant list lacks %s:\n%s", g, grants)
		}
	}

	// What --server granted works on /v2/; what it revokes stops working.
	authPushImage(t, e.b, basicAuth("ci-remote", secret), "team/app", "v1", "pushed by the robot\n")
	e.remote(t, "", "revoke", "robot:ci-remote", "team/*", "push")
	authEventually(t, 10*time.Second, "the robot's push is refused", func() bool {
		r := authDo(t, http.MethodPost, e.b.URL()+"/v2/team/app/blobs/uploads/", basicAuth("ci-remote", secret), nil)
		return r.Status == http.StatusForbidden || r.Status == http.StatusUnauthorized
	})
	// A password changed with --server: the new one works, the old one not.
	e.remote(t, "remote-password-2\n", "user", "passwd", "ben", "--password-stdin")
	authEventually(t, 10*time.Second, "ben's new password", func() bool {
		return e.loginStatus(t, "ben", "remote-password-2") == http.StatusOK && e.loginStatus(t, "ben", "remote-password-1") == http.StatusUnauthorized
	})
	e.remote(t, "", "robot", "rm", "ci-remote")
	authEventually(t, 10*time.Second, "the removed robot is refused", func() bool {
		return e.loginStatus(t, "ci-remote", secret) == http.StatusUnauthorized
	})
	if r, _ := e.local(t, "", "robot", "list"); strings.Contains(r, "ci-remote") {
		t.Errorf("the robot removed with --server is still in the store:\n%s", r)
	}

	// The login password from standard input (a command with no password of its own).
	o, er, err := e.run(e.b.AdminPassword()+"\n", nil, "grant", "list", "--server", e.b.URL(), "--username", "admin", "--password-stdin")
	if err != nil || o != e.same(t, "grant", "list") {
		t.Errorf("grant list --password-stdin: %v %s %s", err, o, er)
	}
	// Refusals, said plainly.
	for _, c := range []struct {
		name     string
		user, pw string
		args     []string
		want     string
	}{
		{"no credentials", "", "", []string{"user", "list"}, "--username"},
		{"a wrong password", "admin", "wrong-password-x", []string{"user", "list"}, "--username"},
		{"a user without admin", "ann", "local-password-1", []string{"user", "list"}, "user:ann needs a grant of admin on *"},
		{"a bad action", "admin", e.b.AdminPassword(), []string{"grant", "user:ann", "team/*", "fly"}, "fly"},
		{"an account that does not exist", "admin", e.b.AdminPassword(), []string{"grant", "user:nobody", "team/*", "pull"}, "nobody"},
		{"a robot removed as a user", "admin", e.b.AdminPassword(), []string{"user", "rm", "ci-local"}, "is a robot, not a user"},
		{"a short password", "admin", e.b.AdminPassword(), []string{"user", "add", "dee", "--password-stdin"}, "at least 12 characters"},
	} {
		_, er, err := e.remoteErr("short\n", c.user, c.pw, c.args...)
		if err == nil || !strings.Contains(er, c.want) {
			t.Errorf("%s: err %v, stderr %q, want it to mention %q", c.name, err, er, c.want)
		}
	}
	if _, er, err := e.run("", nil, "user", "list", "--server", e.b.URL(), "--data", e.b.Data); err == nil || !strings.Contains(er, "one or the other") {
		t.Errorf("--server with --data: %v %s", err, er)
	}
}

// TestAdminCLILifecycleAndCache: `berth lifecycle preview` prints the same with and without
// --server; `berth cache revalidate` makes berth ask the upstream at once (the next pull gets the
// tag's new digest) and `berth cache evict` makes the next pull fetch again; both need --server.
func TestAdminCLILifecycleAndCache(t *testing.T) {
	e := startAdminEnv(t)
	admin := basicAuth("admin", e.b.AdminPassword())
	old := authPushImage(t, e.b, admin, "team/app", "v1", "one\n")
	time.Sleep(20 * time.Millisecond)
	authPushImage(t, e.b, admin, "team/app", "v2", "two\n")
	preview := e.same(t, "lifecycle", "preview")
	if !strings.Contains(preview, "would expire team/app@"+old.Manifest) || !strings.Contains(preview, "1 manifest(s) would expire") {
		t.Errorf("lifecycle preview:\n%s", preview)
	}
	e.same(t, "lifecycle", "preview", "team/app")

	v1, err := e.hub.PushImage("library/redis", "7", []byte("redis one"))
	if err != nil {
		t.Fatal(err)
	}
	const repo = "docker-hub/library/redis"
	pull := func() string {
		r := authDo(t, http.MethodGet, e.b.URL()+"/v2/"+repo+"/manifests/7", admin, nil,
			"Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		if r.Status != http.StatusOK {
			t.Fatalf("pull %s:7: %s", repo, r)
		}
		return r.Header.Get("Docker-Content-Digest")
	}
	if d := pull(); d != v1.Digest {
		t.Fatalf("first pull: %s, want %s", d, v1.Digest)
	}
	v2, err := e.hub.PushImage("library/redis", "7", []byte("redis two"))
	if err != nil {
		t.Fatal(err)
	}
	if d := pull(); d != v1.Digest {
		t.Fatalf("a pull within the day: %s, want the cached %s", d, v1.Digest)
	}
	before := e.hub.Counts()
	out, _ := e.remote(t, "", "cache", "revalidate", repo, "7")
	after := e.hub.Counts()
	if !strings.Contains(out, "moved upstream: "+v2.Digest) || after.ManifestHead-before.ManifestHead != 1 {
		t.Errorf("cache revalidate: %q, upstream HEADs %d", out, after.ManifestHead-before.ManifestHead)
	}
	if d := pull(); d != v2.Digest {
		t.Errorf("the pull after revalidation: %s, want %s", d, v2.Digest)
	}
	out, _ = e.remote(t, "", "cache", "evict", repo, "7")
	if !strings.Contains(out, "evicted "+repo+"@"+v2.Digest) {
		t.Errorf("cache evict: %q", out)
	}
	before = e.hub.Counts()
	if d := pull(); d != v2.Digest {
		t.Errorf("the pull after eviction: %s", d)
	}
	if got := e.hub.Counts().ManifestGet - before.ManifestGet; got != 1 {
		t.Errorf("the pull after eviction made %d manifest GETs upstream, want 1", got)
	}
	if _, er, err := e.run("", nil, "cache", "evict", repo, "7", "--data", e.b.Data); err == nil || !strings.Contains(er, "--server") {
		t.Errorf("cache evict on the store: %v %q, want it to ask for --server", err, er)
	}
}
