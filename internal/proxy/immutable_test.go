package proxy_test

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
)

// TestCachedTagsFollowUpstream: with every repository's tags immutable, a cached tag still
// moves when the upstream moves it: a cache follows its upstream.
func TestCachedTagsFollowUpstream(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 100, Window: time.Hour})
	first, err := hub.PushImage("library/app", "v1", []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	blobs, meta := stores(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: "docker-hub", URL: hub.RegistryURL()}, log)
	if err != nil {
		t.Fatal(err)
	}
	cache := proxy.New([]*proxy.Rule{{Prefix: "docker-hub", Source: up, DockerHub: true, MaxStaleness: 24 * time.Hour}}, blobs, meta, log)
	t.Cleanup(cache.Close)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(cache)
	reg.UseTagRules(config.TagRules{{Repositories: "*", Mode: config.Immutable}}.Immutable)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)

	manifestDigest := func() string {
		t.Helper()
		body, err := get(http.DefaultClient, srv.URL+"/v2/docker-hub/app/manifests/v1")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	}
	if got := manifestDigest(); got != first.Digest {
		t.Fatalf("docker-hub/app:v1 = %s, want %s", got, first.Digest)
	}
	second, err := hub.PushImage("library/app", "v1", []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestDigest(); got != second.Digest {
		t.Errorf("docker-hub/app:v1 after the upstream moved it = %s, want the upstream's %s (first was %s)", got, second.Digest, first.Digest)
	}
}
