package registry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/registry"
)

// fixedStore answers every manifest lookup with one manifest, as a memory cache would: what is
// left is the registry's own cost per request.
type fixedStore struct {
	metadata.Store
	m metadata.Manifest
}

func (f *fixedStore) GetManifest(context.Context, string, string) (*metadata.Manifest, error) {
	m := f.m
	return &m, nil
}

// noCache is a pull-through cache that serves no repository.
type noCache struct{ registry.Cache }

func (noCache) Route(name, ns string, read bool) (string, bool, bool) { return "", false, false }

// discard is a ResponseWriter that keeps nothing but its header map, reused between requests.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkManifestGet is the registry's own work for a manifest GET by tag with the Accept
// header of real clients (go test -bench Manifest -benchmem ./internal/registry/): the route,
// the Accept check and the headers, without the network and without the store.
func BenchmarkManifestGet(b *testing.B) {
	content := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	st := &fixedStore{m: metadata.Manifest{Digest: sha256Of(content), MediaType: oci.MediaTypeImageManifest, Content: content}}
	reg := registry.New(nil, st, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
	req := httptest.NewRequest(http.MethodGet, "/v2/bench/small/manifests/latest", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "+
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	// berth always has a pull-through cache (its built-in rules), which every request asks
	// whether it serves the repository.
	reg.UseCache(noCache{})
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		reg.ServeHTTP(w, req)
	}
	if got := w.h.Get("Docker-Content-Digest"); got != st.m.Digest.String() {
		b.Fatalf("Docker-Content-Digest %q", got)
	}
}
