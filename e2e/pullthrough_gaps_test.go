package e2e

// Pull-through behaviours that no test held before (issue 8, test gaps): a tag moved upstream
// under each revalidation policy, fetch vs pull with authentication, max_staleness, a tag deleted
// upstream, and kill -9 in the middle of a fill. Every "zero or one upstream request" is the
// emulator's own count (hub.Counts()).

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// gapConfig is one rule per policy on the same emulated Docker Hub.
const gapConfig = `proxy:
  defaults: false
  rules:
    - prefix: hub-always
      upstream: %[1]s
      docker_hub: true
      revalidate: always
      max_staleness: %[2]s
    - prefix: hub-interval
      upstream: %[1]s
      docker_hub: true
      revalidate: interval:%[3]s
    - prefix: hub-ttl
      upstream: %[1]s
      docker_hub: true
      revalidate: ttl:%[3]s
`

// gapManifest GETs repo:ref from berth (authz may be "") and returns the response and what
// reached the upstream meanwhile.
func gapManifest(t *testing.T, hub *hubemu.Hub, b *berth, authz, repo, ref string) (phResp, hubemu.Counts) {
	t.Helper()
	before := hub.Counts()
	r := phDo(t, http.MethodGet, b.URL()+"/v2/"+repo+"/manifests/"+ref, authz, "Accept", clAcceptAll)
	return r, ptDelta(before, hub.Counts())
}

// gapWant checks that r is the manifest want.
func gapWant(t *testing.T, what string, r phResp, want string) {
	t.Helper()
	if r.Status != http.StatusOK || clDigest(r.Body) != want || r.Header.Get("Docker-Content-Digest") != want {
		t.Errorf("%s: %d, digest %s (header %s); want 200 and %s", what, r.Status, clDigest(r.Body), r.Header.Get("Docker-Content-Digest"), want)
	}
}

// TestPullThroughTagMoved: a tag that moves upstream is served with its new digest: under
// "always" at the next pull (a manifest HEAD, then a GET of the new manifest); under
// "interval:5s" and "ttl:5s" not before the interval has passed since the last check (with no
// upstream request at all meanwhile), and at the first pull after it.
func TestPullThroughTagMoved(t *testing.T) {
	const every = 5 * time.Second
	crane := tool(t, "crane")
	hub := phHub(t, hubemu.Options{})
	old := ptImage(t, hub, "library/moving", "1")
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(gapConfig, hub.RegistryURL(), "720h", every)))
	b := startBerth(t, "--config", cfg)
	rules := []string{"hub-always", "hub-interval", "hub-ttl"}

	checked := map[string]time.Time{} // when each rule last checked the tag, at the latest
	for _, rule := range rules {
		r, d := gapManifest(t, hub, b, "", rule+"/moving", "1")
		checked[rule] = time.Now()
		gapWant(t, rule+": first pull", r, old.Digest)
		if d.ManifestGet != 1 {
			t.Errorf("%s: first pull: upstream %s; want one manifest GET", rule, ptFmt(d))
		}
	}
	// New layers: a new manifest under the same tag.
	moved, err := hub.PushImage("library/moving", "1", clTar(t, map[string]string{"file.txt": "moved\n"}))
	if err != nil || moved.Digest == old.Digest {
		t.Fatalf("pushing the new image: %v (digest %s, the old one %s)", err, moved.Digest, old.Digest)
	}

	clStep(t, "always", func(t *testing.T) {
		r, d := gapManifest(t, hub, b, "", "hub-always/moving", "1")
		gapWant(t, "always, after the move", r, moved.Digest)
		if d.ManifestHead != 1 || d.ManifestGet != 1 {
			t.Errorf("always, after the move: upstream %s; want one manifest HEAD and one GET", ptFmt(d))
		}
		// A real client sees it too, with nothing more upstream than the HEAD.
		out, err := ptRun(t.TempDir(), crane, "digest", b.Addr+"/hub-always/moving:1")
		if err != nil || strings.TrimSpace(out) != moved.Digest {
			t.Errorf("crane digest hub-always/moving:1 = %q (%v), want %s", out, err, moved.Digest)
		}
	})
	for _, rule := range []string{"hub-interval", "hub-ttl"} {
		clStep(t, rule, func(t *testing.T) {
			// Before the interval: the cached digest, and nothing upstream, not even a token.
			r, d := gapManifest(t, hub, b, "", rule+"/moving", "1")
			if since := time.Since(checked[rule]); since >= every {
				t.Fatalf("%v passed since the last check before the test could look (the machine is too slow for a %v interval)", since, every)
			}
			gapWant(t, rule+", before the interval", r, old.Digest)
			if !ptNothing(d) {
				t.Errorf("%s, before the interval: upstream %s; want nothing", rule, ptFmt(d))
			}
		})
	}
	time.Sleep(time.Until(checked["hub-ttl"].Add(every + 200*time.Millisecond)))
	for _, rule := range []string{"hub-interval", "hub-ttl"} {
		clStep(t, rule+"-expired", func(t *testing.T) {
			r, d := gapManifest(t, hub, b, "", rule+"/moving", "1")
			gapWant(t, rule+", after the interval", r, moved.Digest)
			if d.ManifestHead != 1 || d.ManifestGet != 1 {
				t.Errorf("%s, after the interval: upstream %s; want one manifest HEAD and one GET", rule, ptFmt(d))
			}
			// Checked just now: nothing upstream again.
			r, d = gapManifest(t, hub, b, "", rule+"/moving", "1")
			gapWant(t, rule+", just checked", r, moved.Digest)
			if !ptNothing(d) {
				t.Errorf("%s, just checked: upstream %s; want nothing", rule, ptFmt(d))
			}
		})
	}
}

// TestPullThroughMaxStaleness: with the upstream failing (503), a cached tag is served (a stale
// serve) while its last successful check is within max_staleness (3s here), and after that the
// client gets the upstream's error, 503 UNAVAILABLE, not the stale copy. Once the upstream is
// back the tag is served again, checked.
func TestPullThroughMaxStaleness(t *testing.T) {
	const staleness = 3 * time.Second
	hub := phHub(t, hubemu.Options{})
	img := ptImage(t, hub, "library/flaky", "1")
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(gapConfig, hub.RegistryURL(), staleness, "1h")))
	b := startBerth(t, "--config", cfg)
	e := &ptEnv{hub: hub, b: b}

	r, _ := gapManifest(t, hub, b, "", "hub-always/flaky", "1")
	checked := time.Now()
	gapWant(t, "first pull", r, img.Digest)
	hub.SetFault(hubemu.Fault{Kind: hubemu.Status5xx, On: hubemu.Manifests})
	stale := e.status(t, "hub-always").Cache.StaleServes

	r, d := gapManifest(t, hub, b, "", "hub-always/flaky", "1")
	if time.Since(checked) >= staleness {
		t.Fatalf("max_staleness (%v) passed before the test could look: the machine is too slow", staleness)
	}
	gapWant(t, "upstream failing, within max_staleness", r, img.Digest)
	if d.ManifestHead != 1 || d.ManifestGet != 0 {
		t.Errorf("within max_staleness: upstream %s; want the one manifest HEAD that failed", ptFmt(d))
	}
	if s := e.status(t, "hub-always").Cache.StaleServes; s != stale+1 {
		t.Errorf("stale serves %d -> %d; want one more", stale, s)
	}

	time.Sleep(time.Until(checked.Add(staleness + 200*time.Millisecond)))
	r, d = gapManifest(t, hub, b, "", "hub-always/flaky", "1")
	t.Logf("upstream failing, past max_staleness: %s; upstream %s", r, ptFmt(d))
	if r.Status != http.StatusServiceUnavailable || phCode(r.Body) != "UNAVAILABLE" || bytes.Contains(r.Body, []byte(`"schemaVersion"`)) {
		t.Errorf("upstream failing, past max_staleness: %s; want 503 UNAVAILABLE, not the stale manifest", r)
	}
	if s := e.status(t, "hub-always").Cache.StaleServes; s != stale+1 {
		t.Errorf("past max_staleness, stale serves %d -> %d; want no more", stale+1, s)
	}

	hub.SetFault()
	r, d = gapManifest(t, hub, b, "", "hub-always/flaky", "1")
	gapWant(t, "upstream back", r, img.Digest)
	if d.ManifestHead != 1 || d.ManifestGet != 0 {
		t.Errorf("upstream back: upstream %s; want one manifest HEAD (the digest did not change)", ptFmt(d))
	}
}

// gapSecureConfig is gapConfig's always rule alone (with a ttl rule), for berth with auth.
const gapSecureConfig = `proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %[1]s
      docker_hub: true
      revalidate: always
    - prefix: hub-ttl
      upstream: %[1]s
      docker_hub: true
      revalidate: ttl:%[2]s
`

// TestPullThroughFetchGrant, with authentication on: a robot with pull only on the cache prefix
// causes zero upstream requests, on a miss (refused: 404 saying the fetch grant is needed, to
// plain HTTP and to crane) and on a cached tag (served, not even revalidated); a robot with
// pull and fetch fetches (and revalidates). Then the tag is deleted upstream: the next
// revalidation removes it from the cache, so that the pull-only robot (which never makes berth
// ask) is no longer served it and tag lists no longer show it; the manifest stays by digest.
// Under ttl, a deleted tag is served until its ttl runs out, then not.
func TestPullThroughFetchGrant(t *testing.T) {
	const ttl = 4 * time.Second
	crane := tool(t, "crane")
	hub := phHub(t, hubemu.Options{})
	img := ptImage(t, hub, "library/app", "1")
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(gapSecureConfig, hub.RegistryURL(), ttl)))
	b := startSecureBerth(t, "--config", cfg)
	pullSecret := phRobot(t, b, "puller", "docker-hub/app", "docker-hub/*", "pull", "hub-ttl/*", "pull")
	fetchSecret := phRobot(t, b, "fetcher", "docker-hub/app", "docker-hub/*", "pull,fetch", "hub-ttl/*", "pull,fetch")
	puller, fetcher := basicAuth("puller", pullSecret), basicAuth("fetcher", fetchSecret)
	pullDir, fetchDir := t.TempDir(), t.TempDir()
	authRun(t, pullDir, crane, "auth", "login", b.Addr, "-u", "puller", "-p", pullSecret)
	authRun(t, fetchDir, crane, "auth", "login", b.Addr, "-u", "fetcher", "-p", fetchSecret)
	ref := b.Addr + "/docker-hub/app:1"
	cranePull := func(dir, layout string) (string, error) {
		stdout, stderr, err := authExec(dir, crane, "pull", "--format", "oci", ref, filepath.Join(dir, layout))
		return stdout + stderr, err
	}

	clStep(t, "pull-only-miss", func(t *testing.T) {
		r, d := gapManifest(t, hub, b, puller, "docker-hub/app", "1")
		t.Logf("pull-only robot, uncached tag: %s; upstream %s", r, ptFmt(d))
		if r.Status != http.StatusNotFound || phCode(r.Body) != "MANIFEST_UNKNOWN" || !bytes.Contains(r.Body, []byte("fetch grant")) {
			t.Errorf("pull-only robot, uncached tag: %s; want 404 MANIFEST_UNKNOWN saying the fetch grant is needed", r)
		}
		before := hub.Counts()
		rb := phDo(t, http.MethodGet, b.URL()+"/v2/docker-hub/app/blobs/"+img.Layers[0], puller)
		if rb.Status != http.StatusNotFound || phCode(rb.Body) != "BLOB_UNKNOWN" || !bytes.Contains(rb.Body, []byte("fetch grant")) {
			t.Errorf("pull-only robot, uncached blob: %s; want 404 BLOB_UNKNOWN saying the fetch grant is needed", rb)
		}
		out, err := cranePull(pullDir, "miss")
		if err == nil {
			t.Fatalf("crane pulled an uncached image as a pull-only robot:\n%s", out)
		}
		authMentions(t, "crane pull of an uncached image as a pull-only robot", out, "MANIFEST_UNKNOWN", "fetch grant")
		if d := ptDelta(before, hub.Counts()); !ptNothing(d) || !ptNothing(ptDelta(hubemu.Counts{}, hub.Counts())) {
			t.Errorf("a pull-only robot's misses reached the upstream: %s (in all: %s); want nothing", ptFmt(d), ptFmt(hub.Counts()))
		}
	})

	clStep(t, "fetch", func(t *testing.T) {
		before := hub.Counts()
		if out, err := cranePull(fetchDir, "fetched"); err != nil {
			t.Fatalf("crane pull as the robot with fetch: %v\n%s", err, out)
		}
		ptCheckLayout(t, filepath.Join(fetchDir, "fetched"), img)
		if d := ptDelta(before, hub.Counts()); d.ManifestGet != 1 || d.BlobGet != 3 {
			t.Errorf("cold pull with fetch: upstream %s; want 1 manifest GET and 3 blob GETs", ptFmt(d))
		}
		// The ttl rule too, for the deletion below.
		if r, _ := gapManifest(t, hub, b, fetcher, "hub-ttl/app", "1"); r.Status != http.StatusOK {
			t.Fatalf("GET hub-ttl/app:1 with fetch: %s", r)
		}
	})

	clStep(t, "pull-only-cached", func(t *testing.T) {
		before := hub.Counts()
		if out, err := cranePull(pullDir, "cached"); err != nil {
			t.Fatalf("crane pull of a cached image as a pull-only robot: %v\n%s", err, out)
		}
		ptCheckLayout(t, filepath.Join(pullDir, "cached"), img)
		if d := ptDelta(before, hub.Counts()); !ptNothing(d) {
			t.Errorf("a pull-only robot's pull of a cached image: upstream %s; want nothing (not even the revalidation)", ptFmt(d))
		}
		before = hub.Counts()
		if out, err := cranePull(fetchDir, "again"); err != nil {
			t.Fatalf("crane pull as the robot with fetch: %v\n%s", err, out)
		}
		if d := ptDelta(before, hub.Counts()); d.ManifestHead != 1 || d.ManifestGet != 0 || d.BlobGet != 0 {
			t.Errorf("warm pull with fetch under always: upstream %s; want one manifest HEAD", ptFmt(d))
		}
	})

	clStep(t, "deleted-upstream", func(t *testing.T) {
		if err := hub.DeleteTag("library/app", "1"); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		// Until someone with fetch makes berth look, the cache cannot know.
		r, d := gapManifest(t, hub, b, fetcher, "docker-hub/app", "1")
		t.Logf("the robot with fetch, after the tag was deleted upstream: %s; upstream %s", r, ptFmt(d))
		if r.Status != http.StatusNotFound || phCode(r.Body) != "MANIFEST_UNKNOWN" {
			t.Errorf("a tag deleted upstream: %s; want 404 MANIFEST_UNKNOWN", r)
		}
		if d.ManifestHead != 1 {
			t.Errorf("a tag deleted upstream: upstream %s; want the one manifest HEAD that found it gone", ptFmt(d))
		}
		r, d = gapManifest(t, hub, b, puller, "docker-hub/app", "1")
		if r.Status != http.StatusNotFound || !ptNothing(d) {
			t.Errorf("the pull-only robot, after berth saw the tag gone: %s, upstream %s; want 404 and nothing upstream (the cached tag is gone)", r, ptFmt(d))
		}
		tags := phDo(t, http.MethodGet, b.URL()+"/v2/docker-hub/app/tags/list", puller)
		if tags.Status != http.StatusOK || bytes.Contains(tags.Body, []byte(`"1"`)) {
			t.Errorf("the pull-only robot's tag list after the deletion: %s; want it without tag 1", tags)
		}
		// The manifest stays, by digest (digests are immutable), for everyone who may pull.
		r, d = gapManifest(t, hub, b, puller, "docker-hub/app", img.Digest)
		gapWant(t, "by digest after the tag was deleted upstream", r, img.Digest)
		if !ptNothing(d) {
			t.Errorf("by digest after the deletion: upstream %s; want nothing", ptFmt(d))
		}

		// Under ttl: served until the ttl since the last check runs out, then gone.
		r, d = gapManifest(t, hub, b, fetcher, "hub-ttl/app", "1")
		gapWant(t, "ttl, tag deleted upstream, within the ttl", r, img.Digest)
		if !ptNothing(d) {
			t.Errorf("ttl, within the ttl: upstream %s; want nothing", ptFmt(d))
		}
		time.Sleep(time.Until(deleted.Add(ttl + 200*time.Millisecond)))
		r, d = gapManifest(t, hub, b, fetcher, "hub-ttl/app", "1")
		if r.Status != http.StatusNotFound || d.ManifestHead != 1 {
			t.Errorf("ttl, tag deleted upstream, past the ttl: %s, upstream %s; want 404 after one manifest HEAD", r, ptFmt(d))
		}
		if r, _ := gapManifest(t, hub, b, puller, "hub-ttl/app", "1"); r.Status != http.StatusNotFound {
			t.Errorf("ttl, the pull-only robot after berth saw the tag gone: %s; want 404", r)
		}
	})
}

// TestPullThroughKillDuringFill: berth is killed (SIGKILL) while a slow upstream body streams to
// four waiting clients, with and without encryption at rest. Each client's download fails (a cut
// body, a prefix of the blob, never a complete wrong one). After the restart no temporary fill
// file or spool is left in the data directory, the blob is not there half (absent, or whole and
// right), and the next pull fetches it once, whole.
func TestPullThroughKillDuringFill(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			hub := phHub(t, hubemu.Options{})
			layer := make([]byte, 6<<20)
			rand.Read(layer)
			img, err := hub.PushImage("library/big", "1", layer)
			if err != nil {
				t.Fatal(err)
			}
			d := img.Layers[0]
			cfg := filepath.Join(t.TempDir(), "berth.yaml")
			clWriteFile(t, cfg, []byte(fmt.Sprintf(phHubConfig, hub.RegistryURL(), "")))
			args := []string{"--config", cfg}
			if encrypted {
				key := filepath.Join(t.TempDir(), "kek")
				if out, err := exec.Command(berthBin, "encryption", "keygen", key).CombinedOutput(); err != nil {
					t.Fatalf("berth encryption keygen: %v\n%s", err, out)
				}
				args = append(args, "--encryption-key-file", key)
			}
			b := startBerth(t, args...)
			if r := phDo(t, http.MethodGet, b.URL()+"/v2/docker-hub/big/manifests/1", "", "Accept", clAcceptAll); r.Status != http.StatusOK {
				t.Fatalf("GET docker-hub/big:1: %s", r)
			}
			hub.SetThrottle(1 << 20) // 6 s for the layer: the kill lands in the middle

			type result struct {
				status int
				got    int
				err    error
				prefix bool
			}
			results := make(chan result, 4)
			var started sync.WaitGroup
			for range 4 {
				started.Add(1)
				go func() {
					resp, err := (&http.Client{Transport: &http.Transport{}}).Get(b.URL() + "/v2/docker-hub/big/blobs/" + d)
					if err != nil {
						started.Done()
						results <- result{err: err}
						return
					}
					defer resp.Body.Close()
					buf := make([]byte, 64<<10)
					n, rerr := io.ReadAtLeast(resp.Body, buf, 1)
					started.Done()
					got := append([]byte{}, buf[:n]...)
					if rerr == nil {
						var rest []byte
						rest, rerr = io.ReadAll(resp.Body)
						got = append(got, rest...)
					}
					results <- result{resp.StatusCode, len(got), rerr, bytes.HasPrefix(layer, got)}
				}()
			}
			started.Wait() // every client has its first bytes
			for hub.Counts().BlobBytes < 2<<20 {
				time.Sleep(20 * time.Millisecond)
			}
			temps, _ := filepath.Glob(filepath.Join(b.Data, "uploads", "put-*"))
			b.Kill()
			t.Logf("killed berth with %d of %d bytes sent by the upstream; temporary files then: %v", hub.Counts().BlobBytes, len(layer), temps)
			if len(temps) == 0 {
				t.Fatalf("no fill file in %s/uploads at the kill: the test did not kill berth in the middle of a fill", b.Data)
			}
			for range 4 {
				r := <-results
				t.Logf("a waiting client: status %d, %d bytes, err %v", r.status, r.got, r.err)
				if r.err == nil || r.got >= len(layer) || !r.prefix {
					t.Errorf("a client waiting for the fill at the kill: status %d, %d bytes (a prefix of the blob: %v), err %v; want a cut prefix",
						r.status, r.got, r.prefix, r.err)
				}
			}

			hub.SetThrottle(0)
			b.start(args...)
			if left, _ := filepath.Glob(filepath.Join(b.Data, "uploads", "put-*")); len(left) > 0 {
				t.Errorf("temporary files after the restart: %v", left)
			}
			if files, _ := phFiles(t, b.Data, d); len(files) > 0 && !encrypted {
				if got, err := os.ReadFile(files[0]); err != nil || !bytes.Equal(got, layer) {
					t.Errorf("after the restart the blob file holds %d bytes that are not the blob (%v)", len(got), err)
				}
			} else if len(files) > 0 {
				t.Errorf("after the restart a blob file is there for a fill that never finished: %v", files)
			}
			before := hub.Counts()
			r := phDo(t, http.MethodGet, b.URL()+"/v2/docker-hub/big/blobs/"+d, "")
			if r.Status != http.StatusOK || r.Err != nil || !bytes.Equal(r.Body, layer) {
				t.Errorf("the pull after the restart: %d, %d bytes, %v; want the blob whole", r.Status, len(r.Body), r.Err)
			}
			if dd := ptDelta(before, hub.Counts()); dd.BlobGet != 1 {
				t.Errorf("the pull after the restart: upstream %s; want one blob GET", ptFmt(dd))
			}
			before = hub.Counts()
			if r := phDo(t, http.MethodGet, b.URL()+"/v2/docker-hub/big/blobs/"+d, ""); r.Status != http.StatusOK || !bytes.Equal(r.Body, layer) {
				t.Errorf("a second pull: %d, %d bytes", r.Status, len(r.Body))
			}
			if dd := ptDelta(before, hub.Counts()); !ptNothing(dd) {
				t.Errorf("a second pull: upstream %s; want nothing", ptFmt(dd))
			}
			for _, bad := range []string{"panic:", "fatal error", "DATA RACE"} {
				if strings.Contains(b.Log(), bad) {
					t.Errorf("berth logged %q:\n%s", bad, b.Log())
				}
			}
		})
	}
}
