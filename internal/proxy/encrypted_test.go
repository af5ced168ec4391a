package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/sealed"
)

// newEncryptedStore is an encrypted blob store in dir (the sealed layer over the filesystem
// store), under a key of its own.
func newEncryptedStore(t *testing.T, dir string) *sealed.Store {
	t.Helper()
	key, err := crypt.GenerateKeyFile(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypt.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := sealed.Open(context.Background(), b, keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newEncryptedEnv is newEnv over an encrypted blob store; it returns the data directory too.
func newEncryptedEnv(t *testing.T, hub *hubemu.Hub) (*env, string) {
	t.Helper()
	dir := t.TempDir()
	blobs := newEncryptedStore(t, dir)
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
	cache := proxy.New([]*proxy.Rule{rule}, blobs, meta, log)
	t.Cleanup(cache.Close)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(cache)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return &env{hub: hub, url: srv.URL, cache: cache, rule: rule}, dir
}

// plaintextFiles lists the files under root that hold a 64-byte run of any of layers, and says
// how many files it searched (a search of nothing proves nothing).
func plaintextFiles(t *testing.T, root string, layers [][]byte) (found []string, searched int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d iofs.DirEntry, err error) error {
		if err != nil && path == root {
			return err
		}
		if err != nil || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "metadata.db") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil // removed meanwhile
		}
		searched++
		for _, l := range layers {
			for off := 0; off+64 <= len(l); off += len(l) / 16 {
				if bytes.Contains(data, l[off:off+64]) {
					found = append(found, fmt.Sprintf("%s (bytes at %d)", path, off))
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, searched
}

// TestEncryptedFill: with encryption at rest, concurrent cold pulls still cost one upstream GET
// per blob and stream as the blob arrives, and no plaintext of the blob reaches the disk: not
// while the fill runs (its spool is sealed), not in the system temp directory, not after.
func TestEncryptedFill(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where a plain temporary file would go
	layers := randomLayers(t, 3, 2<<20)
	img, err := hub.PushImage("library/secret", "v1", layers...)
	if err != nil {
		t.Fatal(err)
	}
	hub.SetThrottle(4 << 20) // over a second of fill, to look at the disk meanwhile
	e, dir := newEncryptedEnv(t, hub)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			errs <- pull(&http.Client{Transport: &http.Transport{}}, e.url, "docker-hub/secret", "v1")
		})
	}
	// While the fills run: a spool (uploads/put-*) is there, sealed.
	sawSpool := false
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(50 * time.Millisecond):
			if m, _ := filepath.Glob(filepath.Join(dir, "uploads", "put-*")); len(m) > 0 {
				sawSpool = true
			}
			inStore, _ := plaintextFiles(t, dir, layers)
			inTmp, _ := plaintextFiles(t, tmp, layers)
			if found := append(inStore, inTmp...); len(found) > 0 {
				t.Errorf("plaintext on disk during the fill: %v", found)
			}
		}
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if !sawSpool {
		t.Log("the fills ended before the disk was looked at") // not a failure: the check after still holds
	}
	if c := hub.Counts(); c.BlobGet != int64(len(img.Layers)+1) {
		t.Errorf("upstream blob GETs = %d, want %d (one per blob)", c.BlobGet, len(img.Layers)+1)
	}
	found, searched := plaintextFiles(t, dir, layers)
	if len(found) > 0 {
		t.Errorf("plaintext on disk after the fill: %v", found)
	}
	if searched < len(img.Layers)+1 {
		t.Errorf("searched %d files in the store for plaintext, want at least one per blob (%d)", searched, len(img.Layers)+1)
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
		t.Errorf("files in the system temp directory: %v, %v", entries, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "uploads", "put-*")); len(m) > 0 {
		t.Errorf("spools left: %v", m)
	}
	// Cached: served from the encrypted store, with no upstream GET.
	before := hub.Counts().BlobGet
	if err := pull(http.DefaultClient, e.url, "docker-hub/secret", "v1"); err != nil {
		t.Fatal(err)
	}
	if after := hub.Counts().BlobGet; after != before {
		t.Errorf("a warm pull made %d upstream blob GETs", after-before)
	}
}

// TestEncryptedBadUpstreamBlob: a truncated or corrupt upstream blob reaches no client as a
// complete response through a spool either, and leaves nothing behind.
func TestEncryptedBadUpstreamBlob(t *testing.T) {
	for _, kind := range []hubemu.FaultKind{hubemu.Truncated, hubemu.Corrupt} {
		t.Run(fmt.Sprint(kind), func(t *testing.T) {
			hub := startHub(t, hubemu.Options{})
			layer := randomLayers(t, 1, 1<<20)[0]
			img, err := hub.PushImage("library/db", "1", layer)
			if err != nil {
				t.Fatal(err)
			}
			e, dir := newEncryptedEnv(t, hub)
			hub.SetFault(hubemu.Fault{Kind: kind, On: hubemu.Blobs, Times: 1})
			url := e.url + "/v2/docker-hub/db/blobs/" + img.Layers[0]
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					body, err := get(&http.Client{Transport: &http.Transport{}}, url)
					if err == nil && !bytes.Equal(body, layer) {
						t.Errorf("a client received %d wrong bytes as a complete response", len(body))
					}
				})
			}
			wg.Wait()
			body, err := get(http.DefaultClient, url)
			if err != nil || !bytes.Equal(body, layer) {
				t.Fatalf("after the fault: %v (%d bytes)", err, len(body))
			}
			e.cache.Close() // every fill has ended, and its spool with it
			if m, _ := filepath.Glob(filepath.Join(dir, "uploads", "put-*")); len(m) > 0 {
				t.Errorf("spools left: %v", m)
			}
		})
	}
}
