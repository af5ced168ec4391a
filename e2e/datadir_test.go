package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSecondServe: a second `berth serve` on a data directory that a running berth uses (named
// through a symbolic link, and on another address) exits at once with a message that names the
// directory and says it is in use, without ever listening; the first keeps serving: what was
// pushed before is still there, and pushes and pulls go on.
func TestSecondServe(t *testing.T) {
	t.Parallel()
	b := startBerth(t)
	before := authPushImage(t, b, "", "keep/app", "v1", "pushed before the second serve\n")

	link := filepath.Join(t.TempDir(), "same-data")
	if err := os.Symlink(b.Data, link); err != nil {
		t.Fatal(err)
	}
	for _, data := range []string{b.Data, link} {
		addr := freeAddr(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		out, err := exec.CommandContext(ctx, berthBin, "serve", "--dev", "--addr", addr, "--data", data).CombinedOutput()
		took := time.Since(start)
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Fatalf("second berth serve --data %s: %v after %v, want it to exit with an error at once:\n%s", data, err, took, out)
		}
		if !strings.Contains(string(out), "in use by another berth process") || !strings.Contains(string(out), data) {
			t.Errorf("second berth serve --data %s says:\n%s\nwant the directory and \"in use by another berth process\"", data, out)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("something listens on the second berth's address %s", addr)
		}
		t.Logf("second berth serve --data %s exited after %v: %s", data, took.Round(time.Millisecond), bytes.TrimSpace(out))
	}

	// The first still serves: what was there, and new pushes and pulls.
	authWantManifest(t, b, "", "keep/app", "v1", before.Manifest)
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/keep/app/blobs/"+before.Layer, "", nil); r.Status != http.StatusOK || clDigest(r.Body) != before.Layer {
		t.Errorf("GET layer pushed before: %s", r)
	}
	after := authPushImage(t, b, "", "keep/app", "v2", "pushed after the second serve gave up\n")
	authWantManifest(t, b, "", "keep/app", "v2", after.Manifest)
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/keep/app/blobs/"+after.Layer, "", nil); r.Status != http.StatusOK || clDigest(r.Body) != after.Layer {
		t.Errorf("GET layer pushed after: %s", r)
	}
	if strings.Contains(b.Log(), "internal error") {
		t.Errorf("the first berth logged an internal error:\n%s", b.Log())
	}
}

// TestCLIUnderLoad: account commands (`berth user add`, `berth robot add`, `berth grant`) run
// against the data directory of a berth that is busy with pushes from several clients: every
// command and every push succeeds (no "database is locked" anywhere), and the grants take effect:
// the new accounts get tokens that carry them and pull with them.
func TestCLIUnderLoad(t *testing.T) {
	t.Parallel()
	b := startSecureBerth(t)
	admin := basicAuth("admin", b.AdminPassword())
	seed := authPushImage(t, b, admin, "load/seed", "v1", "what the new accounts pull\n")
	loaderSecret := authRobot(b, "loader", "load/*", "pull,push")
	var tok string
	authEventually(t, 10*time.Second, "the loader's grant", func() bool {
		tok = authToken(t, b, "loader", loaderSecret, "repository:load/p0:pull,push", "repository:load/p1:pull,push",
			"repository:load/p2:pull,push", "repository:load/p3:pull,push")
		access, _, _ := jwtAccess(t, tok)
		return len(access) == 4
	})

	const pushers = 4
	var (
		stop           atomic.Bool
		pushes         atomic.Int64
		mu             sync.Mutex
		pushErrs       []string
		wg             sync.WaitGroup
		lastByPusher   [pushers]string
		client         = &http.Client{Timeout: 30 * time.Second}
		pushDeadline   = time.Now().Add(3 * time.Minute) // a bound, should the commands hang
		failPush       = func(s string) { mu.Lock(); pushErrs = append(pushErrs, s); mu.Unlock() }
		loadBearer     = bearerAuth(tok)
		started        = make(chan struct{})
		startedOnce    sync.Once
		startedPushing = func() { startedOnce.Do(func() { close(started) }) }
	)
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			repo := fmt.Sprintf("load/p%d", p)
			for i := 0; !stop.Load() && time.Now().Before(pushDeadline); i++ {
				d, err := loadPush(client, b.URL(), loadBearer, repo, fmt.Sprintf("t%d", i%5), crashRandBytes(rng, 4<<10+rng.IntN(60<<10)))
				if err != nil {
					failPush(fmt.Sprintf("%s push %d: %v", repo, i, err))
					startedPushing() // so that the test does not wait for a push that never comes
					return
				}
				lastByPusher[p] = fmt.Sprintf("t%d=%s", i%5, d)
				pushes.Add(1)
				startedPushing()
			}
		}()
	}
	<-started
	mu.Lock()
	failedEarly := len(pushErrs) > 0
	mu.Unlock()
	if failedEarly {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("a push failed before the commands started: %s", pushErrs[0])
	}

	// The commands, one after another as an admin would type them, while the pushes go on.
	type account struct{ user, secret string }
	var accounts []account
	var cmds int
	run := func(args ...string) string {
		t.Helper()
		cmds++
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(berthBin, append(args, "--data", b.Data)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			stop.Store(true)
			t.Fatalf("berth %s during the pushes: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		if s := strings.ToLower(stderr.String()); strings.Contains(s, "locked") || strings.Contains(s, "busy") {
			t.Errorf("berth %s: %s", strings.Join(args, " "), stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}
	cliStart := time.Now()
	for i := range 6 {
		user := fmt.Sprintf("dev%d", i)
		pass := run("user", "add", user, "--groups", fmt.Sprintf("squad%d", i%2))
		run("grant", "group:"+fmt.Sprintf("squad%d", i%2), "load/seed", "pull")
		accounts = append(accounts, account{user, pass})
		robot := fmt.Sprintf("bot%d", i)
		secret := run("robot", "add", robot)
		if !strings.HasPrefix(secret, "berth_rbt_") {
			t.Fatalf("robot add %s printed %q", robot, secret)
		}
		run("grant", "robot:"+robot, "load/*", "pull")
		accounts = append(accounts, account{robot, secret})
	}
	cliTook := time.Since(cliStart)
	during := pushes.Load()
	stop.Store(true)
	wg.Wait()
	if len(pushErrs) > 0 {
		t.Fatalf("%d pushes failed while the commands ran, first: %s", len(pushErrs), pushErrs[0])
	}
	if during < 10 {
		t.Fatalf("only %d pushes completed while the %d commands ran: not a load", during, cmds)
	}

	// The grants took effect: every new account gets a token that carries pull on load/seed and
	// pulls with it (the grants reach the running berth within its reload interval).
	for _, a := range accounts {
		authEventually(t, 10*time.Second, "grant of "+a.user, func() bool {
			access, _, _ := jwtAccess(t, authToken(t, b, a.user, a.secret, "repository:load/seed:pull"))
			return strings.Join(access["repository:load/seed"], ",") == "pull"
		})
		authWantManifest(t, b, bearerAuth(authToken(t, b, a.user, a.secret, "repository:load/seed:pull")), "load/seed", "v1", seed.Manifest)
	}
	// What the pushers last pushed is there.
	for p, last := range lastByPusher {
		tag, d, _ := strings.Cut(last, "=")
		authWantManifest(t, b, admin, fmt.Sprintf("load/p%d", p), tag, d)
	}
	if strings.Contains(b.Log(), "internal error") || strings.Contains(strings.ToLower(b.Log()), "locked") {
		t.Errorf("berth logged an internal error or a lock:\n%s", crashTail(b.Log(), 4000))
	}
	t.Logf("%d account commands in %v while %d pushers completed %d pushes (%d in all); every grant took effect",
		cmds, cliTook.Round(time.Millisecond), pushers, during, pushes.Load())
}

// loadPush pushes a one-blob image (the blob as config and as layer, a manifest under tag) with
// authz, and returns the manifest's digest.
func loadPush(c *http.Client, base, authz, repo, tag string, blob []byte) (string, error) {
	do := func(method, u string, body []byte, want int, hdr ...string) (*http.Response, error) {
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", authz)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		rb, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, bytes.TrimSpace(rb))
		}
		return resp, nil
	}
	d := clDigest(blob)
	if _, err := do(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(d), blob, http.StatusCreated,
		"Content-Type", "application/octet-stream"); err != nil {
		return "", err
	}
	m, err := json.Marshal(crashManifest{SchemaVersion: 2, MediaType: crashManifestType,
		Config: crashDesc{crashConfigType, d, int64(len(blob))}, Layers: []crashDesc{{crashLayerType, d, int64(len(blob))}}})
	if err != nil {
		return "", err
	}
	if _, err := do(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, m, http.StatusCreated, "Content-Type", crashManifestType); err != nil {
		return "", err
	}
	return clDigest(m), nil
}
