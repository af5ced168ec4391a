package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/storage"
)

// TestEvictMaxBytes: a rule bounded to about two images of four holds at most that after a pass:
// the least recently cached go first, whole (manifest gone, blobs deleted from storage), the
// pinned one never; a layer another cached image declares stays; an evicted image pulled again
// costs the upstream one GET per manifest and blob.
func TestEvictMaxBytes(t *testing.T) {
	defer proxy.SetEvictionGuard(0)()
	hub := startHub(t, hubemu.Options{})
	shared := randomLayers(t, 1, 64<<10)[0]
	imgs := map[string]hubemu.Image{}
	for _, name := range []string{"a", "b", "c", "d"} {
		layers := randomLayers(t, 2, 64<<10)
		if name == "b" || name == "c" {
			layers = append(layers, shared)
		}
		img, err := hub.PushImage("library/"+name, "v1", layers...)
		if err != nil {
			t.Fatal(err)
		}
		imgs[name] = img
	}
	blobs, meta := stores(t)
	url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, func(r *proxy.Rule) {
		r.MaxBytes = 300 << 10
		r.Pin = []string{"a:v1"} // the oldest, but pinned
	})
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c", "d"} {
		if err := pull(http.DefaultClient, url, "docker-hub/"+name, "v1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // an order by when each was cached
	}
	usage := func() int64 {
		u, _, err := meta.Usage(ctx, "docker-hub/*", "")
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	t.Logf("before: %d bytes cached, bound %d", usage(), 300<<10)
	st, err := cache.Evict(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("evicted %d images, deleted %d blobs (%d bytes); %d bytes cached", st.Images, st.Blobs, st.Bytes, usage())
	if u := usage(); u > 300<<10 {
		t.Errorf("after a pass %d bytes are cached, over the bound %d", u, 300<<10)
	}
	cached := func(name string) bool {
		_, err := meta.GetManifest(ctx, "docker-hub/library/"+name, "v1")
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	stored := func(d string) bool {
		_, err := blobs.Stat(ctx, oci.Digest(d))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	// b (the oldest unpinned) and c go: a, b, c, d hold ~200 KiB each, shared counted once.
	for name, want := range map[string]bool{"a": true, "b": false, "c": false, "d": true} {
		if got := cached(name); got != want {
			t.Errorf("image %s cached after the pass: %v, want %v", name, got, want)
		}
		for _, l := range append([]string{imgs[name].Config}, imgs[name].Layers...) {
			if l == digest.FromBytes(shared).String() {
				continue
			}
			if got := stored(l); got != want {
				t.Errorf("image %s's layer stored after the pass: %v, want %v", name, got, want)
			}
		}
	}
	if st.Images != 2 || st.Blobs != 2*3+1 {
		t.Errorf("stats: %+v; want 2 images, 7 blobs (2 × config and 2 layers, and the shared layer)", st)
	}
	// Evicted, pulled again: one GET per manifest and blob.
	hub.ResetCounts()
	if err := pull(http.DefaultClient, url, "docker-hub/b", "v1"); err != nil {
		t.Fatal(err)
	}
	if c := hub.Counts(); c.ManifestGet != 1 || c.BlobGet != int64(len(imgs["b"].Layers)+1) {
		t.Errorf("pulling an evicted image: %d manifest GETs, %d blob GETs; want 1 and %d", c.ManifestGet, c.BlobGet, len(imgs["b"].Layers)+1)
	}
}

// TestEvictUnusedFor: images not pulled (here: cached) within unused_for go, pinned ones stay,
// and a blob another repository holds is not deleted with the image that declared it.
func TestEvictUnusedFor(t *testing.T) {
	defer proxy.SetEvictionGuard(0)()
	hub := startHub(t, hubemu.Options{})
	layers := randomLayers(t, 2, 32<<10)
	layer := layers[0]
	for i, name := range []string{"old", "pinned"} {
		if _, err := hub.PushImage("library/"+name, "v1", layers[i]); err != nil {
			t.Fatal(err)
		}
	}
	blobs, meta := stores(t)
	url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, func(r *proxy.Rule) {
		r.UnusedFor = time.Millisecond
		r.Pin = []string{"library/pinned:v1"}
	})
	ctx := context.Background()
	for _, name := range []string{"old", "pinned"} {
		if err := pull(http.DefaultClient, url, "docker-hub/"+name, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	d := digest.FromBytes(layer)
	if err := meta.LinkBlob(ctx, "team/app", d, int64(len(layer))); err != nil { // pushed there too
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	st, err := cache.Evict(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 1 {
		t.Errorf("evicted %d images, want 1 (old)", st.Images)
	}
	if _, err := meta.GetManifest(ctx, "docker-hub/library/pinned", "v1"); err != nil {
		t.Errorf("the pinned image: %v", err)
	}
	if _, err := meta.GetManifest(ctx, "docker-hub/library/old", "v1"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("the unused image: %v; want it evicted", err)
	}
	if _, err := blobs.Stat(ctx, d); err != nil {
		t.Errorf("the layer team/app holds too: %v; want it kept", err)
	}
}

// TestEvictGuard: an image used within the guard is not evicted, however stale the rule says
// it is.
func TestEvictGuard(t *testing.T) {
	defer proxy.SetEvictionGuard(time.Hour)()
	hub := startHub(t, hubemu.Options{})
	if _, err := hub.PushImage("library/app", "v1", randomLayers(t, 1, 1024)...); err != nil {
		t.Fatal(err)
	}
	blobs, meta := stores(t)
	url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, func(r *proxy.Rule) { r.UnusedFor = time.Millisecond })
	if err := pull(http.DefaultClient, url, "docker-hub/app", "v1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if st, err := cache.Evict(context.Background()); err != nil || st.Images != 0 {
		t.Errorf("Evict within the guard: %+v, %v; want nothing evicted", st, err)
	}
}
