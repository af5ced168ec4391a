package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
)

// TestEvictUnderLoad: a rule capped at about 8 of its 10 images, 20 clients pulling a hot set of
// 3 that moves on by one image every 400 ms (so all 10 are cached within the test), images pulled
// within 800 ms safe from eviction (berth: 10 minutes), and an eviction sweep every 200 ms (pulls
// written first, as berth's sweep does): no pull fails, the cache is under its cap after every
// sweep that evicted (at most 7 images are safe at once: the hot ones, the pinned and the warm),
// the pinned and the warm image are never evicted, and every evicted image, pulled again, costs
// the upstream one GET per manifest and blob.
func TestEvictUnderLoad(t *testing.T) {
	defer proxy.SetEvictionGuard(800 * time.Millisecond)()
	hub := startHub(t, hubemu.Options{})
	const images = 10
	var size int64
	for i := range images {
		img, err := hub.PushImage(fmt.Sprintf("library/i%d", i), "v1", randomLayers(t, 2, 32<<10)...)
		if err != nil {
			t.Fatal(err)
		}
		size = int64(2*(32<<10)) + int64(len(img.Config)) // about; the config is small
	}
	limit := 8 * size
	blobs, meta := stores(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: "docker-hub", URL: hub.RegistryURL(), StallTimeout: 10 * time.Second, HeaderTimeout: 10 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	rule := &proxy.Rule{Prefix: "docker-hub", Source: up, DockerHub: true, MaxStaleness: time.Hour,
		MaxBytes: limit, Pin: []string{"i0:v1"}, Warm: []string{"i1:v1"}, WarmEvery: time.Hour}
	cache := proxy.New([]*proxy.Rule{rule}, blobs, meta, log)
	t.Cleanup(cache.Close)
	cache.UsePullTimes(meta)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(cache)
	stopPulls := reg.TrackPulls(meta, time.Hour) // flushed by each sweep
	defer stopPulls()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	cache.WarmAll(ctx)
	if _, err := meta.GetManifest(ctx, "docker-hub/library/i1", "v1"); err != nil {
		t.Fatalf("the warm image is not cached after warming: %v", err)
	}

	var (
		failed, pulls atomic.Int64
		stop          = make(chan struct{})
		stopOnce      sync.Once
		wg            sync.WaitGroup
		start         = time.Now()
	)
	// The clients stop before the test ends, however it ends: they report through t.
	halt := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer halt()
	for c := range 20 {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				hot := int(time.Since(start)/(400*time.Millisecond)) % images
				i := (hot + (c+k)%3) % images
				if err := pull(client, srv.URL, fmt.Sprintf("docker-hub/i%d", i), "v1"); err != nil {
					failed.Add(1)
					t.Errorf("client %d: pulling i%d: %v", c, i, err)
				}
				pulls.Add(1)
			}
		})
	}
	usage := func() int64 {
		u, _, err := meta.Usage(ctx, "docker-hub/*", "")
		if err != nil {
			t.Error(err)
		}
		return u
	}
	cached := func(i int) bool {
		_, err := meta.GetManifest(ctx, fmt.Sprintf("docker-hub/library/i%d", i), "v1")
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			t.Error(err)
		}
		return err == nil
	}
	var evicted, sweeps int
	for time.Since(start) < 4*time.Second {
		time.Sleep(200 * time.Millisecond)
		reg.FlushPulls(ctx, meta)
		st, err := cache.Evict(ctx)
		if err != nil {
			t.Error(err)
			break
		}
		sweeps++
		evicted += st.Images
		if st.Images > 0 {
			if u := usage(); u > limit {
				t.Errorf("sweep %d evicted %d images and left %d bytes, over the cap %d", sweeps, st.Images, u, limit)
			}
		}
		if !cached(0) || !cached(1) {
			t.Errorf("sweep %d evicted the pinned (%v) or the warm (%v) image", sweeps, !cached(0), !cached(1))
			break
		}
	}
	halt()
	t.Logf("%d pulls by 20 clients, %d failed; %d sweeps evicted %d images", pulls.Load(), failed.Load(), sweeps, evicted)
	if evicted == 0 {
		t.Error("nothing was evicted: the cap forced nothing")
	}
	// Every image not cached now, pulled again: one GET per manifest and blob.
	for i := range images {
		if cached(i) {
			continue
		}
		hub.ResetCounts()
		if err := pull(http.DefaultClient, srv.URL, fmt.Sprintf("docker-hub/i%d", i), "v1"); err != nil {
			t.Fatal(err)
		}
		if c := hub.Counts(); c.ManifestGet != 1 || c.BlobGet != 3 {
			t.Errorf("pulling evicted i%d again: %d manifest GETs, %d blob GETs; want 1 and 3", i, c.ManifestGet, c.BlobGet)
		}
	}
}
