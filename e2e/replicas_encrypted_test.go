package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestReplicasEncrypted: berth's own encryption at rest on S3, with three replicas behind the
// load balancer: a chunked upload whose chunks (not aligned to segments) land on different
// replicas reads back whole and in ranges; nothing in the bucket holds plaintext; a replica
// without the key refuses to start; `berth encryption rotate` rewrites key records and no blob
// object, after which the new key alone reads everything.
func TestReplicasEncrypted(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	key1, key2 := filepath.Join(keys, "kek1"), filepath.Join(keys, "kek2")
	for _, k := range []string{key1, key2} {
		if out, err := exec.Command(berthBin, "encryption", "keygen", k).CombinedOutput(); err != nil {
			t.Fatalf("berth encryption keygen: %v\n%s", err, out)
		}
	}
	c := startCluster(t, 3, "", "encryption:\n  key_file: "+key1+"\n")
	admin := basicAuth("admin", c.front.AdminPassword())

	secret := encPattern(700_000)
	if _, _, err := c.push(admin, "enc/app", "v1", secret[:300_000]); err != nil {
		t.Fatal(err)
	}
	// A chunked upload through the load balancer: round robin puts each request on another replica.
	resp, b, err := c.send(http.MethodPost, "/v2/enc/app/blobs/uploads/", admin, nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload: %v %v %s", err, resp, b)
	}
	loc, _ := url.Parse(c.front.URL())
	loc, _ = loc.Parse(resp.Header.Get("Location"))
	off := 0
	for _, n := range []int{100_000, 1, 65_537, 200_000} {
		chunk := secret[off : off+n]
		resp, b, err := c.send(http.MethodPatch, loc.String(), admin, chunk, "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH %d bytes at %d: %v %v %s", n, off, err, resp, b)
		}
		off += n
		if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil {
			t.Fatal(err)
		}
	}
	q := loc.Query()
	q.Set("digest", clDigest(secret))
	loc.RawQuery = q.Encode()
	resp, b, err = c.send(http.MethodPut, loc.String(), admin, secret[off:], "Content-Type", "application/octet-stream")
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT the last chunk: %v %v %s", err, resp, b)
	}
	blob := "/v2/enc/app/blobs/" + clDigest(secret)
	wantBlob := func(via string) {
		t.Helper()
		for range 3 { // on each replica
			resp, b, err := c.send(http.MethodGet, via+blob, admin, nil)
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, secret) {
				t.Fatalf("GET the blob: %v %v, %d bytes", err, resp, len(b))
			}
			resp, b, err = c.send(http.MethodGet, via+blob, admin, nil, "Range", "bytes=65530-131080")
			if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, secret[65530:131081]) {
				t.Fatalf("GET a range across segments: %v %v, %d bytes", err, resp, len(b))
			}
		}
	}
	wantBlob(c.front.URL())

	// No plaintext anywhere in the bucket; the key records are there.
	ctx := context.Background()
	cl := c.s3.Client()
	objects := func(prefix string) map[string]string {
		m := map[string]string{}
		p := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(c.s3.Bucket), Prefix: aws.String(prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page.Contents {
				m[aws.ToString(o.Key)] = aws.ToString(o.ETag)
			}
		}
		return m
	}
	all := objects("")
	for key := range all {
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.s3.Bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(out.Body)
		out.Body.Close()
		for _, at := range []int{0, 70_000, 400_000, 650_000} {
			if bytes.Contains(data, secret[at:at+64]) {
				t.Errorf("%s holds plaintext (bytes at %d)", key, at)
			}
		}
	}
	blobsBefore, keysBefore := objects("blobs/"), objects("records/keys/")
	if len(blobsBefore) < 3 || len(keysBefore) != len(blobsBefore) || all["records/encryption"] == "" {
		t.Fatalf("bucket: %d blobs, %d key records, encryption record %q", len(blobsBefore), len(keysBefore), all["records/encryption"])
	}

	// Rotation, with the replicas stopped: key records change, blob objects do not.
	for _, r := range c.replicas {
		r.Stop()
	}
	out, err := exec.Command(berthBin, "encryption", "rotate", "--config", c.front.config,
		"--key-file", key2, "--previous-key-file", key1).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("re-wrapped %d data keys", len(keysBefore))) {
		t.Fatalf("berth encryption rotate: %v\n%s", err, out)
	}
	blobsAfter, keysAfter := objects("blobs/"), objects("records/keys/")
	for k, etag := range blobsBefore {
		if blobsAfter[k] != etag {
			t.Errorf("%s: the rotation rewrote the blob (ETag %s, was %s)", k, blobsAfter[k], etag)
		}
	}
	for k, etag := range keysBefore {
		if keysAfter[k] == etag {
			t.Errorf("%s: the rotation left the key record as it was", k)
		}
	}
	// The old key alone is refused now; the new one alone reads everything.
	r := c.replicas[0]
	cmd := exec.Command(berthBin, "serve", "--config", c.front.config, "--data", r.Data, "--addr", freeAddr(t))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "rotate") {
		t.Errorf("a replica with the old key after the rotation: %v\n%s", err, out)
	}
	r.start("--encryption-key-file", key2)
	wantBlob("http://" + r.Addr)
}
