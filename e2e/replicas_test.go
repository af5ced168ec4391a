package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/hubemu"
)

// cluster is berth as it scales out: replicas sharing S3-compatible storage (versitygw) and
// PostgreSQL, each with its own data directory, behind HAProxy balancing round robin with no
// stickiness (so that consecutive requests of one upload land on different replicas) and health
// checks on /readyz.
type cluster struct {
	t        testing.TB
	replicas []*berth
	// front is the load balancer's address with the account commands and the admin password of
	// the replica that created admin; its Log is every replica's output together.
	front *berth
	s3    enginetest.S3Server
	// pgFwd and s3Fwd stand between the replicas and the engines: Cut makes one unreachable.
	pgFwd, s3Fwd *enginetest.Forwarder
}

// startCluster starts n replicas at once (so that they race to migrate the database and create
// the first admin) and HAProxy in front of them. s3Extra is more of the storage.s3 section (indented
// four spaces), extra more of the replicas' configuration.
func startCluster(t testing.TB, n int, s3Extra, extra string) *cluster {
	t.Helper()
	return startClusterOn(t, n, s3Extra, extra, nil)
}

// startClusterOn is startCluster with the engines prepared before the replicas start: prepare is
// given the replicas' configuration file and returns the data directory whose admin-password the
// engines' admin has (no replica creates one then).
func startClusterOn(t testing.TB, n int, s3Extra, extra string, prepare func(config string) (adminData string)) *cluster {
	t.Helper()
	haproxy := tool(t, "haproxy")
	// The replicas reach both engines through forwarders that a test can cut.
	dsn, err := url.Parse(enginetest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	pgFwd := enginetest.Forward(t, dsn.Host)
	dsn.Host = pgFwd.Addr()
	s3 := enginetest.S3(t)
	s3u, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	s3Fwd := enginetest.Forward(t, s3u.Host)
	s3u.Host = s3Fwd.Addr()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	config := write("berth.yaml", fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    region: %s
    endpoint: %s
    path_style: true
%s    access_key_file: %s
    secret_key_file: %s
metadata:
  driver: postgres
  dsn_file: %s
shutdown:
  drain: 1s
%s`, s3.Bucket, s3.Region, s3u.String(), s3Extra, write("access-key", s3.AccessKey), write("secret-key", s3.SecretKey), write("dsn", dsn.String()), extra))

	c := &cluster{t: t, s3: s3, pgFwd: pgFwd, s3Fwd: s3Fwd, front: &berth{t: t, secure: true, config: config, log: &syncBuffer{}}}
	var adminData string
	if prepare != nil {
		adminData = prepare(config)
	}
	started := make(chan *berth, n)
	for range n {
		r := &berth{t: t, Data: t.TempDir(), secure: true, config: config, tee: c.front.log}
		c.replicas = append(c.replicas, r)
		t.Cleanup(r.Stop)
		// start fails the test from this goroutine when the replica does not come up (and ends
		// the goroutine): the send is deferred so that the test goroutine never waits forever.
		go func() {
			defer func() { started <- r }()
			r.start()
		}()
	}
	for range n {
		<-started
	}
	if t.Failed() {
		t.FailNow()
	}
	// Exactly one replica created admin (the others found it there) and wrote its password.
	var creators []string
	for _, r := range c.replicas {
		if _, err := os.Stat(filepath.Join(r.Data, "admin-password")); err == nil {
			creators = append(creators, r.Addr)
			c.front.Data = r.Data
		}
	}
	switch {
	case prepare != nil && len(creators) != 0:
		t.Fatalf("%d replicas wrote an admin password (%v) into prepared engines, want none", len(creators), creators)
	case prepare != nil:
		c.front.Data = adminData
	case len(creators) != 1:
		t.Fatalf("%d replicas wrote an admin password (%v), want exactly 1", len(creators), creators)
	}

	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// What the replicas warned of, for the failure's story.
		n := 0
		for line := range strings.Lines(c.front.Log()) {
			if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && n < 40 {
				t.Log(strings.TrimSpace(line))
				n++
			}
		}
	})
	c.front.Addr = freeAddr(t)
	var addrs []string
	for _, r := range c.replicas {
		addrs = append(addrs, r.Addr)
	}
	cfg := write("haproxy.cfg", enginetest.HAProxyConfig(c.front.Addr, addrs))
	lb := exec.Command(haproxy, "-f", cfg, "-db")
	lbLog := &syncBuffer{}
	lb.Stdout, lb.Stderr = lbLog, lbLog
	startChild(t, lb)
	// Ready when every replica has passed its health check: a round of requests meets them all.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if seen := c.replicasSeen(2 * n); len(seen) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy does not reach all %d replicas; its log:\n%s", n, lbLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// replicasSeen sends k requests through the load balancer and returns the replicas that answered.
func (c *cluster) replicasSeen(k int) map[string]int {
	seen := map[string]int{}
	for range k {
		resp, err := http.Get(c.front.URL() + "/v2/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if r := resp.Header.Get("X-Berth-Replica"); r != "" {
			seen[r]++
		}
	}
	return seen
}

// TestReplicas: three replicas on S3 and PostgreSQL behind HAProxy, auth on. Requests are spread
// over every replica; the OCI conformance suite passes with zero failures (every upload's
// requests land on different replicas); crane, oras, regctl and skopeo push and pull through the
// load balancer as they do against one berth (TestAuthClients).
func TestReplicas(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "", "")
	seen := c.replicasSeen(6)
	for _, r := range []string{"r0", "r1", "r2"} {
		if seen[r] != 2 {
			t.Errorf("6 requests through the load balancer: replicas answered %v, want 2 each", seen)
			break
		}
	}
	t.Run("conformance", func(t *testing.T) { conformanceAuth(t, c.front) })
	t.Run("clients", func(t *testing.T) { authClients(t, c.front) })

	// The blobs are in the bucket, none in the replicas' data directories.
	out, err := c.s3.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(c.s3.Bucket), Prefix: aws.String("blobs/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) < 10 {
		t.Errorf("the bucket holds %d blobs after the conformance suite and four clients", len(out.Contents))
	}
	for _, r := range c.replicas {
		if n, _ := filepath.Glob(filepath.Join(r.Data, "blobs", "*", "*", "*")); len(n) > 0 {
			t.Errorf("replica %s has %d blobs in its data directory", r.Addr, len(n))
		}
	}
}

// send sends one request through the load balancer and returns the response with its body, and
// which replica answered; unlike authDo, a failure is returned, not fatal (the chaos tests count
// them).
func (c *cluster) send(method, path, authz string, body []byte, extra ...string) (*http.Response, []byte, error) {
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.front.URL() + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", authz)
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := chaosHTTP.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

var chaosHTTP = &http.Client{Timeout: 30 * time.Second}

// replica returns the replica HAProxy names r<i>.
func (c *cluster) replica(name string) *berth {
	var i int
	fmt.Sscanf(name, "r%d", &i)
	return c.replicas[i]
}

// waitSeen waits until the load balancer sends requests to exactly the replicas that run.
func (c *cluster) waitSeen(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(c.replicasSeen(3*len(c.replicas))) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the load balancer does not settle on %d replicas", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// push pushes a one-layer image through the load balancer; it returns the manifest's digest and
// body, or the first failure.
func (c *cluster) push(authz, repo, tag string, layer []byte) (string, []byte, error) {
	upload := func(data []byte) error {
		resp, b, err := c.send(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", authz, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST upload: %d %s", resp.StatusCode, b)
		}
		loc, err := url.Parse(c.front.URL())
		if err != nil {
			return err
		}
		if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil {
			return err
		}
		q := loc.Query()
		q.Set("digest", clDigest(data))
		loc.RawQuery = q.Encode()
		resp, b, err = c.send(http.MethodPut, loc.String(), authz, data, "Content-Type", "application/octet-stream")
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("PUT blob: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, clDigest(layer)))
	for _, blob := range [][]byte{cfg, layer} {
		if err := upload(blob); err != nil {
			return "", nil, err
		}
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		clDigest(cfg), len(cfg), clDigest(layer), len(layer)))
	resp, b, err := c.send(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, authz, body, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", nil, fmt.Errorf("PUT manifest: %d %s", resp.StatusCode, b)
	}
	return clDigest(body), body, nil
}

// TestReplicasChaos: replicas killed or restarted while clients work through the load balancer.
//   - An upload whose replica is killed with SIGKILL between two chunks continues on another
//     replica, and its blob is whole.
//   - Replicas killed with SIGKILL in the middle of concurrent pushes lose no acknowledged push.
//   - A rolling restart of every replica (SIGTERM: unready, drained, stopped; then started again)
//     under 50 concurrent pulling clients (25 with a token, 25 with Basic credentials on every
//     request) fails no pull.
func TestReplicasChaos(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "", "")
	admin := basicAuth("admin", c.front.AdminPassword())

	t.Run("upload-continues-elsewhere", func(t *testing.T) {
		data := bytes.Repeat([]byte("chunked across replicas\n"), 100_000) // 2.4 MB
		resp, b, err := c.send(http.MethodPost, "/v2/chaos/upload/blobs/uploads/", admin, nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST upload: %v %v %s", err, resp, b)
		}
		loc := resp.Header.Get("Location")
		half := len(data) / 2
		resp, b, err = c.send(http.MethodPatch, loc, admin, data[:half], "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("0-%d", half-1))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH 1: %v %v %s", err, resp, b)
		}
		victim := resp.Header.Get("X-Berth-Replica")
		c.replica(victim).Kill()
		t.Logf("the first chunk went to %s, killed with SIGKILL", victim)
		c.waitSeen(t, 2) // the health checks took it out
		loc = resp.Header.Get("Location")
		resp, b, err = c.send(http.MethodPatch, loc, admin, data[half:], "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", half, len(data)-1))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH 2 after the first replica died: %v %v %s", err, resp, b)
		}
		second := resp.Header.Get("X-Berth-Replica")
		u, _ := url.Parse(c.front.URL())
		u, _ = u.Parse(resp.Header.Get("Location"))
		q := u.Query()
		q.Set("digest", clDigest(data))
		u.RawQuery = q.Encode()
		resp, b, err = c.send(http.MethodPut, u.String(), admin, nil)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT to close the upload: %v %v %s", err, resp, b)
		}
		resp, b, err = c.send(http.MethodGet, "/v2/chaos/upload/blobs/"+clDigest(data), admin, nil)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, data) {
			t.Fatalf("GET the blob: %v %v, %d bytes", err, resp, len(b))
		}
		if victim == second {
			t.Errorf("the second chunk went to %s, which was dead", second)
		}
		t.Logf("the second chunk went to %s, the PUT to %s", second, resp.Header.Get("X-Berth-Replica"))
		c.replica(victim).start()
		c.waitSeen(t, 3)
	})

	t.Run("kill-during-pushes", func(t *testing.T) {
		type pushed struct{ repo, digest string }
		var mu sync.Mutex
		var acked []pushed
		var failed atomic.Int32
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					repo := fmt.Sprintf("chaos/push-%d", w)
					tag := fmt.Sprintf("v%d", i)
					d, _, err := c.push(admin, repo, tag, []byte(fmt.Sprintf("worker %d push %d\n", w, i)))
					if err != nil {
						failed.Add(1)
						continue
					}
					mu.Lock()
					acked = append(acked, pushed{repo + ":" + tag, d})
					mu.Unlock()
				}
			})
		}
		for _, r := range c.replicas[:2] {
			time.Sleep(time.Second)
			r.Kill()
			time.Sleep(time.Second)
			r.start()
		}
		time.Sleep(500 * time.Millisecond)
		close(stop)
		wg.Wait()
		c.waitSeen(t, 3)
		t.Logf("%d pushes acknowledged, %d failed while two replicas were killed in turn", len(acked), failed.Load())
		if len(acked) < 3 { // on a loaded machine (-race, parallel tests) pushes are slow
			t.Fatalf("only %d pushes acknowledged", len(acked))
		}
		for _, p := range acked {
			repo, tag, _ := strings.Cut(p.repo, ":")
			if err := c.pull(admin, repo, tag, p.digest); err != nil {
				t.Errorf("acknowledged push %s: %v", p.repo, err)
			}
		}
	})

	t.Run("rolling-restart-under-pulls", func(t *testing.T) {
		digest, _, err := c.push(admin, "chaos/pull", "v1", bytes.Repeat([]byte("pulled while replicas restart\n"), 10_000))
		if err != nil {
			t.Fatal(err)
		}
		// Half the clients as container runtimes do: a token, which any replica accepts (the
		// signing keys are in the shared database). The other half send a password on every
		// request, which a restarted replica has not seen yet: identical logins in flight share
		// one check (a first version of this test, before that, had 485 of 1,628 pulls refused).
		token := bearerAuth(authToken(t, c.front, "admin", c.front.AdminPassword(), "repository:chaos/pull:pull"))
		var pulls, failures atomic.Int32
		var firstErr atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 50 {
			puller := token
			if i%2 == 1 {
				puller = admin
			}
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := c.pull(puller, "chaos/pull", "v1", digest); err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					pulls.Add(1)
				}
			})
		}
		for _, r := range c.replicas {
			r.Stop() // SIGTERM: unready, drained for shutdown.drain, then stopped
			r.start()
			c.waitSeen(t, 3)
		}
		close(stop)
		wg.Wait()
		t.Logf("%d pulls by 50 clients during a rolling restart of 3 replicas, %d failed", pulls.Load(), failures.Load())
		if n := failures.Load(); n > 0 {
			t.Errorf("%d pulls failed during the rolling restart; the first: %v", n, firstErr.Load())
		}
		if pulls.Load() < 50 {
			t.Errorf("only %d pulls ran", pulls.Load())
		}
	})
}

// TestReplicasPullThrough: 3 replicas × 50 concurrent cold pulls of a Docker Hub image (through
// the load balancer, so each replica gets a third) cost the upstream one manifest GET and one GET
// per blob: the replicas coordinate with leases in PostgreSQL. Warm pulls afterwards ask only for
// HEADs.
func TestReplicasPullThrough(t *testing.T) {
	t.Parallel()
	hub := startHubemu(t, hubemu.Options{})
	var layers [][]byte
	for i := range 3 {
		layers = append(layers, bytes.Repeat([]byte{byte('a' + i)}, 1<<20))
	}
	img, err := hub.PushImage("library/app", "v1", layers...)
	if err != nil {
		t.Fatal(err)
	}
	// About three seconds for the image: every client asks while the fills run, even with a
	// whole race-built suite beside (at one second, a full run once had a third of the clients
	// arrive after the fills had stored the blobs, each then reading them from the bucket).
	hub.SetThrottle(1 << 20)
	c := startCluster(t, 3, "", hubProxy(hub, "revalidate: always"))
	secret := authRobot(c.front, "puller", "docker-hub/*", "pull,fetch")
	token := bearerAuth(authToken(t, c.front, "puller", secret, "repository:docker-hub/library/app:pull"))
	pullAll := func() (failed int32) {
		var n atomic.Int32
		var wg sync.WaitGroup
		for range 150 {
			wg.Go(func() {
				if err := c.pull(token, "docker-hub/library/app", "v1", ""); err != nil {
					if n.Add(1) == 1 {
						t.Errorf("pull: %v", err)
					}
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	fromBucket := c.s3Fwd.Served()
	if failed := pullAll(); failed > 0 {
		t.Fatalf("%d of 150 cold pulls failed", failed)
	}
	fromBucket = c.s3Fwd.Served() - fromBucket
	counts := hub.Counts()
	t.Logf("150 cold pulls through 3 replicas: the upstream saw %d manifest GETs, %d blob GETs (%d blobs)", counts.ManifestGet, counts.BlobGet, len(img.Layers)+1)
	if counts.ManifestGet != 1 || counts.BlobGet != int64(len(img.Layers)+1) {
		t.Errorf("upstream requests: %d manifest GETs, %d blob GETs; want 1 and %d", counts.ManifestGet, counts.BlobGet, len(img.Layers)+1)
	}
	// The clients of a replica that waited for another's fill share one read of each blob from
	// the bucket (the fill relays it), rather than each reading the whole blob.
	var image int64
	for _, l := range layers {
		image += int64(len(l))
	}
	t.Logf("the bucket sent the replicas %.1f MiB during the cold pulls (the image: %.1f MiB)", float64(fromBucket)/(1<<20), float64(image)/(1<<20))
	if fromBucket > 30*image {
		t.Errorf("the bucket sent the replicas %d bytes during the cold pulls, over 30 times the image's %d: the clients waiting on another replica's fill read the bucket each", fromBucket, image)
	}
	hub.ResetCounts()
	if failed := pullAll(); failed > 0 {
		t.Fatalf("%d of 150 warm pulls failed", failed)
	}
	if counts := hub.Counts(); counts.ManifestGet != 0 || counts.BlobGet != 0 {
		t.Errorf("warm pulls cost the upstream %d manifest GETs and %d blob GETs; want none", counts.ManifestGet, counts.BlobGet)
	}
}

// pull gets repo:tag and every blob it names through the load balancer, checking each blob's
// digest, and the manifest's against want unless want is "".
func (c *cluster) pull(authz, repo, tag, want string) error {
	resp, body, err := c.send(http.MethodGet, "/v2/"+repo+"/manifests/"+tag, authz, nil, "Accept",
		"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || want != "" && clDigest(body) != want {
		return fmt.Errorf("GET %s:%s: %d %.300s, digest %s, want %s", repo, tag, resp.StatusCode, body, clDigest(body), want)
	}
	var m clManifestJSON
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		resp, b, err := c.send(http.MethodGet, "/v2/"+repo+"/blobs/"+d, authz, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || clDigest(b) != d {
			return fmt.Errorf("GET blob %s: %d %.300s (digest %s) from %s", d, resp.StatusCode, b, clDigest(b), resp.Header.Get("X-Berth-Replica"))
		}
	}
	return nil
}

// TestReplicasRedirect: with storage.s3.redirect, a blob GET is answered 307 with a presigned URL
// of the bucket, which serves the blob's bytes (and ranges of it) with no credentials of berth's;
// a HEAD is answered by berth itself; a pull that follows the redirect gets the image.
func TestReplicasRedirect(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 1, "    redirect: true\n    redirect_ttl: 1m\n", "")
	admin := basicAuth("admin", c.front.AdminPassword())
	layer := bytes.Repeat([]byte("served by the bucket\n"), 1000)
	_, _, err := c.push(admin, "redirect/app", "v1", layer)
	if err != nil {
		t.Fatal(err)
	}
	noFollow := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, u, authz string, extra ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, u, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Set(extra[i], extra[i+1])
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	blob := c.front.URL() + "/v2/redirect/app/blobs/" + clDigest(layer)
	resp, _ := get(http.MethodGet, blob, admin)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "X-Amz-Signature=") ||
		resp.Header.Get("Docker-Content-Digest") != clDigest(layer) {
		t.Fatalf("GET blob with redirect on: %d, Location %q, digest %q", resp.StatusCode, loc, resp.Header.Get("Docker-Content-Digest"))
	}
	if resp, b := get(http.MethodGet, loc, ""); resp.StatusCode != http.StatusOK || !bytes.Equal(b, layer) {
		t.Errorf("GET the presigned URL: %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp, b := get(http.MethodGet, loc, "", "Range", "bytes=0-5"); resp.StatusCode != http.StatusPartialContent || string(b) != "served" {
		t.Errorf("ranged GET of the presigned URL: %d %q", resp.StatusCode, b)
	}
	if resp, _ := get(http.MethodHead, blob, admin); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != fmt.Sprint(len(layer)) {
		t.Errorf("HEAD blob: %d, Content-Length %q; want berth's own 200", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
	// Without credentials, no redirect: the refusal comes first.
	if resp, _ := get(http.MethodGet, blob, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET blob without credentials: %d, want 401", resp.StatusCode)
	}
	// crane follows the redirect (to another host:port, so without berth's Authorization).
	crane := tool(t, "crane")
	dir := t.TempDir()
	authRun(t, dir, crane, "auth", "login", c.front.Addr, "-u", "admin", "-p", c.front.AdminPassword())
	out := authRun(t, dir, crane, "blob", c.front.Addr+"/redirect/app@"+clDigest(layer))
	if out != string(layer) {
		t.Errorf("crane blob through the redirect: %d bytes, want the layer's %d", len(out), len(layer))
	}
}

// TestReplicasAccountChanges: a grant revoked with the account commands (on the shared database)
// stops a token on every replica within a second, as on one berth (TestRevocationRealClock).
func TestReplicasAccountChanges(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "", "")
	admin := basicAuth("admin", c.front.AdminPassword())
	if _, _, err := c.push(admin, "team/app", "v1", []byte("granted, then not\n")); err != nil {
		t.Fatal(err)
	}
	secret := authRobot(c.front, "rev", "team/*", "pull")
	token := bearerAuth(authToken(t, c.front, "rev", secret, "repository:team/app:pull"))
	for _, r := range c.replicas {
		if resp, b, err := c.send(http.MethodGet, r.URL()+"/v2/team/app/manifests/v1", token, nil, "Accept", "application/vnd.oci.image.manifest.v1+json"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("replica %s before the revoke: %v %v %s", r.Addr, err, resp, b)
		}
	}
	c.front.Admin("revoke", "robot:rev", "team/*")
	revoked := time.Now()
	// Each replica is asked on its own, every 20 ms; a refusal counts from when its request was
	// sent. The bound allows one poll and a request's time on a loaded machine (-race, parallel
	// tests) over the promise, as TestAuthBasicFollowsAccounts does.
	const bound = revokeWithin + 200*time.Millisecond
	refused := make([]time.Duration, len(c.replicas))
	var wg sync.WaitGroup
	for i, r := range c.replicas {
		wg.Go(func() {
			for {
				sent := time.Since(revoked)
				resp, _, err := c.send(http.MethodGet, r.URL()+"/v2/team/app/manifests/v1", token, nil)
				if err == nil && resp.StatusCode != http.StatusOK {
					refused[i] = sent
					return
				}
				if sent > bound {
					refused[i] = -1
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, d := range refused {
		if d < 0 || d > bound {
			t.Errorf("replica %s: the revoked token still worked %v after the command (promise: %v)", c.replicas[i].Addr, bound, revokeWithin)
		}
	}
	t.Logf("the token was refused on each replica after %v", refused)
}

// TestReplicasLoginThrottle: the login throttles hold across replicas as on one berth
// (TestAuthRemoteLockout). 7 wrong passwords for one account from one address, round robin over
// three replicas, are 5×401 and then 429, where replicas counting on their own would check all 7;
// the right password from another address logs in. The replicas trust HAProxy for the client's
// address (X-Forwarded-For).
func TestReplicasLoginThrottle(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "", "auth:\n  trusted_proxies: [127.0.0.1]\n")
	pass := strings.TrimSpace(c.front.Admin("user", "add", "fay"))
	seen := map[string]bool{}
	login := func(ip, p string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.front.URL()+"/token?service=berth", nil)
		req.SetBasicAuth("fay", p)
		resp, err := fromAddr(ip, time.Minute).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Berth-Replica")] = true
		return resp.StatusCode
	}
	var got []int
	for range 7 {
		got = append(got, login("127.0.7.1", "wrong password"))
	}
	if fmt.Sprint(got) != "[401 401 401 401 401 429 429]" {
		t.Errorf("7 wrong passwords from one address over 3 replicas: %v, want 5×401 then 429", got)
	}
	if len(seen) != 3 {
		t.Errorf("the guesses reached replicas %v, want all 3", seen)
	}
	if code := login("127.0.7.1", pass); code != http.StatusTooManyRequests {
		t.Errorf("the right password from the guessing address: %d, want 429", code)
	}
	if code := login("127.0.7.2", pass); code != http.StatusOK {
		t.Errorf("the right password from another address: %d, want 200 (a remote lockout)", code)
	}
}

// TestReplicasFillHolderKilled: the replica downloading a blob from the upstream for everyone is
// killed with SIGKILL in the middle of it. The clients waiting on the other replicas get the whole
// blob: one of those replicas takes the lease over when it expires and downloads the blob again
// (the killed download's bytes are lost with it); the upstream sees two GETs of the blob, no more.
func TestReplicasFillHolderKilled(t *testing.T) {
	t.Parallel()
	hub := startHubemu(t, hubemu.Options{})
	layer := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(layer)
	if _, err := hub.PushImage("library/big", "v1", layer); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, 3, "", hubProxy(hub))
	secret := authRobot(c.front, "puller", "docker-hub/*", "pull,fetch")
	token := bearerAuth(authToken(t, c.front, "puller", secret, "repository:docker-hub/library/big:pull"))
	holder, others := c.replicas[0], c.replicas[1:]
	// The manifest through the holder-to-be, so that the blob is part of a cached image.
	if resp, body, err := c.send("GET", holder.URL()+"/v2/docker-hub/library/big/manifests/v1", token, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("manifest: %v %v %s", resp, err, body)
	}
	d := clDigest(layer)
	slow := &http.Client{Timeout: 2 * time.Minute}
	get := func(r *berth) error {
		req, _ := http.NewRequest("GET", r.URL()+"/v2/docker-hub/library/big/blobs/"+d, nil)
		req.Header.Set("Authorization", token)
		resp, err := slow.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || clDigest(b) != d {
			return fmt.Errorf("%d, %d bytes, digest %s", resp.StatusCode, len(b), clDigest(b))
		}
		return nil
	}
	hub.SetThrottle(1 << 20) // 4 s for the blob
	hub.ResetCounts()
	var held, waited sync.WaitGroup
	for range 3 {
		held.Go(func() { get(holder) }) // cut off with their replica
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually("the holder's download starts", func() bool { return hub.Counts().BlobBytes > 0 })
	errs := make(chan error, 10)
	for i := range 10 {
		waited.Go(func() { errs <- get(others[i%2]) })
	}
	eventually("a quarter of the blob downloaded", func() bool { return hub.Counts().BlobBytes >= 1<<20 })
	holder.Kill()
	if sent := hub.Counts().BlobBytes; sent >= int64(len(layer)) {
		t.Fatalf("the upstream had sent the whole blob (%d bytes) before the kill: nothing was tested", sent)
	}
	held.Wait()
	waited.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a client waiting on another replica: %v", err)
		}
	}
	if n := hub.Counts().BlobGet; n != 2 {
		t.Errorf("the upstream saw %d GETs of the blob; want 2 (the killed download, the one that took over)", n)
	}
}

// hubProxy is the proxy section of a configuration with one rule, docker-hub, on hub, with more
// of the rule's keys (lines such as "revalidate: always").
func hubProxy(hub *hubemu.Hub, ruleKeys ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy:\n  defaults: false\n  rules:\n    - prefix: docker-hub\n      upstream: %s\n      docker_hub: true\n", hub.RegistryURL())
	for _, k := range ruleKeys {
		fmt.Fprintf(&b, "      %s\n", k)
	}
	return b.String()
}

// TestReplicasManifestMemory: each replica keeps the manifests and tags it served in memory, and a
// push or delete through any replica is what every replica answers as soon as the client has its
// response (hot.Peers). Before each change every replica has served the old manifest (so holds it);
// right after, each is asked directly, not through the load balancer.
func TestReplicasManifestMemory(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "", "")
	admin := basicAuth("admin", c.front.AdminPassword())
	get := func(r *berth, ref string) (int, string) {
		t.Helper()
		resp, _, err := c.send(http.MethodGet, r.URL()+"/v2/team/app/manifests/"+ref, admin, nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
	}
	warm := func(ref string) {
		t.Helper()
		for _, r := range c.replicas {
			for range 2 {
				if code, _ := get(r, ref); code != http.StatusOK {
					t.Fatalf("replica %s: GET %s: %d", r.Addr, ref, code)
				}
			}
		}
	}
	var old string
	for i := range 20 {
		d, _, err := c.push(admin, "team/app", "latest", fmt.Appendf(nil, "layer %d\n", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range c.replicas {
			if code, got := get(r, "latest"); code != http.StatusOK || got != d {
				t.Errorf("push %d: replica %s answers latest with %d %s, want %s (the pushed one)", i, r.Addr, code, got, d)
			}
		}
		if old != "" {
			warm(old)
			if resp, b, err := c.send(http.MethodDelete, "/v2/team/app/manifests/"+old, admin, nil); err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("DELETE %s: %v %v %s", old, err, resp, b)
			}
			for _, r := range c.replicas {
				if code, _ := get(r, old); code != http.StatusNotFound {
					t.Errorf("replica %s answers a deleted manifest with %d, want 404", r.Addr, code)
				}
			}
		}
		warm("latest")
		old = d
	}
}
