package proxy_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage"
)

// goneAfterStat is a blob store in which blob victim disappears right after a Stat found it, as
// when garbage collection or an eviction deletes it between the cache's look and its link.
type goneAfterStat struct {
	storage.BlobStore
	mu     sync.Mutex
	victim oci.Digest
}

func (s *goneAfterStat) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	n, err := s.BlobStore.Stat(ctx, d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && d == s.victim {
		s.victim = ""
		if derr := s.BlobStore.Delete(ctx, d); derr != nil {
			return 0, derr
		}
	}
	return n, err
}

// TestLinkStoredGone: a cached repository asked for a layer that another repository of the rule
// filled finds the bytes stored and goes to link them; if they are deleted in between, it fetches
// them from the upstream again (one GET) instead of failing the pull.
func TestLinkStoredGone(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	layer := randomLayers(t, 1, 256<<10)[0]
	for _, name := range []string{"a", "b"} {
		if _, err := hub.PushImage("library/"+name, "v1", layer); err != nil {
			t.Fatal(err)
		}
	}
	fsBlobs, meta := stores(t)
	blobs := &goneAfterStat{BlobStore: fsBlobs}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: "docker-hub", URL: hub.RegistryURL(), StallTimeout: 10 * time.Second, HeaderTimeout: 10 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	rule := &proxy.Rule{Prefix: "docker-hub", Source: up, DockerHub: true, MaxStaleness: time.Hour}
	cache := proxy.New([]*proxy.Rule{rule}, blobs, meta, log)
	t.Cleanup(cache.Close)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(cache)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)

	if err := pull(http.DefaultClient, srv.URL, "docker-hub/a", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := get(http.DefaultClient, srv.URL+"/v2/docker-hub/b/manifests/v1"); err != nil {
		t.Fatal(err)
	}
	hub.ResetCounts()
	blobs.mu.Lock()
	blobs.victim = digest.FromBytes(layer)
	blobs.mu.Unlock()
	got, err := get(http.DefaultClient, srv.URL+"/v2/docker-hub/b/blobs/"+digest.FromBytes(layer).String())
	if err != nil {
		t.Fatalf("the layer whose bytes went between look and link: %v", err)
	}
	if !bytes.Equal(got, layer) {
		t.Errorf("got %d bytes, want the layer's %d", len(got), len(layer))
	}
	if c := hub.Counts(); c.BlobGet != 1 {
		t.Errorf("%d upstream blob GETs, want 1 (fetched again)", c.BlobGet)
	}
	blobs.mu.Lock()
	defer blobs.mu.Unlock()
	if blobs.victim != "" {
		t.Error("the store was never asked: the test did not race what it meant to")
	}
}
