package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
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
}

// startCluster starts n replicas at once (so that they race to migrate the database and create
// the first admin) and HAProxy in front of them.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	haproxy := tool(t, "haproxy")
	dsn := enginetest.Postgres(t)
	s3 := enginetest.S3(t)
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
    access_key_file: %s
    secret_key_file: %s
metadata:
  driver: postgres
  dsn_file: %s
shutdown:
  drain: 1s
`, s3.Bucket, s3.Region, s3.Endpoint, write("access-key", s3.AccessKey), write("secret-key", s3.SecretKey), write("dsn", dsn)))

	c := &cluster{t: t, front: &berth{t: t, secure: true, config: config, log: &syncBuffer{}}}
	started := make(chan *berth, n)
	for range n {
		r := &berth{t: t, Data: t.TempDir(), secure: true, config: config, tee: c.front.log}
		c.replicas = append(c.replicas, r)
		t.Cleanup(r.Stop)
		go func() { r.start(); started <- r }()
	}
	for range n {
		<-started
	}
	// Exactly one replica created admin (the others found it there) and wrote its password.
	var creators []string
	for _, r := range c.replicas {
		if _, err := os.Stat(filepath.Join(r.Data, "admin-password")); err == nil {
			creators = append(creators, r.Addr)
			c.front.Data = r.Data
		}
	}
	if len(creators) != 1 {
		t.Fatalf("%d replicas wrote an admin password (%v), want exactly 1", len(creators), creators)
	}

	c.front.Addr = freeAddr(t)
	var servers strings.Builder
	for i, r := range c.replicas {
		fmt.Fprintf(&servers, "    server r%d %s check\n", i, r.Addr)
	}
	cfg := write("haproxy.cfg", fmt.Sprintf(`global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend registry
    bind %s
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 1
    http-response set-header X-Berth-Replica %%[srv_name]
%s`, c.front.Addr, servers.String()))
	lb := exec.Command(haproxy, "-f", cfg, "-db")
	lbLog := &syncBuffer{}
	lb.Stdout, lb.Stderr = lbLog, lbLog
	lb.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lb.Start(); err != nil {
		t.Fatalf("haproxy: %v", err)
	}
	t.Cleanup(func() { lb.Process.Kill(); lb.Wait() })
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
	c := startCluster(t, 3)
	seen := c.replicasSeen(6)
	for _, r := range []string{"r0", "r1", "r2"} {
		if seen[r] != 2 {
			t.Errorf("6 requests through the load balancer: replicas answered %v, want 2 each", seen)
			break
		}
	}
	t.Run("conformance", func(t *testing.T) { conformanceAuth(t, c.front) })
	t.Run("clients", func(t *testing.T) { authClients(t, c.front) })
}
