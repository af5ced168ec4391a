package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/hubemu"
)

// TestMigrateToReplicas: an embedded installation (one berth on its data directory, encrypted at
// rest: pushed images, a pull-through cache, a robot account) moved by `berth migrate` into S3 +
// PostgreSQL, encrypted under the same key, then served by replicas behind HAProxy: every image
// pulls with the digests it had, the cached image pulls with its upstream gone, the robot and
// admin log in with the secrets they had, and the bucket holds no plaintext. A second run copies
// nothing.
func TestMigrateToReplicas(t *testing.T) {
	t.Parallel()
	hub := startHubemu(t, hubemu.Options{})
	cached, err := hub.PushImage("library/app", "v1", bytes.Repeat([]byte("cached layer "), 50000))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "kek")
	if out, err := exec.Command(berthBin, "encryption", "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("berth encryption keygen: %v\n%s", err, out)
	}
	proxy := "encryption:\n  key_file: " + key + "\n" + hubProxy(hub)
	srcConfig := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(srcConfig, []byte(proxy), 0o600); err != nil {
		t.Fatal(err)
	}
	src := &berth{t: t, Data: t.TempDir(), secure: true, config: srcConfig}
	src.start()
	t.Cleanup(src.Stop)
	secret := authRobot(src, "ci", "library/*", "pull,push", "docker-hub/*", "pull,fetch")
	robot := basicAuth("ci", secret)
	one := &cluster{t: t, front: src}
	images := map[string]string{} // repo:tag -> digest
	for i, repo := range []string{"library/web", "library/worker"} {
		d, _, err := one.push(robot, repo, "1.0", bytes.Repeat([]byte{byte('a' + i)}, 3<<20+i))
		if err != nil {
			t.Fatal(err)
		}
		images[repo] = d
	}
	if err := one.pull(robot, "docker-hub/library/app", "v1", cached.Digest); err != nil {
		t.Fatalf("pull through the cache: %v", err)
	}
	// While a berth serves the directory, migrate refuses (its lock), before it touches a target.
	unreachable := filepath.Join(t.TempDir(), "target.yaml")
	if err := os.WriteFile(unreachable, []byte("storage:\n  driver: s3\n  s3:\n    bucket: b\n    region: r\n"+
		"    endpoint: http://127.0.0.1:9\n    path_style: true\nmetadata:\n  driver: postgres\n  dsn_env: BERTH_TEST_NO_DSN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(berthBin, "migrate", "--from", src.Data, "--config", unreachable).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "is a berth serving it? stop it first") {
		t.Errorf("berth migrate while berth serves the directory: %v\n%s", err, out)
	}
	src.Stop()

	var out string
	c := startClusterOn(t, 2, "", proxy, func(config string) string {
		out = migrateCmd(t, src.Data, config)
		if !strings.Contains(out, "migrated:") || !strings.Contains(out, "(6 copied,") {
			t.Errorf("berth migrate printed:\n%s\nwant 6 blobs copied (2 images, the cached one)", out)
		}
		return src.Data
	})
	t.Logf("berth migrate:\n%s", out)
	hub.Close() // the cache serves what it had
	for repo, d := range images {
		if err := c.pull(robot, repo, "1.0", d); err != nil {
			t.Errorf("pull %s after the migration: %v", repo, err)
		}
	}
	if err := c.pull(robot, "docker-hub/library/app", "v1", cached.Digest); err != nil {
		t.Errorf("pull of the cached image after the migration, its upstream gone: %v", err)
	}
	admin := basicAuth("admin", c.front.AdminPassword())
	if resp, body, err := c.send("GET", "/v2/_catalog", admin, nil); err != nil || resp.StatusCode != 200 ||
		!strings.Contains(string(body), "library/web") {
		t.Errorf("catalog as admin after the migration: %v %v %s", resp, err, body)
	}
	// Nothing of what was pushed is in the bucket as plaintext.
	for _, sample := range [][]byte{bytes.Repeat([]byte("a"), 1<<10), bytes.Repeat([]byte("cached layer "), 100), []byte(`"architecture":"amd64"`)} {
		if k := bucketHolding(t, c.s3, sample); k != "" {
			t.Errorf("the object %s holds plaintext of a migrated blob", k)
		}
	}
	// Run again (as after a stop): nothing copied twice, the counts still the same.
	if again := migrateCmd(t, src.Data, c.front.config); !strings.Contains(again, "(0 copied, 0 bytes; 6 there already)") {
		t.Errorf("berth migrate again printed:\n%s", again)
	}
}

// migrateCmd runs berth migrate and returns its standard output.
func migrateCmd(t *testing.T, from, config string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(berthBin, "migrate", "--from", from, "--config", config)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("berth migrate: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	failOnRace(t, stderr.String())
	return stdout.String()
}

// bucketHolding returns the key of an object of srv's bucket that contains sample, or "".
func bucketHolding(t *testing.T, srv enginetest.S3Server, sample []byte) string {
	t.Helper()
	ctx := context.Background()
	cl := srv.Client()
	p := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(srv.Bucket), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, sample) {
				return aws.ToString(o.Key)
			}
		}
	}
	return ""
}
