package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A document as GET /berth/v1/upstreams sends it: one upstream that has seen traffic and errors,
// one that has not.
const upstreamsDoc = `{
  "upstreams": [
    {
      "prefix": "docker-hub",
      "upstream": "https://registry-1.docker.io",
      "quota": {"known": true, "limit": 100, "remaining": 76, "window": 21600000000000,
                "source": "203.0.113.7", "seen": "2026-01-02T03:04:05Z"},
      "requests": {"manifest_gets": 3, "manifest_heads": 41, "blob_gets": 7, "blob_heads": 2,
                   "blob_bytes": 28311552, "token_requests": 4,
                   "errors": {"network": 1, "rate_limited": 2, "timeout": 1}},
      "cache": {"hits": 40, "misses": 10, "revalidations": 41, "stale_serves": 5, "quota_saves": 6, "coalesced": 9,
                "client_manifest_gets": 44, "client_blob_bytes": 283115520, "pulls_saved": 41, "bytes_saved": 254803968}
    },
    {
      "prefix": "ghcr",
      "upstream": "ghcr",
      "quota": {"known": false, "limit": 0, "remaining": 0, "window": 0, "seen": "0001-01-01T00:00:00Z"},
      "requests": {"manifest_gets": 0, "manifest_heads": 0, "blob_gets": 0, "blob_heads": 0,
                   "blob_bytes": 0, "token_requests": 0, "errors": {}},
      "cache": {"hits": 0, "misses": 0, "revalidations": 0, "stale_serves": 0, "quota_saves": 0, "coalesced": 0}
    }
  ]
}
`

func TestUpstreamsTable(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(upstreamsDoc))
	}))
	defer srv.Close()

	out, _, err := runBerth(t, "", "upstreams", "--url", srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if path != "/berth/v1/upstreams" {
		t.Errorf("asked for %s", path)
	}
	for _, want := range []string{
		"docker-hub  (upstream https://registry-1.docker.io)\n",
		"  quota          76 of 100 remaining, window 6h, source 203.0.113.7 (seen ",
		"  manifests      3 GET, 41 HEAD\n",
		"  blobs          7 GET, 27.0 MiB fetched, 2 HEAD\n",
		"  cache          40 hits, 10 misses, 41 revalidations\n",
		"  stale serves   5\n",
		"  quota saves    6\n",
		"  coalesced      9 waiters\n",
		"  saved          41 of 44 pulls, 243.0 MiB of 270.0 MiB sent\n",
		"  errors         rate_limited 2, network 1, timeout 1\n",
		"\nghcr\n",
		"  quota          unknown (no upstream response has carried rate-limit headers yet)\n",
		"  blobs          0 GET, 0 B fetched, 0 HEAD\n",
		"  errors         none\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// --json is the document as berth sent it; host:port means http; $BERTH_URL is the default.
	t.Setenv("BERTH_URL", strings.TrimPrefix(srv.URL, "http://"))
	out, _, err = runBerth(t, "", "upstreams", "--json")
	if err != nil || out != upstreamsDoc {
		t.Errorf("--json: %v\n%s", err, out)
	}
}

func TestUpstreamsErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, _, err := runBerth(t, "", "upstreams", "--url", srv.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404: err = %v", err)
	}
	srv.Close()
	if _, _, err := runBerth(t, "", "upstreams", "--url", srv.URL); err == nil || !strings.Contains(err.Error(), "cannot reach berth") {
		t.Errorf("nothing listening: err = %v", err)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 28311552: "27.0 MiB", 5 << 40: "5.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{6 * time.Hour: "6h", time.Hour + 30*time.Minute: "1h30m", 90 * time.Second: "1m30s",
		time.Minute: "1m", 3 * time.Second: "3s", 1500 * time.Millisecond: "2s", 0: "0s"} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
