package proxy_test

// Which blobs a cache repository may link (a lying upstream must not read private blobs), and the
// bounds of fills (an endless body must not fill the disk): issue 8, items 8 and 9.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
)

// berthEnv is berth in-process (registry and cache over real stores in dir) with any rules.
type berthEnv struct {
	url   string
	dir   string
	blobs storage.BlobStore
	meta  metadata.Store
	cache *proxy.Cache
	rules map[string]*proxy.Rule
}

// newBerth starts berth with one rule per prefix, each on upstream (revalidate always), with
// limits; encrypted picks the encrypted blob store.
func newBerth(t *testing.T, upstream string, limits proxy.Limits, encrypted bool, prefixes ...string) *berthEnv {
	t.Helper()
	dir := t.TempDir()
	var blobs storage.BlobStore
	if encrypted {
		blobs = newEncryptedStore(t, dir)
	} else {
		s, err := fs.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		blobs = s
	}
	meta, err := sqlite.Open(context.Background(), filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	e := &berthEnv{dir: dir, blobs: blobs, meta: meta, rules: map[string]*proxy.Rule{}}
	var rules []*proxy.Rule
	for _, p := range prefixes {
		up, err := proxy.NewUpstream(proxy.UpstreamConfig{Name: p, URL: upstream,
			StallTimeout: 2 * time.Second, HeaderTimeout: 5 * time.Second}, log)
		if err != nil {
			t.Fatal(err)
		}
		r := &proxy.Rule{Prefix: p, Source: up, DockerHub: true, MaxStaleness: time.Hour}
		rules = append(rules, r)
		e.rules[p] = r
	}
	e.cache = proxy.New(rules, blobs, meta, log)
	e.cache.SetLimits(limits)
	t.Cleanup(e.cache.Close)
	reg := registry.New(blobs, meta, log)
	reg.UseCache(e.cache)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// push uploads content as a blob of a private repository, monolithically.
func (e *berthEnv) push(t *testing.T, repo string, content []byte) string {
	t.Helper()
	d := digest.FromBytes(content).String()
	resp, err := http.Post(e.url+"/v2/"+repo+"/blobs/uploads/?digest="+d, "application/octet-stream", bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push to %s: %s", repo, resp.Status)
	}
	return d
}

// blobFiles lists the files of blob d in the store, and the temporary files in uploads/.
func (e *berthEnv) blobFiles(t *testing.T, d string) (blobs, temps []string) {
	t.Helper()
	hex := strings.TrimPrefix(d, "sha256:")
	filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && de.Name() == hex {
			blobs = append(blobs, p)
		}
		return nil
	})
	temps, _ = filepath.Glob(filepath.Join(e.dir, "uploads", "put-*"))
	return blobs, temps
}

// response is a whole response; err is the error reading its body, if it was cut.
type response struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (r response) String() string {
	s := fmt.Sprintf("%d (%d bytes)", r.status, len(r.body))
	if json.Valid(r.body) {
		s = fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
	}
	if r.err != nil {
		s += " cut: " + r.err.Error()
	}
	return s
}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Accept", accept)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b, err}
}

// TestCacheLinksOnlyProvenBlobs: a public image whose layer is also stored for a private
// repository pulls through: the layer is downloaded and verified (the upstream proves it has
// it), and the store keeps one copy. A blob that a repository of the same rule links is linked
// with no upstream request (the upstream proved it); one that only another rule links is
// downloaded again. By digest only, a blob that the rule links costs a HEAD; one stored only for
// private repositories is BLOB_UNKNOWN without any upstream request.
func TestCacheLinksOnlyProvenBlobs(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			hub := startHub(t, hubemu.Options{})
			layers := randomLayers(t, 2, 256<<10)
			img, err := hub.PushImage("library/app", "v1", layers...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hub.PushImage("library/other", "v1", layers[1]); err != nil {
				t.Fatal(err)
			}
			if _, err := hub.PushImage("library/third", "v1", layers[1]); err != nil {
				t.Fatal(err)
			}
			e := newBerth(t, hub.RegistryURL(), proxy.Limits{}, encrypted, "docker-hub", "hub2")
			shared := e.push(t, "team/app", layers[0])
			private := e.push(t, "team/app", []byte("private and nowhere upstream"))

			type counts struct{ BlobGet, BlobHead, ManifestGet int64 }
			delta := func(what string, fn func(), want counts) {
				t.Helper()
				before := hub.Counts()
				fn()
				after := hub.Counts()
				got := counts{BlobGet: after.BlobGet - before.BlobGet, BlobHead: after.BlobHead - before.BlobHead,
					ManifestGet: after.ManifestGet - before.ManifestGet}
				if got != want {
					t.Errorf("%s: upstream blob GETs %d, blob HEADs %d, manifest GETs %d; want %d, %d, %d", what,
						got.BlobGet, got.BlobHead, got.ManifestGet, want.BlobGet, want.BlobHead, want.ManifestGet)
				}
			}
			delta("pull of an image whose first layer a private repository holds", func() {
				if err := pull(http.DefaultClient, e.url, "docker-hub/app", "v1"); err != nil {
					t.Fatal(err)
				}
			}, counts{ManifestGet: 1, BlobGet: 3})
			if files, temps := e.blobFiles(t, shared); len(files) != 1 || len(temps) != 0 {
				t.Errorf("the shared layer is stored as %v, with temporary files %v; want one file, none", files, temps)
			}
			if r := do(t, http.MethodGet, e.url+"/v2/team/app/blobs/"+shared); r.status != http.StatusOK || !bytes.Equal(r.body, layers[0]) {
				t.Errorf("the private repository's copy: %s", r)
			}

			delta("pull through another rule", func() {
				if err := pull(http.DefaultClient, e.url, "hub2/app", "v1"); err != nil {
					t.Fatal(err)
				}
			}, counts{ManifestGet: 1, BlobGet: 3})

			// library/other's layer is library/app's second: linked under docker-hub already.
			delta("pull of an image whose layer the rule links in another repository", func() {
				if err := pull(http.DefaultClient, e.url, "docker-hub/other", "v1"); err != nil {
					t.Fatal(err)
				}
			}, counts{ManifestGet: 1, BlobGet: 1})

			// By digest only, in a repository no manifest of which names the blob.
			delta("GET by digest of a blob the rule links", func() {
				r := do(t, http.MethodGet, e.url+"/v2/docker-hub/third/blobs/"+img.Layers[1])
				if r.status != http.StatusOK || !bytes.Equal(r.body, layers[1]) {
					t.Errorf("GET by digest of a blob the rule links: %s", r)
				}
			}, counts{BlobHead: 1})
			for _, m := range []string{http.MethodHead, http.MethodGet} {
				for _, d := range []string{private, shared} {
					delta(m+" by digest of a blob held for a private repository", func() {
						r := do(t, m, e.url+"/v2/docker-hub/fourth/blobs/"+d)
						if r.status != http.StatusNotFound || (m == http.MethodGet && !bytes.Contains(r.body, []byte("BLOB_UNKNOWN"))) {
							t.Errorf("%s docker-hub/fourth@%s: %s; want 404 BLOB_UNKNOWN", m, d, r)
						}
					}, counts{})
				}
			}
			// hub2 links the shared layer now (its own download proved it), the private blob
			// stays private.
			delta("GET by digest through the other rule", func() {
				if r := do(t, http.MethodGet, e.url+"/v2/hub2/fifth/blobs/"+private); r.status != http.StatusNotFound {
					t.Errorf("GET hub2/fifth@private: %s; want 404", r)
				}
			}, counts{})
			if c := hub.Counts().Repos["library/fourth"]; c != (hubemu.RepoCounts{}) {
				t.Errorf("the upstream was asked about library/fourth: %+v", c)
			}
		})
	}
}

// scripted is an upstream whose blob answers the test writes: it serves manifests by reference,
// answers /v2/, and passes blob requests to blob. sent counts the blob body bytes it wrote.
type scripted struct {
	srv       *httptest.Server
	manifests map[string][]byte
	blob      func(w http.ResponseWriter, r *http.Request, d string)
	gets      atomic.Int64 // blob GETs
	sent      atomic.Int64
}

func startScripted(t *testing.T, blob func(s *scripted, w http.ResponseWriter, r *http.Request, d string)) *scripted {
	t.Helper()
	s := &scripted{manifests: map[string][]byte{}}
	s.blob = func(w http.ResponseWriter, r *http.Request, d string) { blob(s, w, r, d) }
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/v2/":
			w.Write([]byte("{}"))
		case strings.Contains(p, "/manifests/"):
			m, ok := s.manifests[p[strings.LastIndex(p, "/")+1:]]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", oci.MediaTypeImageManifest)
			w.Header().Set("Content-Length", strconv.Itoa(len(m)))
			w.Write(m)
		case strings.Contains(p, "/blobs/"):
			if r.Method == http.MethodGet {
				s.gets.Add(1)
			}
			s.blob(w, r, p[strings.LastIndex(p, "/")+1:])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// image makes a manifest, stored under tag, of a config and one layer declared with size, and
// returns the layer's digest.
func (s *scripted) image(tag string, layer []byte, size int64) string {
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	d := digest.FromBytes(layer).String()
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(cfg).String(), "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}}})
	s.manifests[tag] = m
	return d
}

// write sends p and counts it; false when the client has gone.
func (s *scripted) write(w http.ResponseWriter, p []byte) bool {
	n, err := w.Write(p)
	s.sent.Add(int64(n))
	if err != nil {
		return false
	}
	http.NewResponseController(w).Flush()
	return true
}

// endless sends prefix, then 'x' until the client goes away, chunked (no Content-Length).
func endless(prefix []byte) func(s *scripted, w http.ResponseWriter, r *http.Request, d string) {
	return func(s *scripted, w http.ResponseWriter, r *http.Request, d string) {
		if r.Method == http.MethodHead {
			return
		}
		if !s.write(w, prefix) {
			return
		}
		chunk := bytes.Repeat([]byte{'x'}, 64<<10)
		for r.Context().Err() == nil && s.write(w, chunk) {
		}
	}
}

// TestFillBounds: a fill reads no more than its bound plus one byte, and an upstream body longer
// than its bound is cut there and fails: the client gets a cut body (never more than the bound),
// nothing is stored or linked, no temporary file is left. The bound is the size the manifest
// declares (a Content-Length that disagrees is refused before the body is read), else the
// Content-Length, else proxy.max_fill_size.
func TestFillBounds(t *testing.T) {
	const declared = 1 << 20
	const maxFill = 3 << 20
	layer := make([]byte, declared)
	rand.Read(layer)
	for _, encrypted := range []bool{false, true} {
		for _, c := range []struct {
			name   string
			tag    string // "" for a request by digest only
			blob   func(s *scripted, w http.ResponseWriter, r *http.Request, d string)
			bound  int64 // the most berth may read
			status int   // what the client gets: 200 with a cut body, or an error status
		}{
			{"declared, endless", "v1", endless(layer), declared, http.StatusOK},
			{"digest only, endless", "", endless(layer), maxFill, http.StatusOK},
			{"declared, Content-Length disagrees", "v1", func(s *scripted, w http.ResponseWriter, r *http.Request, d string) {
				w.Header().Set("Content-Length", strconv.Itoa(declared+100))
				s.write(w, append(layer, make([]byte, 100)...))
			}, 0, http.StatusServiceUnavailable},
			{"digest only, longer than max_fill_size", "", func(s *scripted, w http.ResponseWriter, r *http.Request, d string) {
				// The right bytes, then more: even a body that starts right is cut.
				s.write(w, append(layer, make([]byte, maxFill)...))
			}, maxFill, http.StatusOK},
		} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", c.name, encrypted), func(t *testing.T) {
				up := startScripted(t, c.blob)
				d := up.image("v1", layer, declared)
				e := newBerth(t, up.srv.URL, proxy.Limits{MaxFillSize: maxFill}, encrypted, "hub")
				if c.tag != "" {
					if r := do(t, http.MethodGet, e.url+"/v2/hub/app/manifests/"+c.tag); r.status != http.StatusOK {
						t.Fatalf("GET manifest: %s", r)
					}
				}
				start := time.Now()
				r := do(t, http.MethodGet, e.url+"/v2/hub/app/blobs/"+d)
				took := time.Since(start)
				read := e.rules["hub"].Source.Stats().BlobBytes
				t.Logf("GET blob: %s in %v; berth read %d bytes of the %d the upstream sent", r, took.Round(time.Millisecond), read, up.sent.Load())
				if took > 30*time.Second {
					t.Errorf("the fill took %v: not bounded", took)
				}
				if read > c.bound+1 {
					t.Errorf("berth read %d bytes from the upstream; want at most %d (the bound and one)", read, c.bound+1)
				}
				switch {
				case c.status != http.StatusOK:
					if r.status != c.status || !bytes.Contains(r.body, []byte("UNAVAILABLE")) {
						t.Errorf("GET blob: %s; want %d UNAVAILABLE", r, c.status)
					}
				case r.status != http.StatusOK || r.err == nil || int64(len(r.body)) >= c.bound:
					t.Errorf("GET blob: %s; want 200 and a body cut short of %d bytes", r, c.bound)
				}
				e.cache.Close() // every fill has ended
				if _, err := e.blobs.Stat(context.Background(), oci.Digest(d)); err == nil {
					t.Errorf("the blob was stored")
				}
				if _, err := e.meta.BlobSize(context.Background(), "hub/library/app", oci.Digest(d)); err == nil {
					t.Errorf("the blob was linked")
				}
				if _, temps := e.blobFiles(t, d); len(temps) > 0 {
					t.Errorf("temporary files left: %v", temps)
				}
			})
		}
	}
}

// TestFillFreeSpaceFloor: with min_free_space above what the disk has free, a fill is refused
// before its body is read (with a declared size, before it is even asked for): the client gets
// 503 UNAVAILABLE, nothing is written. The same fill passes once the floor is below.
func TestFillFreeSpaceFloor(t *testing.T) {
	layer := make([]byte, 1<<20)
	rand.Read(layer)
	up := startScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request, d string) {
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
		s.write(w, layer)
	})
	d := up.image("v1", layer, int64(len(layer)))
	for _, encrypted := range []bool{false, true} {
		for _, declared := range []bool{true, false} {
			t.Run(fmt.Sprintf("declared=%v/encrypted=%v", declared, encrypted), func(t *testing.T) {
				e := newBerth(t, up.srv.URL, proxy.Limits{}, encrypted, "hub")
				free, err := e.blobs.(storage.FreeSpacer).FreeSpace()
				if err != nil {
					t.Fatal(err)
				}
				e.cache.SetLimits(proxy.Limits{MinFreeSpace: free + 1<<30})
				if declared {
					if r := do(t, http.MethodGet, e.url+"/v2/hub/app/manifests/v1"); r.status != http.StatusOK {
						t.Fatalf("GET manifest: %s", r)
					}
				}
				gets := up.gets.Load()
				r := do(t, http.MethodGet, e.url+"/v2/hub/app/blobs/"+d)
				t.Logf("GET blob with the floor above the free space (%d bytes free): %s; upstream blob GETs %d", free, r, up.gets.Load()-gets)
				if r.status != http.StatusServiceUnavailable || !bytes.Contains(r.body, []byte("UNAVAILABLE")) ||
					!bytes.Contains(r.body, []byte("disk space")) {
					t.Errorf("GET blob with the floor above the free space: %s; want 503 UNAVAILABLE saying why", r)
				}
				if read := e.rules["hub"].Source.Stats().BlobBytes; read != 0 {
					t.Errorf("berth read %d bytes of the body", read)
				}
				if n := up.gets.Load() - gets; declared && n != 0 {
					t.Errorf("%d upstream blob GETs for a blob whose declared size is over the floor; want none", n)
				}
				if _, err := e.blobs.Stat(context.Background(), oci.Digest(d)); err == nil {
					t.Errorf("the blob was stored")
				}
				e.cache.SetLimits(proxy.Limits{MinFreeSpace: free / 2})
				if r := do(t, http.MethodGet, e.url+"/v2/hub/app/blobs/"+d); r.status != http.StatusOK || !bytes.Equal(r.body, layer) {
					t.Errorf("GET blob with the floor below the free space: %s", r)
				}
			})
		}
	}
}

// TestCacheNestedRules: a rule whose prefix lies inside another's (hub/inner in hub) has its own
// upstream's proof: what the inner rule downloaded does not count for the outer one, which
// downloads it again.
func TestCacheNestedRules(t *testing.T) {
	hub := startHub(t, hubemu.Options{})
	if _, err := hub.PushImage("library/app", "v1", randomLayers(t, 2, 64<<10)...); err != nil {
		t.Fatal(err)
	}
	e := newBerth(t, hub.RegistryURL(), proxy.Limits{}, false, "hub", "hub/inner")
	for _, repo := range []string{"hub/inner/app", "hub/app"} {
		before := hub.Counts().BlobGet
		if err := pull(http.DefaultClient, e.url, repo, "v1"); err != nil {
			t.Fatal(err)
		}
		if n := hub.Counts().BlobGet - before; n != 3 {
			t.Errorf("pull of %s after the other rule's: %d upstream blob GETs; want 3 (its own rule's upstream proves the blobs)", repo, n)
		}
	}
}
