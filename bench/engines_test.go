package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth/berth/internal/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// TestServersOnEngines starts the servers on PostgreSQL and versitygw as the benchmark does, and
// pushes and pulls a blob through each: v3-s3 (Distribution's s3 driver on versitygw),
// berth-s3pg-3 (three replicas behind HAProxy, each of which answers), and berth-s3pg-redir, whose
// blob GET is a 307 to the bucket, so that the client gets the blob while berth sends a few
// hundred bytes.
func TestServersOnEngines(t *testing.T) {
	enginetest.Postgres(t) // skip unless both engines are installed
	enginetest.S3(t)
	o := options{v3: filepath.Join("..", ".tools", "bin", "registry")}
	var err error
	if o.haproxy, err = exec.LookPath("haproxy"); err != nil {
		t.Skip("no haproxy: apt-get install haproxy")
	}
	if o.v3, err = exec.LookPath(o.v3); err != nil {
		if o.v3, err = exec.LookPath("registry"); err != nil {
			t.Skip("no Distribution v3 (registry): scripts/install-tools.sh")
		}
	}
	tmp := t.TempDir()
	o.berth = filepath.Join(tmp, "berth")
	build := exec.Command("go", "build", "-o", o.berth, "./cmd/berth")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building berth: %v\n%s", err, out)
	}
	t.Cleanup(cleanup)
	ctx := context.Background()
	b := newBlob(randomBytes(3, 1<<20))
	for _, name := range []string{"v3-s3", "berth-s3pg-3", "berth-s3pg-redir"} {
		t.Run(name, func(t *testing.T) {
			s, err := startServer(ctx, o, tmp, name, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.stop()
			if want := replicasOf(name) + min(replicasOf(name)-1, 1); len(s.pids()) != want {
				t.Errorf("%d processes %v, want %d", len(s.pids()), s.pids(), want)
			}
			c := newClient(1)
			defer c.CloseIdleConnections()
			if _, err := uploadBlob(ctx, c, s.base, repoPush, bytes.NewReader(b.data), int64(len(b.data)), b.digest); err != nil {
				t.Fatal(err)
			}
			var before int64
			if s.fwd != nil {
				before = s.fwd.Served()
			}
			resp, err := c.Get(s.base + "/v2/" + repoPush + "/blobs/" + b.digest)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, b.data) {
				t.Fatalf("GET the blob: status %d, %d bytes, %v; want 200 and the %d bytes pushed", resp.StatusCode, len(got), err, len(b.data))
			}
			redirected := !strings.HasPrefix(s.base, "http://"+resp.Request.URL.Host)
			if redirected != (s.fwd != nil) {
				t.Errorf("the blob came from %s (server %s)", resp.Request.URL.Host, s.base)
			}
			if s.fwd != nil {
				if via := s.fwd.Served() - before; via > 4096 {
					t.Errorf("berth sent %d bytes for a redirected GET of a %d-byte blob", via, len(b.data))
				}
			}
			if cpu, err := s.cpuSeconds(); err != nil || cpu <= 0 {
				t.Errorf("cpuSeconds() = %v, %v", cpu, err)
			}
		})
	}
}
