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

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/sealed"
)

// The tests here force the interleaving that made concurrent cold pulls cost the upstream a
// second request now and then: a request reads the store (nothing there), and only after the
// fetch that another request started has completed, stored its result and left does it go on.

// hold pauses one request after its first read of one kind (on): it signals read, then waits
// for release. The request carries it in its context.
type hold struct {
	on      string // "GetManifest", "TagChecked" or "Stat"
	once    sync.Once
	read    chan struct{}
	release chan struct{}
}

type holdKey struct{}

func newHold(on string) *hold {
	return &hold{on: on, read: make(chan struct{}), release: make(chan struct{})}
}

func (h *hold) ctx(parent context.Context) context.Context {
	return context.WithValue(parent, holdKey{}, h)
}

// after pauses the request of ctx, if it carries a hold on op, after its first such read.
func after(ctx context.Context, op string) {
	h, _ := ctx.Value(holdKey{}).(*hold)
	if h == nil || h.on != op {
		return
	}
	h.once.Do(func() {
		close(h.read)
		<-h.release
	})
}

type heldMeta struct{ metadata.Store }

func (m heldMeta) GetManifest(ctx context.Context, repo, ref string) (*metadata.Manifest, error) {
	man, err := m.Store.GetManifest(ctx, repo, ref)
	after(ctx, "GetManifest")
	return man, err
}

func (m heldMeta) TagChecked(ctx context.Context, repo, tag string) (time.Time, error) {
	t, err := m.Store.TagChecked(ctx, repo, tag)
	after(ctx, "TagChecked")
	return t, err
}

// heldFS and heldEncrypted keep the stores' optional capabilities (FileAdopter, Spooler).
type heldFS struct{ *fs.Store }

func (s heldFS) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	n, err := s.Store.Stat(ctx, d)
	after(ctx, "Stat")
	return n, err
}

type heldEncrypted struct{ *sealed.Store }

func (s heldEncrypted) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	n, err := s.Store.Stat(ctx, d)
	after(ctx, "Stat")
	return n, err
}

// newHeldCache is a cache with one docker-hub rule (revalidation: always) in front of hub, over
// stores that honour holds; encrypted picks the encrypted blob store.
func newHeldCache(t *testing.T, hub *hubemu.Hub, encrypted bool) *proxy.Cache {
	t.Helper()
	dir := t.TempDir()
	var blobs storage.BlobStore
	if encrypted {
		blobs = heldEncrypted{newEncryptedStore(t, dir)}
	} else {
		s, err := fs.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		blobs = heldFS{s}
	}
	meta, err := sqlite.Open(context.Background(), dir+"/metadata.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: "docker-hub", URL: hub.RegistryURL(),
		StallTimeout: 2 * time.Second, HeaderTimeout: 5 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	rule := &proxy.Rule{Prefix: "docker-hub", Source: up, Hosts: []string{"docker.io"}, DockerHub: true,
		MaxStaleness: 24 * time.Hour}
	cache := proxy.New([]*proxy.Rule{rule}, blobs, heldMeta{meta}, log)
	t.Cleanup(cache.Close)
	return cache
}

// TestManifestMissAfterFetch: a request that found a tag missing, or due for revalidation, but
// reaches the upstream only after another request's fetch or HEAD of it has completed, is
// answered by that fetch: no second manifest GET or HEAD.
func TestManifestMissAfterFetch(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	img, err := hub.PushImage("library/app", "v1", randomLayers(t, 1, 1024)...)
	if err != nil {
		t.Fatal(err)
	}
	cache := newHeldCache(t, hub, false)
	ctx := context.Background()

	// late runs a request that pauses after its read of op while first runs to completion.
	late := func(op string, first func()) {
		t.Helper()
		h := newHold(op)
		type result struct {
			m   *metadata.Manifest
			err error
		}
		done := make(chan result, 1)
		go func() {
			m, err := cache.Manifest(h.ctx(ctx), "docker-hub/app", "v1")
			done <- result{m, err}
		}()
		<-h.read
		first()
		close(h.release)
		res := <-done
		if res.err != nil {
			t.Fatalf("the late request: %v", res.err)
		}
		if res.m.Digest.String() != img.Digest {
			t.Fatalf("the late request got %s, want %s", res.m.Digest, img.Digest)
		}
	}
	fetch := func() {
		t.Helper()
		if _, err := cache.Manifest(ctx, "docker-hub/app", "v1"); err != nil {
			t.Fatal(err)
		}
	}

	// Cold: the late request found nothing cached.
	late("GetManifest", fetch)
	if c := hub.Counts(); c.ManifestGet != 1 || c.ManifestHead != 0 {
		t.Errorf("a cold tag read by two requests: %d manifest GETs, %d HEADs upstream; want 1 and 0", c.ManifestGet, c.ManifestHead)
	}
	// Warm, revalidated on every pull: the late request read the time of the last check before
	// another request's HEAD refreshed it.
	late("TagChecked", fetch)
	if c := hub.Counts(); c.ManifestGet != 1 || c.ManifestHead != 1 {
		t.Errorf("a tag revalidated by two requests: %d manifest GETs, %d HEADs upstream; want 1 and 1", c.ManifestGet, c.ManifestHead)
	}
	// A request that starts after that HEAD answered revalidates again.
	fetch()
	if c := hub.Counts(); c.ManifestGet != 1 || c.ManifestHead != 2 {
		t.Errorf("a revalidation after the last one: %d manifest GETs, %d HEADs upstream; want 1 and 2", c.ManifestGet, c.ManifestHead)
	}
	if s := cache.Status()[0]; s.Cache.Revalidations != 2 || s.Cache.Misses != 1 {
		t.Errorf("cache counters %+v; want 2 revalidations and 1 miss", s.Cache)
	}
}

// TestBlobMissAfterFill: a request that found a blob missing but joins only after another
// request's fill of it has completed and left is served what that fill stored: no second upstream
// GET, nor a HEAD, with either blob store.
func TestBlobMissAfterFill(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			hub := startHub(t, hubemu.Options{})
			layer := randomLayers(t, 1, 3<<20)[0]
			img, err := hub.PushImage("library/app", "v1", layer)
			if err != nil {
				t.Fatal(err)
			}
			d, err := oci.ParseDigest(img.Layers[0])
			if err != nil {
				t.Fatal(err)
			}
			cache := newHeldCache(t, hub, encrypted)
			get := func(ctx context.Context) *httptest.ResponseRecorder {
				req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v2/docker-hub/app/blobs/"+d.String(), nil)
				w := httptest.NewRecorder()
				if err := cache.ServeBlob(w, req, "docker-hub/app", d); err != nil {
					t.Errorf("ServeBlob: %v", err)
				}
				return w
			}
			check := func(who string, w *httptest.ResponseRecorder) {
				t.Helper()
				if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), layer) {
					t.Errorf("%s: %d, %d bytes (want 200 and the layer's %d)", who, w.Code, w.Body.Len(), len(layer))
				}
			}

			// The late request found the blob missing from the store (Stat), then the first
			// request's fill ran, stored it and left before the late one joined.
			h := newHold("Stat")
			done := make(chan *httptest.ResponseRecorder, 1)
			go func() { done <- get(h.ctx(context.Background())) }()
			<-h.read
			check("first request", get(context.Background()))
			close(h.release)
			check("late request", <-done)
			if c := hub.Counts(); c.BlobGet != 1 || c.BlobHead != 0 {
				t.Errorf("a blob read by two requests: %d blob GETs, %d HEADs upstream; want 1 and 0", c.BlobGet, c.BlobHead)
			}

			// The registry checks the repository's link before it asks the cache: a request whose
			// check came just before the fill linked the blob finds it stored and linked.
			check("request after the link", get(context.Background()))
			if c := hub.Counts(); c.BlobGet != 1 || c.BlobHead != 0 {
				t.Errorf("after a request that raced the link: %d blob GETs, %d HEADs upstream; want 1 and 0", c.BlobGet, c.BlobHead)
			}
			if s := cache.Status()[0]; s.Cache.Misses != 1 {
				t.Errorf("cache counters %+v; want 1 miss", s.Cache)
			}
		})
	}
}
