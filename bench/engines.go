package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth/berth/internal/enginetest"
)

// The servers on the engines (a PostgreSQL 15 server and a versitygw, started by
// internal/enginetest the first time a server needs them, and stopped at the end of the run):
// berth with its blobs in a bucket and its metadata in PostgreSQL, alone (berth-s3pg), with its
// blob GETs answered by a 307 to the bucket (berth-s3pg-redir), and three replicas behind HAProxy
// (berth-s3pg-3) or one (berth-s3pg-1); Distribution v3 with its s3 driver on the same versitygw (v3-s3). Every start
// gets a database and a bucket of its own, removed when it stops. The engines' CPU is counted
// neither as the server's nor as other processes'.

// onEngines says whether a server needs the engines.
func onEngines(name string) bool { return strings.HasPrefix(name, "berth-s3pg") || name == "v3-s3" }

// replicasOf is how many berth processes a server runs; behindLB says whether HAProxy is in
// front of them: berth-s3pg-1 is one replica behind HAProxy, the baseline that berth-s3pg-3 is
// measured against when the question is what scaling out costs (the same load balancer in front).
func replicasOf(name string) int {
	if name == "berth-s3pg-3" {
		return 3
	}
	return 1
}

func behindLB(name string) bool { return name == "berth-s3pg-3" || name == "berth-s3pg-1" }

// space is one server's database and bucket.
type space struct {
	dsn  string // "" for Distribution, which keeps no database
	s3   enginetest.S3Server
	drop func() error // the database
	rm   func() error // the bucket
}

// newSpace makes a bucket, and a database if db is set.
func newSpace(db bool) (*space, error) {
	sp := &space{}
	var err error
	if sp.s3, sp.rm, err = enginetest.Bucket(); err != nil {
		return nil, err
	}
	if db {
		if sp.dsn, sp.drop, err = enginetest.Database(); err != nil {
			sp.release()
			return nil, err
		}
	}
	return sp, nil
}

// release removes the bucket and the database, once their server is stopped.
func (sp *space) release() {
	if sp == nil {
		return
	}
	for what, f := range map[string]func() error{"bucket": sp.rm, "database": sp.drop} {
		if f != nil {
			if err := f(); err != nil {
				fmt.Printf("   removing the %s: %v\n", what, err)
			}
		}
	}
	sp.rm, sp.drop = nil, nil
}

// dsnEnv is the environment variable that gives berth its DSN (metadata.dsn_env).
const dsnEnv = "BERTH_BENCH_DSN"

// berthConfig is berth's storage and metadata sections for the space, as e2e's replicas have them.
func (sp *space) berthConfig(redirect bool) string {
	return fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    region: %s
    endpoint: %s
    path_style: true
    redirect: %t
metadata:
  driver: postgres
  dsn_env: %s
`, sp.s3.Bucket, sp.s3.Region, sp.s3.Endpoint, redirect, dsnEnv)
}

// berthEnv is the DSN and the bucket's credentials (from the environment, the first place the
// AWS default chain looks).
func (sp *space) berthEnv() []string {
	return []string{dsnEnv + "=" + sp.dsn, "AWS_ACCESS_KEY_ID=" + sp.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + sp.s3.SecretKey}
}

// distributionStorage is Distribution v3.1.2's s3 driver (s3-aws) on the space's bucket: plain
// HTTP, path style, SigV4 (which sends x-amz-content-sha256, as versitygw requires). Blob GETs
// are proxied, not redirected (Distribution's default with s3), to compare with berth-s3pg,
// which proxies them too.
func (sp *space) distributionStorage() string {
	return fmt.Sprintf(`  s3:
    accesskey: %s
    secretkey: %s
    region: %s
    regionendpoint: %s
    forcepathstyle: true
    secure: false
    v4auth: true
    bucket: %s
  redirect:
    disable: true
`, sp.s3.AccessKey, sp.s3.SecretKey, sp.s3.Region, sp.s3.Endpoint, sp.s3.Bucket)
}

// startCluster starts n replicas of berth-s3pg on the space, one after the other, and HAProxy in
// front of them (round robin, /readyz checks: enginetest.HAProxyConfig, as in e2e), and waits
// until every replica answers through it.
func startCluster(ctx context.Context, o options, tmp, name string, n int, px *proxySetup, sp *space) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &server{name: name, base: "http://" + addr, dir: filepath.Join(tmp, "srv-"+name), done: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	s.log = filepath.Join(s.dir, "haproxy.log")
	var addrs []string
	for i := range n {
		r, err := startProcess(ctx, o, tmp, fmt.Sprintf("%s-r%d", name, i), "berth-s3pg", "", px, sp)
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
		s.replicas = append(s.replicas, r)
		addrs = append(addrs, strings.TrimPrefix(r.base, "http://"))
	}
	cfg := filepath.Join(s.dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(enginetest.HAProxyConfig(addr, addrs)), 0o644); err != nil {
		s.stop()
		return nil, err
	}
	s.cmd = exec.Command(o.haproxy, "-f", cfg, "-db")
	if err := s.launch(ctx); err != nil { // launch stopped the replicas
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	// HAProxy answers as soon as one replica has passed its check: wait for all of them.
	deadline := time.Now().Add(15 * time.Second)
	for {
		seen := map[string]bool{}
		for range 2 * n {
			if resp, err := http.Get(s.base + "/v2/"); err == nil {
				resp.Body.Close()
				if r := resp.Header.Get("X-Berth-Replica"); r != "" && resp.StatusCode == http.StatusOK {
					seen[r] = true
				}
			}
		}
		if len(seen) == n {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("HAProxy does not reach all %d replicas after 15s (%d answered): %s", n, len(seen), s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
