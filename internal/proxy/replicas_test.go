package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata/postgres"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/proxy"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// replicas starts n berths (registry + cache) that share one blob store and one metadata store,
// as replicas on S3 and PostgreSQL do, each with its own cache and upstream client, coordinated
// through the shared store. edit (if not nil) changes each one's rule. It returns their URLs,
// caches and the shared store.
func replicas(t *testing.T, hub *hubemu.Hub, n int, edit func(*proxy.Rule)) ([]string, []*proxy.Cache, *sqlite.Store) {
	t.Helper()
	blobs, meta := stores(t)
	var urls []string
	var caches []*proxy.Cache
	for i := range n {
		url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, edit)
		cache.ShareWith(meta, string(rune('a'+i)))
		urls = append(urls, url)
		caches = append(caches, cache)
	}
	return urls, caches, meta
}

// TestReplicasColdPullsCoalesce: 3 replicas × 10 concurrent cold pulls of a 3-layer image cost the
// upstream one manifest GET and one GET per blob, as one replica's 60 would; and revalidating the
// tag afterwards costs one HEAD.
func TestReplicasColdPullsCoalesce(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/app", "v1", randomLayers(t, 3, 1<<20)...)
	if err != nil {
		t.Fatal(err)
	}
	hub.SetThrottle(3 << 20) // the fills run for about a second: every replica asks meanwhile
	urls, _, _ := replicas(t, hub, 3, nil)
	pullAll := func() {
		var wg sync.WaitGroup
		for _, u := range urls {
			for range 10 {
				wg.Go(func() {
					if err := pull(&http.Client{Transport: &http.Transport{}}, u, "docker-hub/app", "v1"); err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
	}
	pullAll()
	c := hub.Counts()
	if c.ManifestGet != 1 || c.BlobGet != int64(len(img.Layers)+1) {
		t.Fatalf("upstream requests for 3 replicas × 10 cold pulls: %d manifest GETs, %d blob GETs; want 1 and %d",
			c.ManifestGet, c.BlobGet, len(img.Layers)+1)
	}
	hub.ResetCounts()
	pullAll() // revalidate: always
	if c := hub.Counts(); c.ManifestGet != 0 || c.BlobGet != 0 || c.ManifestHead < 1 || c.ManifestHead > 3 {
		t.Errorf("warm pulls on 3 replicas: %d manifest HEADs, %d GETs, %d blob GETs; want 1 to 3 HEADs (a replica that finds the tag checked since its pull began asks nothing) and no GET",
			c.ManifestHead, c.ManifestGet, c.BlobGet)
	}
}

// TestReplicasFillHolderDies: a replica that holds a blob's lease and dies (stops renewing it) is
// replaced when the lease expires: the waiting replica downloads the blob itself and its client
// gets it.
func TestReplicasFillHolderDies(t *testing.T) {
	defer proxy.SetLeaseTiming(time.Second, 300*time.Millisecond, 50*time.Millisecond)()
	hub := startHub(t, hubemu.Options{})
	if _, err := hub.PushImage("library/app", "v1", randomLayers(t, 1, 1<<20)...); err != nil {
		t.Fatal(err)
	}
	urls, _, meta := replicas(t, hub, 1, nil)
	// The manifest first, so that the blob's fill is planned with its declared size.
	body, err := get(http.DefaultClient, urls[0]+"/v2/docker-hub/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0].Digest
	// A replica that died holding the layer's lease: nobody renews it.
	if got, err := meta.AcquireLease(context.Background(), proxy.LeaseKey("docker-hub/library/app", layer), "dead", time.Second); err != nil || !got {
		t.Fatalf("taking the lease as the dead replica: %v, %v", got, err)
	}
	hub.ResetCounts()
	start := time.Now()
	content, err := get(http.DefaultClient, urls[0]+"/v2/docker-hub/app/blobs/"+layer)
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	if len(content) != 1<<20 {
		t.Errorf("got %d bytes", len(content))
	}
	if c := hub.Counts(); c.BlobGet != 1 {
		t.Errorf("%d upstream blob GETs, want 1 (after the dead holder's lease expired)", c.BlobGet)
	}
	// Not a timing test: only that the replica did wait for the lease rather than ignore it.
	if waited < 500*time.Millisecond {
		t.Errorf("the blob came after %v: the replica did not wait for the dead holder's lease", waited)
	}
}

// TestReplicasShareQuota: the quota one replica learns from the upstream holds on the others: a
// replica that never talked to the upstream keeps the quota reserve (no revalidation HEAD) once
// another one saw the quota at the reserve.
func TestReplicasShareQuota(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 10, Window: time.Hour})
	if _, err := hub.PushImage("library/svc", "1", randomLayers(t, 1, 1024)...); err != nil {
		t.Fatal(err)
	}
	urls, caches, _ := replicas(t, hub, 2, func(r *proxy.Rule) { r.QuotaReserve = 5 })
	if err := pull(http.DefaultClient, urls[0], "docker-hub/svc", "1"); err != nil {
		t.Fatal(err)
	}
	hub.SetQuotaRemaining("127.0.0.1", 5)
	if err := pull(http.DefaultClient, urls[0], "docker-hub/svc", "1"); err != nil { // HEAD reports 5 left
		t.Fatal(err)
	}
	heads := hub.Counts().ManifestHead
	for range 5 {
		if err := pull(http.DefaultClient, urls[1], "docker-hub/svc", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if c := hub.Counts(); c.ManifestHead != heads {
		t.Errorf("the other replica sent %d HEADs at the quota reserve that the first one saw; want none", c.ManifestHead-heads)
	}
	if s := caches[1].Status()[0]; s.Cache.QuotaSaves != 5 {
		t.Errorf("the other replica's status: %+v; want 5 quota saves", s.Cache)
	}
}

// TestReplicasLeaseReleaseWakes: on PostgreSQL, a replica waiting on another's fill is woken by the
// holder's message that it let go of the lease (proxy.LeaseChannel), not by its poll: with the
// poll slowed to an hour, 2 replicas × 5 concurrent cold pulls still all get the image, and the
// upstream is asked once per blob.
func TestReplicasLeaseReleaseWakes(t *testing.T) {
	defer proxy.SetLeaseTiming(15*time.Second, 5*time.Second, time.Hour)()
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/app", "v1", randomLayers(t, 2, 1<<20)...)
	if err != nil {
		t.Fatal(err)
	}
	hub.SetThrottle(2 << 20) // each blob's fill lasts about half a second: the other replica waits
	dsn := enginetest.Postgres(t)
	blobs, _ := stores(t)
	ctx, cancel := context.WithCancel(context.Background())
	var listening sync.WaitGroup
	t.Cleanup(func() { cancel(); listening.Wait() })
	var urls []string
	for i := range 2 {
		meta, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, nil)
		cache.ShareWith(meta, string(rune('a'+i)))
		ready := make(chan struct{})
		listening.Go(func() {
			meta.Listen(ctx, []string{proxy.LeaseChannel}, func() { close(ready) }, func(_, key string) { cache.Released(key) })
		})
		<-ready
		urls = append(urls, url)
	}
	pulled := make(chan error, 10)
	for _, u := range urls {
		for range 5 {
			go func() { pulled <- pull(&http.Client{Transport: &http.Transport{}}, u, "docker-hub/app", "v1") }()
		}
	}
	timeout := time.After(2 * time.Minute) // a hang, not a timing: the poll would take an hour
	for range 10 {
		select {
		case err := <-pulled:
			if err != nil {
				t.Error(err)
			}
		case <-timeout:
			t.Fatal("pulls waiting on the other replica's fill were not woken when it let go of its lease")
		}
	}
	if c := hub.Counts(); c.ManifestGet != 1 || c.BlobGet != int64(len(img.Layers)+1) {
		t.Errorf("upstream: %d manifest GETs, %d blob GETs; want 1 and %d", c.ManifestGet, c.BlobGet, len(img.Layers)+1)
	}
}
