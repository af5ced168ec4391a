package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth/berth/internal/hubemu"
)

// TestMetrics runs a scripted workload against a berth with authentication and a pull-through
// rule in front of the Docker Hub emulator (quota 100 per hour) — a push, two pulls, a cold and a
// warm pull through the cache, a refused login — and checks each named series of /metrics,
// parsed with Prometheus's own text parser. /metrics itself answers 401 without credentials and
// 403 to an account neither admin on * nor named in metrics.accounts.
func TestMetrics(t *testing.T) {
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true, Limit: 100, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	ptImage(t, hub, "library/app", "v1")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(`proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: ttl:24h
      quota_reserve: 5
gc:
  interval: 1s
metrics:
  accounts: [scraper]
`, hub.RegistryURL())))
	b := &berth{t: t, Data: t.TempDir(), secure: true, config: cfg}
	open := freeAddr(t) // --metrics-addr: the same metrics, without authentication
	b.start("--metrics-addr", open)
	t.Cleanup(b.Stop)
	admin := basicAuth("admin", b.AdminPassword())
	scraper := basicAuth("scraper", strings.TrimSpace(b.Admin("robot", "add", "scraper")))
	nobody := basicAuth("nobody", strings.TrimSpace(b.Admin("robot", "add", "nobody")))

	if r := authDo(t, http.MethodGet, b.URL()+"/metrics", "", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials: %s, want 401", r)
	}
	if r := authDo(t, http.MethodGet, b.URL()+"/metrics", nobody, nil); r.Status != http.StatusForbidden {
		t.Errorf("/metrics for a robot not in metrics.accounts: %s, want 403", r)
	}

	// The workload.
	img := authPushImage(t, b, admin, "team/app", "v1", "hello metrics")
	pushed := int64(len(img.Body))
	var localBytes int64
	for range 2 {
		localBytes = clientPull(t, b, admin, "team/app", "v1")
	}
	var cachedBytes int64
	for range 2 { // cold, then warm
		cachedBytes = clientPull(t, b, admin, "docker-hub/app", "v1")
	}
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/", basicAuth("admin", "wrong"), nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("a wrong password: %s, want 401", r)
	}
	authToken(t, b, "admin", b.AdminPassword(), "repository:team/app:pull")

	// Counters are written when a response ends, which a client may see first: scrape until
	// every series says what it should, or report what the last scrape said.
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"berth_build_info", nil, 1},
		{"berth_http_requests_total", map[string]string{"route": "manifest", "method": "PUT", "code": "201"}, 1},
		{"berth_http_requests_total", map[string]string{"route": "manifest", "method": "GET", "code": "200"}, 4},
		{"berth_http_requests_total", map[string]string{"route": "upload", "method": "POST", "code": "202"}, 2},
		{"berth_http_requests_total", map[string]string{"route": "upload", "method": "PUT", "code": "201"}, 2},
		// the start's readiness probe and the wrong password
		{"berth_http_requests_total", map[string]string{"route": "base", "method": "GET", "code": "401"}, 2},
		{"berth_http_request_duration_seconds_count", map[string]string{"route": "manifest", "method": "GET"}, 4},
		{"berth_http_request_body_bytes_total", map[string]string{"route": "manifest"}, float64(pushed)},
		{"berth_http_response_body_bytes_total", map[string]string{"route": "blob"}, float64(2*localBytes + 2*cachedBytes)},
		{"berth_uploads_open", nil, 0},
		{"berth_upstream_requests_total", map[string]string{"rule": "docker-hub", "kind": "manifest_get", "code": "200"}, 1},
		{"berth_upstream_requests_total", map[string]string{"rule": "docker-hub", "kind": "blob_get", "code": "200"}, 3},
		{"berth_upstream_quota_limit", map[string]string{"rule": "docker-hub"}, 100},
		{"berth_upstream_quota_remaining", map[string]string{"rule": "docker-hub"}, 99},
		{"berth_upstream_quota_reserve", map[string]string{"rule": "docker-hub"}, 5},
		{"berth_upstream_blob_bytes_total", map[string]string{"rule": "docker-hub"}, float64(cachedBytes)},
		{"berth_cache_client_manifest_gets_total", map[string]string{"rule": "docker-hub"}, 2},
		{"berth_cache_upstream_pulls_saved_total", map[string]string{"rule": "docker-hub"}, 1},
		{"berth_cache_sent_bytes_total", map[string]string{"rule": "docker-hub"}, float64(2 * cachedBytes)},
		{"berth_cache_saved_bytes_total", map[string]string{"rule": "docker-hub"}, float64(cachedBytes)},
		{"berth_cache_misses_total", map[string]string{"rule": "docker-hub"}, 4},
		{"berth_cache_hits_total", map[string]string{"rule": "docker-hub"}, 1},
		{"berth_cache_stale_serves_total", map[string]string{"rule": "docker-hub"}, 0},
		{"berth_cache_fills_in_flight", map[string]string{"rule": "docker-hub"}, 0},
		{"berth_auth_logins_total", map[string]string{"result": "failed"}, 1},
		{"berth_auth_logins_total", map[string]string{"result": "throttled"}, 0},
		{"berth_auth_refusals_total", map[string]string{"code": "403"}, 0},
		{"berth_auth_tokens_issued_total", nil, 1},
		{"berth_http_requests_in_flight", map[string]string{"route": "manifest"}, 0},
	}
	var problems []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrape(t, b, scraper)
		problems = problems[:0]
		for _, w := range want {
			got, ok := sample(fams, w.name, w.labels)
			if !ok {
				problems = append(problems, fmt.Sprintf("%s%v: absent", w.name, w.labels))
			} else if got != w.value {
				problems = append(problems, fmt.Sprintf("%s%v = %v, want %v", w.name, w.labels, got, w.value))
			}
		}
		// Each successful login is verified once (then remembered): at least admin's and the scraper's.
		if got, _ := sample(fams, "berth_auth_logins_total", map[string]string{"result": "ok"}); got < 2 {
			problems = append(problems, fmt.Sprintf("berth_auth_logins_total{result=ok} = %v, want at least 2", got))
		}
		if got, _ := sample(fams, "berth_auth_refusals_total", map[string]string{"code": "401"}); got < 1 {
			problems = append(problems, fmt.Sprintf("berth_auth_refusals_total{code=401} = %v, want at least 1", got))
		}
		// The collector runs every second (gc.interval): its passes are counted.
		if got, _ := sample(fams, "berth_gc_passes_total", nil); got < 1 {
			problems = append(problems, fmt.Sprintf("berth_gc_passes_total = %v, want at least 1", got))
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
	// An administrator of every repository reads them too.
	if r := authDo(t, http.MethodGet, b.URL()+"/metrics", admin, nil); r.Status != http.StatusOK {
		t.Errorf("/metrics for admin: %s", r)
	}
	// An upload started and not finished is open.
	if r := authDo(t, http.MethodPost, b.URL()+"/v2/team/app/blobs/uploads/", admin, nil); r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %s", r)
	}
	if got, _ := sample(scrape(t, b, scraper), "berth_uploads_open", nil); got != 1 {
		t.Errorf("berth_uploads_open = %v with one upload started, want 1", got)
	}
	// The unauthenticated listener serves the same metrics, and nothing else.
	if r := authDo(t, http.MethodGet, "http://"+open+"/metrics", "", nil); r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("berth_cache_upstream_pulls_saved_total{rule=\"docker-hub\"} 1")) {
		t.Errorf("--metrics-addr /metrics: %d\n%s", r.Status, r.Body)
	}
	if r := authDo(t, http.MethodGet, "http://"+open+"/v2/", "", nil); r.Status != http.StatusNotFound {
		t.Errorf("--metrics-addr /v2/: %d, want 404", r.Status)
	}
	// No series carries a repository name or a digest.
	text := authDo(t, http.MethodGet, b.URL()+"/metrics", scraper, nil).Body
	for _, leak := range []string{"team/app", "sha256:", "library/app"} {
		if bytes.Contains(text, []byte(leak)) {
			t.Errorf("/metrics names %q", leak)
		}
	}
}

// scrape reads /metrics with the given credentials and parses it with Prometheus's text parser.
func scrape(t *testing.T, b *berth, authz string) map[string]*dto.MetricFamily {
	t.Helper()
	r := authDo(t, http.MethodGet, b.URL()+"/metrics", authz, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sample is the value of the series of the family name with (at least) the given labels; a
// histogram's count and sum are asked for as NAME_count and NAME_sum.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	base, part := name, ""
	for _, suffix := range []string{"_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, suffix); ok && fams[name] == nil {
			base, part = b, suffix
		}
	}
	f := fams[base]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case part == "_count":
			return float64(m.GetHistogram().GetSampleCount()), true
		case part == "_sum":
			return m.GetHistogram().GetSampleSum(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// clientPull GETs a manifest by tag and each blob it names, as a runtime pulls, and returns the
// blob bytes received.
func clientPull(t *testing.T, b *berth, authz, repo, tag string) int64 {
	t.Helper()
	r := authDo(t, http.MethodGet, b.URL()+"/v2/"+repo+"/manifests/"+tag, authz, nil, "Accept", clOCIManifest+", application/vnd.docker.distribution.manifest.v2+json")
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s:%s: %s", repo, tag, r)
	}
	var n int64
	for _, d := range manifestBlobs(t, r.Body) {
		br := authDo(t, http.MethodGet, b.URL()+"/v2/"+repo+"/blobs/"+d, authz, nil)
		if br.Status != http.StatusOK || clDigest(br.Body) != d {
			t.Fatalf("GET blob %s of %s: %d, digest %s", d, repo, br.Status, clDigest(br.Body))
		}
		n += int64(len(br.Body))
	}
	return n
}

// manifestBlobs lists the config and layer digests of an image manifest.
func manifestBlobs(t *testing.T, body []byte) []string {
	t.Helper()
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	out := []string{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// TestMetricsOpenAndOff: metrics.open serves /metrics to anyone; metrics.off serves none (404)
// and measures nothing.
func TestMetricsOpenAndOff(t *testing.T) {
	for _, c := range []struct {
		config string
		want   int
	}{{"metrics:\n  open: true\n", http.StatusOK}, {"metrics:\n  off: true\n", http.StatusNotFound}} {
		cfg := filepath.Join(t.TempDir(), "berth.yaml")
		clWriteFile(t, cfg, []byte(c.config))
		b := &berth{t: t, Data: t.TempDir(), secure: true, config: cfg}
		b.start()
		r := authDo(t, http.MethodGet, b.URL()+"/metrics", "", nil)
		if r.Status != c.want || c.want == http.StatusOK && !bytes.Contains(r.Body, []byte("berth_build_info")) {
			t.Errorf("%q: GET /metrics without credentials: %s, want %d", c.config, r, c.want)
		}
		b.Stop()
	}
}
