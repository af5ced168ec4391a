package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage/fs"
)

// env is berth (registry + cache, in-process, over real stores) in front of a Docker Hub emulator.
type env struct {
	hub   *hubemu.Hub
	url   string
	cache *proxy.Cache
	rule  *proxy.Rule
}

func startHub(t *testing.T, opts hubemu.Options) *hubemu.Hub {
	t.Helper()
	hub, err := hubemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return hub
}

// newEnv starts berth with one docker-hub rule in front of hub; every is the revalidation interval
// (0: always).
func newEnv(t *testing.T, hub *hubemu.Hub, every time.Duration) *env {
	t.Helper()
	blobs, meta := stores(t)
	url, cache, rule := serve(t, hub, blobs, meta, 2*time.Second, func(r *proxy.Rule) { r.Every = every })
	return &env{hub: hub, url: url, cache: cache, rule: rule}
}

// stores opens a blob store and a metadata store in a new directory.
func stores(t *testing.T) (*fs.Store, *sqlite.Store) {
	t.Helper()
	dir := t.TempDir()
	blobs, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlite.Open(context.Background(), dir+"/metadata.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return blobs, meta
}

// serve starts berth (registry and cache, over blobs and meta) with one docker-hub rule in front
// of hub, changed by edit; stall bounds how long an upstream body may send nothing.
func serve(t *testing.T, hub *hubemu.Hub, blobs *fs.Store, meta metadata.Store, stall time.Duration, edit func(*proxy.Rule)) (string, *proxy.Cache, *proxy.Rule) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: "docker-hub", URL: hub.RegistryURL(),
		StallTimeout: stall, HeaderTimeout: max(stall, 5*time.Second)}, log)
	if err != nil {
		t.Fatal(err)
	}
	rule := &proxy.Rule{Prefix: "docker-hub", Source: up, Hosts: []string{"docker.io"}, DockerHub: true,
		MaxStaleness: 24 * time.Hour}
	if edit != nil {
		edit(rule)
	}
	cache := proxy.New([]*proxy.Rule{rule}, blobs, meta, log)
	t.Cleanup(cache.Close)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(cache)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv.URL, cache, rule
}

const accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

type manifest struct {
	Config    struct{ Digest string } `json:"config"`
	Layers    []struct{ Digest string }
	Manifests []struct{ Digest string }
}

// pull fetches a manifest by reference and every blob it names, verifying each against its
// digest, as a container runtime does.
func pull(client *http.Client, base, repo, ref string) error {
	body, err := get(client, base+"/v2/"+repo+"/manifests/"+ref)
	if err != nil {
		return err
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, b := range blobs {
		content, err := get(client, base+"/v2/"+repo+"/blobs/"+b)
		if err != nil {
			return err
		}
		if got := digest.FromBytes(content).String(); got != b {
			return fmt.Errorf("blob %s: got content with digest %s", b, got)
		}
	}
	return nil
}

func get(client *http.Client, url string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	return body, nil
}

func randomLayers(t *testing.T, n, size int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		rand.Read(out[i])
	}
	return out
}

// TestColdPullsCoalesce: 50 concurrent cold pulls of a 3-layer image cost the upstream exactly one
// GET per manifest and per blob. How long they take against one cold pull is a measurement, not a
// test: go run ./bench -only proxy (cold wall time at N = 50 against N = 1).
func TestColdPullsCoalesce(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/app", "v1", randomLayers(t, 3, 2<<20)...)
	if err != nil {
		t.Fatal(err)
	}
	// 6 MiB + config in about a second: the fills are still running when the last clients ask.
	hub.SetThrottle(6 << 20)
	e := newEnv(t, hub, 0)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pull(&http.Client{Transport: &http.Transport{}}, e.url, "docker-hub/app", "v1")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	c := hub.Counts()
	if c.ManifestGet != 1 || c.BlobGet != int64(len(img.Layers)+1) {
		t.Fatalf("upstream requests for %d cold pulls: %d manifest GETs, %d blob GETs; want 1 and %d",
			n, c.ManifestGet, c.BlobGet, len(img.Layers)+1)
	}
	t.Logf("%d concurrent cold pulls; coalesced %d", n, e.cache.Status()[0].Cache.Coalesced)
}

// TestDeploymentHistory replays DESIGN.md §1: ten deployments pull one unchanged tag 42 times.
func TestDeploymentHistory(t *testing.T) {
	pulls := []int{4, 2, 8, 2, 2, 4, 2, 6, 2, 10}
	total := 0
	for _, n := range pulls {
		total += n
	}
	for _, c := range []struct {
		name               string
		every              time.Duration
		minHeads, maxHeads int64
	}{
		// Concurrent pulls of one deployment share one HEAD, so each later deployment costs at
		// least one and at most one per pull.
		{"always", 0, int64(len(pulls) - 1), int64(total - 1)},
		{"ttl 24h", 24 * time.Hour, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			hub := startHub(t, hubemu.Options{Limit: 100, Window: time.Hour})
			if _, err := hub.PushImage("library/api", "prod", randomLayers(t, 2, 64<<10)...); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, hub, c.every)
			for _, n := range pulls {
				var wg sync.WaitGroup
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := pull(http.DefaultClient, e.url, "docker-hub/api", "prod"); err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
			}
			got := hub.Counts()
			if got.ManifestGet != 1 || got.ManifestHead < c.minHeads || got.ManifestHead > c.maxHeads {
				t.Errorf("%d pulls cost the upstream %d manifest GETs and %d HEADs; want 1 GET and %d to %d HEADs",
					total, got.ManifestGet, got.ManifestHead, c.minHeads, c.maxHeads)
			}
			t.Logf("%d pulls in %d deployments: %d manifest GET, %d HEADs, %d blob GETs upstream",
				total, len(pulls), got.ManifestGet, got.ManifestHead, got.BlobGet)
			if got.BlobGet != 3 {
				t.Errorf("blob GETs upstream = %d, want 3 (config + 2 layers, once each)", got.BlobGet)
			}
		})
	}
}

// TestUpstreamFailureServesCache: with the upstream down, failing, rate-limited or its token
// service refusing, every pull of a cached tag succeeds; an uncached tag gets the upstream's reason.
func TestUpstreamFailureServesCache(t *testing.T) {
	for _, c := range []struct {
		name       string
		fault      *hubemu.Fault
		exhaust    bool
		wantStatus int
	}{
		{"down", &hubemu.Fault{Kind: hubemu.Down}, false, http.StatusServiceUnavailable},
		{"5xx", &hubemu.Fault{Kind: hubemu.Status5xx}, false, http.StatusServiceUnavailable},
		{"token 429", &hubemu.Fault{Kind: hubemu.Token429}, false, http.StatusTooManyRequests},
		{"quota exhausted", nil, true, http.StatusTooManyRequests},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Tokens live a second here, so that the token service is asked again under the fault.
			hub := startHub(t, hubemu.Options{Limit: 100, Window: time.Hour, HeadLimitedAtZero: true, TokenTTL: time.Second})
			if _, err := hub.PushImage("library/web", "1.0", randomLayers(t, 1, 1024)...); err != nil {
				t.Fatal(err)
			}
			if _, err := hub.PushImage("library/web", "2.0", randomLayers(t, 1, 1024)...); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, hub, 0)
			if err := pull(http.DefaultClient, e.url, "docker-hub/web", "1.0"); err != nil {
				t.Fatal(err)
			}
			if c.fault != nil {
				hub.SetFault(*c.fault)
			}
			if c.exhaust {
				hub.ExhaustQuota()
			}
			time.Sleep(1100 * time.Millisecond) // every token from before has expired
			// A new client each time, so that no token or connection from before helps.
			for i := range 5 {
				if err := pull(&http.Client{Transport: &http.Transport{}}, e.url, "docker-hub/web", "1.0"); err != nil {
					t.Fatalf("pull %d of the cached tag with the upstream failing: %v", i, err)
				}
			}
			if s := e.cache.Status()[0].Cache; s.StaleServes == 0 {
				t.Errorf("no stale serve counted: %+v", s)
			}
			req, _ := http.NewRequest(http.MethodGet, e.url+"/v2/docker-hub/web/manifests/2.0", nil)
			req.Header.Set("Accept", accept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("uncached tag with the upstream failing: %s %s, want %d", resp.Status, body, c.wantStatus)
			}
			if c.wantStatus == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
			if !bytes.Contains(body, []byte(`"errors"`)) {
				t.Errorf("error is not an OCI error document: %s", body)
			}
		})
	}
}

// TestBadUpstreamBlob: a truncated or corrupt upstream blob reaches no client as a complete
// response, is not cached, and the next request fetches it again.
func TestBadUpstreamBlob(t *testing.T) {
	for _, kind := range []hubemu.FaultKind{hubemu.Truncated, hubemu.Corrupt} {
		t.Run(fmt.Sprint(kind), func(t *testing.T) {
			hub := startHub(t, hubemu.Options{})
			layer := randomLayers(t, 1, 1<<20)[0]
			img, err := hub.PushImage("library/db", "1", layer)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, hub, 0)
			hub.SetFault(hubemu.Fault{Kind: kind, On: hubemu.Blobs, Times: 1})
			url := e.url + "/v2/docker-hub/db/blobs/" + img.Layers[0]
			var wg sync.WaitGroup
			for range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body, err := get(&http.Client{Transport: &http.Transport{}}, url)
					if err == nil && !bytes.Equal(body, layer) {
						t.Errorf("a client received %d wrong bytes as a complete response", len(body))
					}
				}()
			}
			wg.Wait()

			// Nothing bad was cached: with the fault on again, a request fails; the next one fetches
			// the blob again, whole.
			e2 := newEnv(t, hub, 0)
			url2 := e2.url + "/v2/docker-hub/db/blobs/" + img.Layers[0]
			hub.SetFault(hubemu.Fault{Kind: kind, On: hubemu.Blobs, Times: 1})
			// The client sees its 200 cut short, not an error status (nor a complete response).
			if body, err := get(http.DefaultClient, url2); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a bad upstream body: %v (%d bytes), want the response cut short (unexpected EOF)", err, len(body))
			}
			before := hub.Counts().BlobGet
			body, err := get(http.DefaultClient, url2)
			if err != nil || !bytes.Equal(body, layer) {
				t.Fatalf("after the fault: %v (%d bytes)", err, len(body))
			}
			if after := hub.Counts().BlobGet; after != before+1 {
				t.Errorf("the request after a bad fill made %d upstream blob GETs, want 1 (nothing bad was cached)", after-before)
			}
		})
	}
}

// TestPullByDigestFirst: a first pull by digest works, and digests are never asked upstream again.
func TestPullByDigestFirst(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/tool", "1", randomLayers(t, 1, 4096)...)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, 0)
	for range 3 {
		if err := pull(http.DefaultClient, e.url, "docker-hub/library/tool", img.Digest); err != nil {
			t.Fatal(err)
		}
	}
	if c := hub.Counts(); c.ManifestGet != 1 || c.ManifestHead != 0 {
		t.Errorf("3 pulls by digest: %d manifest GETs, %d HEADs upstream; want 1 and 0", c.ManifestGet, c.ManifestHead)
	}
}

// TestMultiArch: an index is cached, and each platform's manifest is fetched when asked, once.
func TestMultiArch(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	idx, err := hub.PushIndex("library/multi", "latest", "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, time.Hour)
	if _, err := get(http.DefaultClient, e.url+"/v2/docker-hub/multi/manifests/latest"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := pull(http.DefaultClient, e.url, "docker-hub/multi", idx.Children[1].Digest); err != nil {
			t.Fatal(err)
		}
	}
	if c := hub.Counts(); c.ManifestGet != 2 {
		t.Errorf("index + one platform pulled 3 times: %d manifest GETs upstream, want 2", c.ManifestGet)
	}
}

// TestQuotaReserve: once the upstream reports the reserve or less remaining, cached tags are no
// longer revalidated.
func TestQuotaReserve(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 10, Window: time.Hour})
	if _, err := hub.PushImage("library/svc", "1", randomLayers(t, 1, 1024)...); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, 0)
	e.rule.QuotaReserve = 5
	if err := pull(http.DefaultClient, e.url, "docker-hub/svc", "1"); err != nil {
		t.Fatal(err)
	}
	hub.SetQuotaRemaining("127.0.0.1", 5)
	if err := pull(http.DefaultClient, e.url, "docker-hub/svc", "1"); err != nil { // HEAD reports 5 left
		t.Fatal(err)
	}
	heads := hub.Counts().ManifestHead
	for range 5 {
		if err := pull(http.DefaultClient, e.url, "docker-hub/svc", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if c := hub.Counts(); c.ManifestHead != heads {
		t.Errorf("at the quota reserve, %d more HEADs were sent; want none", c.ManifestHead-heads)
	}
	if s := e.cache.Status()[0]; s.Cache.QuotaSaves < 5 || !s.Quota.Known || s.Quota.Remaining != 5 {
		t.Errorf("status = %+v", s)
	}
}

// TestMirrorNamespace: containerd mirror requests (?ns=docker.io) reach the docker-hub rule.
func TestMirrorNamespace(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/nginx", "1.27", randomLayers(t, 1, 2048)...)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, 0)
	body, err := get(http.DefaultClient, e.url+"/v2/library/nginx/manifests/1.27?ns=docker.io")
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(body).String(); got != img.Digest {
		t.Fatalf("mirror request returned %s, want %s", got, img.Digest)
	}
	if _, err := get(http.DefaultClient, e.url+"/v2/docker-hub/library/nginx/manifests/"+img.Digest); err != nil {
		t.Fatalf("the mirror request did not fill docker-hub/library/nginx: %v", err)
	}
}

// testWriter sends berth's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// TestRootMirror: with a root mirror (Docker Engine registry-mirrors), root pulls of repositories
// berth does not have go to the mirror rule; berth's own repositories, and pushes, stay local.
func TestRootMirror(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/nginx", "1.27", randomLayers(t, 1, 2048)...)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, 0)
	if err := e.cache.SetMirror("docker-hub"); err != nil {
		t.Fatal(err)
	}
	if err := pull(http.DefaultClient, e.url, "library/nginx", "1.27"); err != nil {
		t.Fatalf("root mirror pull: %v", err)
	}
	body, err := get(http.DefaultClient, e.url+"/v2/docker-hub/library/nginx/manifests/"+img.Digest)
	if err != nil || digest.FromBytes(body).String() != img.Digest {
		t.Fatalf("the root pull did not fill docker-hub/library/nginx: %v", err)
	}

	// A push to a new repository at the root is berth's own, not the mirror's.
	layer := []byte("private layer")
	d := digest.FromBytes(layer)
	resp, err := http.Post(e.url+"/v2/team/api/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push to a new root repository with a mirror on: %s", resp.Status)
	}
	before := hub.Counts()
	content, err := get(http.DefaultClient, e.url+"/v2/team/api/blobs/"+d.String())
	if err != nil || !bytes.Equal(content, layer) {
		t.Fatalf("private blob: %v", err)
	}
	if after := hub.Counts(); after.BlobGet != before.BlobGet || after.BlobHead != before.BlobHead {
		t.Errorf("reading a private repository asked the upstream")
	}
}

// TestMissingUpstreamRepository: Docker Hub answers 401 for a repository that does not exist; the
// client gets MANIFEST_UNKNOWN (404), not an outage.
func TestMissingUpstreamRepository(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	e := newEnv(t, hub, 0)
	resp, err := http.Get(e.url + "/v2/docker-hub/library/nosuchimage/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte("MANIFEST_UNKNOWN")) {
		t.Fatalf("missing upstream repository: %s %s", resp.Status, body)
	}
}
