package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentSameBlobAndTag pushes one blob and one tag from many clients at once, over real
// HTTP: every push must succeed, the blob must be intact, and the tag must point at one of the
// manifests that were pushed to it.
func TestConcurrentSameBlobAndTag(t *testing.T) {
	b := startBerth(t)
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	blobDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	configDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(config))

	const clients = 32
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	manifests := make([]string, clients)
	for i := range clients {
		manifests[i] = fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
			`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}],`+
			`"annotations":{"client":"%d"}}`, configDigest, len(config), blobDigest, len(blob), i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pushBlobChunks(b.URL(), "race/app", blob, blobDigest, 64<<10); err != nil {
				errs <- err
				return
			}
			if err := pushBlobChunks(b.URL(), "race/app", config, configDigest, 1<<20); err != nil {
				errs <- err
				return
			}
			if err := putManifestRef(b.URL(), "race/app", "latest", manifests[i]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	got := mustGet(t, b.URL()+"/v2/race/app/blobs/"+blobDigest)
	if !bytes.Equal(got, blob) {
		t.Fatalf("blob served after concurrent pushes differs from what was pushed (%d bytes)", len(got))
	}
	tagged := string(mustGet(t, b.URL()+"/v2/race/app/manifests/latest"))
	found := false
	for _, m := range manifests {
		found = found || m == tagged
	}
	if !found {
		t.Fatalf("tag points at a manifest nobody pushed: %s", tagged)
	}
}

// pushBlobChunks pushes content with POST, PATCH chunks carrying Content-Range, and PUT ?digest=.
func pushBlobChunks(base, repo string, content []byte, digest string, chunk int) error {
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	for off := 0; off < len(content); off += chunk {
		end := min(off+chunk, len(content))
		req, _ := http.NewRequest(http.MethodPatch, base+loc, bytes.NewReader(content[off:end]))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, end-1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("PATCH %d-%d: %s", off, end-1, resp.Status)
		}
		loc = resp.Header.Get("Location")
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, base+loc+sep+"digest="+digest, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s: %s %s", digest, resp.Status, body)
	}
	return nil
}

func putManifestRef(base, repo, ref, manifest string) error {
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, strings.NewReader(manifest))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT manifest %s: %s %s", ref, resp.Status, body)
	}
	return nil
}

func mustGet(t *testing.T, url string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v %s", url, resp.Status, err, body)
	}
	return body
}
