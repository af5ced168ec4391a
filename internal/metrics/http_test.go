package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/gc"
	"github.com/berth/berth/internal/proxy"
)

func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/v2/":                                  "base",
		"/v2":                                   "base",
		"/v2/_catalog":                          "catalog",
		"/v2/a/b/manifests/latest":              "manifest",
		"/v2/a/blobs/b/manifests/sha256:ab":     "manifest", // a repository named a/blobs/b
		"/v2/a/manifests/b/blobs/sha256:ab":     "blob",     // a repository named a/manifests/b
		"/v2/a/blobs/uploads/":                  "upload",
		"/v2/a/blobs/uploads/0c1d-2e":           "upload",
		"/v2/uploads/blobs/sha256:ab":           "blob",
		"/v2/a/tags/list":                       "tags",
		"/v2/tags/list/tags/list":               "tags",
		"/v2/a/referrers/sha256:ab":             "referrers",
		"/v2/a/b":                               "other",
		"/token":                                "token",
		"/berth/v1/upstreams":                   "api",
		"/ui/":                                  "console",
		"/ui/repositories/a":                    "console",
		"/healthz":                              "health",
		"/metrics":                              "metrics",
		"/favicon.ico":                          "other",
		"/v2/a/manifests/latest/../../../etc/x": "manifest",
	} {
		if got := Route(path); got != want {
			t.Errorf("Route(%q) = %s, want %s", path, got, want)
		}
	}
}

// TestMiddlewareSendfile: a file sent through the middleware still reaches net/http's own
// ReadFrom (which uses sendfile), and its bytes are counted.
func TestMiddlewareSendfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", 1<<20)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(Build{Version: "test"})
	var passed bool
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		_, passed = w.(io.ReaderFrom)
		io.Copy(w, f) // uses w.ReadFrom, as http.ServeContent does
	})))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v2/a/blobs/sha256:ab")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 1<<20 || !passed {
		t.Fatalf("got %d bytes; the writer passed ReadFrom: %v", n, passed)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if want := `berth_http_response_body_bytes_total{route="blob"} 1.048576e+06`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s:\n%s", want, grep(rec.Body.String(), "berth_http"))
	}
}

func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCertificates(t *testing.T) {
	m := New(Build{})
	at := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	m.Register(Certificates(func() map[string]time.Time { return map[string]time.Time{"registry.example.com": at} }))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	want := `berth_tls_certificate_expiry_timestamp_seconds{domain="registry.example.com"} 1.8039024e+09`
	if !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s:\n%s", want, grep(rec.Body.String(), "berth_tls"))
	}
}

// TestJobCounters: what the jobs report adds up, and a nil Metrics (metrics off) takes it all.
func TestJobCounters(t *testing.T) {
	var off *Metrics
	off.GCPass(gc.Stats{Deleted: 1})
	off.Evicted(proxy.EvictStats{Images: 1})
	off.Expired(1)
	m := New(Build{})
	m.GCPass(gc.Stats{Reviewed: 5, Deleted: 3, Bytes: 300, Failed: 1})
	m.Evicted(proxy.EvictStats{Images: 2, Blobs: 4, Bytes: 4096})
	m.Expired(7)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{"berth_gc_passes_total 1", "berth_gc_blobs_deleted_total 3", "berth_gc_deleted_bytes_total 300",
		"berth_gc_failures_total 1", "berth_cache_evicted_images_total 2", "berth_cache_evicted_bytes_total 4096",
		"berth_lifecycle_expired_manifests_total 7"} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, grep(rec.Body.String(), "berth_"))
		}
	}
}
