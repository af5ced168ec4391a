package proxy_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
)

// TestWarm: a rule's warm images are cached whole before anyone pulls them (an index: its
// platform manifests and every blob), so that the first pull costs the upstream nothing; each
// check of a warm tag is one manifest HEAD, not a pull; a tag moved upstream is followed (the
// new image fetched) without a client; a check within WarmEvery of the last asks nothing.
func TestWarm(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/app", "v1", randomLayers(t, 2, 64<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := hub.PushIndex("library/multi", "latest")
	if err != nil {
		t.Fatal(err)
	}
	blobs, meta := stores(t)
	var rule *proxy.Rule
	url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, func(r *proxy.Rule) {
		r.Warm = []string{"app:v1", "library/multi:latest"} // docker-hub/multi is docker-hub/library/multi
		r.WarmEvery = time.Hour
		r.Every = time.Hour // pulls do not revalidate within the hour: only what warm does shows
		rule = r
	})
	ctx := context.Background()
	if p := cache.WarmPeriod(); p != time.Hour {
		t.Errorf("WarmPeriod = %v, want 1h", p)
	}
	cache.WarmAll(ctx)
	c := hub.Counts()
	// app: manifest + config + 2 layers; multi: index + 2 × (manifest + config + layer).
	if c.ManifestGet != 4 || c.BlobGet != 3+4 || c.ManifestHead != 0 {
		t.Errorf("warming: %d manifest GETs, %d blob GETs, %d HEADs; want 4, 7, 0", c.ManifestGet, c.BlobGet, c.ManifestHead)
	}
	hub.ResetCounts()
	if err := pull(http.DefaultClient, url, "docker-hub/app", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := get(http.DefaultClient, url+"/v2/docker-hub/multi/manifests/latest"); err != nil {
		t.Fatal(err)
	}
	for _, child := range idx.Children {
		if err := pull(http.DefaultClient, url, "docker-hub/multi", child.Digest); err != nil {
			t.Fatal(err)
		}
	}
	if c := hub.Counts(); c.ManifestGet != 0 || c.BlobGet != 0 {
		t.Errorf("pulling the warm images: %d manifest GETs, %d blob GETs upstream; want none", c.ManifestGet, c.BlobGet)
	}
	// Within WarmEvery of the last check: nothing asked.
	cache.WarmAll(ctx)
	if c := hub.Counts(); c.ManifestHead != 0 || c.ManifestGet != 0 {
		t.Errorf("warming again at once: %d HEADs, %d GETs; want none", c.ManifestHead, c.ManifestGet)
	}
	// Checks due: one HEAD per warm tag, no GET while nothing moved.
	rule.WarmEvery = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	cache.WarmAll(ctx)
	if c := hub.Counts(); c.ManifestHead != 2 || c.ManifestGet != 0 || c.BlobGet != 0 {
		t.Errorf("a due check: %d HEADs, %d manifest GETs, %d blob GETs; want 2, 0, 0", c.ManifestHead, c.ManifestGet, c.BlobGet)
	}
	// The tag moves upstream: the next check fetches the new image, before any pull.
	moved, err := hub.PushImage("library/app", "v1", randomLayers(t, 1, 64<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	hub.ResetCounts()
	time.Sleep(5 * time.Millisecond)
	cache.WarmAll(ctx)
	if c := hub.Counts(); c.ManifestGet != 1 || c.BlobGet != 2 {
		t.Errorf("after the tag moved: %d manifest GETs, %d blob GETs; want 1 and 2 (config and layer)", c.ManifestGet, c.BlobGet)
	}
	m, err := meta.GetManifest(ctx, "docker-hub/library/app", "v1")
	if err != nil || m.Digest.String() != moved.Digest {
		t.Errorf("the cached tag after the warm check: %v, %v; want %s", m, err, moved.Digest)
	}
	_ = img
}
