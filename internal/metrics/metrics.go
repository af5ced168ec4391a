// Package metrics exposes berth's Prometheus metrics: HTTP requests (Middleware), and what the
// other packages count themselves (the pull-through cache, authentication, jobs), read at each
// scrape rather than counted twice. Labels stay few and bounded: a route kind, a method, a status,
// a pull-through rule's prefix; never a repository name or a digest.
package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth/berth/internal/gc"
	"github.com/berth/berth/internal/proxy"
)

// Metrics is one berth process's metrics. The job counters (GCPass, Evicted, Expired) may be
// called on nil, when metrics are off.
type Metrics struct {
	reg  *prometheus.Registry
	http *httpMetrics

	gcPasses, gcDeleted, gcBytes, gcFailed prometheus.Counter
	evicted, evictedBytes                  prometheus.Counter
	expired                                prometheus.Counter
}

// Build is what berth_build_info reports.
type Build struct {
	Version, Commit, GoVersion string
}

// New returns the metrics of a process built as b, with the Go runtime's and the process's own.
func New(b Build) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if b.GoVersion == "" {
		b.GoVersion = runtime.Version()
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_build_info",
		Help:        "Always 1; the labels say which berth this is.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion}})
	info.Set(1)
	reg.MustRegister(info)
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{reg: reg, http: newHTTPMetrics(reg),
		gcPasses:     counter("berth_gc_passes_total", "Garbage collection passes this process ran."),
		gcDeleted:    counter("berth_gc_blobs_deleted_total", "Blobs garbage collection deleted."),
		gcBytes:      counter("berth_gc_deleted_bytes_total", "Bytes of the blobs garbage collection deleted."),
		gcFailed:     counter("berth_gc_failures_total", "Garbage blobs whose deletion failed (tried again on the next pass)."),
		evicted:      counter("berth_cache_evicted_images_total", "Cached images evicted by the pull-through caches' bounds."),
		evictedBytes: counter("berth_cache_evicted_bytes_total", "Bytes of the blobs eviction deleted at once."),
		expired:      counter("berth_lifecycle_expired_manifests_total", "Manifests lifecycle policies expired."),
	}
	return m
}

// Register adds collectors (Cache, Auth, Uploads, or a package's own).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// Handler serves the metrics in the Prometheus text format (or OpenMetrics, when asked).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// GCPass counts a garbage collection pass.
func (m *Metrics) GCPass(st gc.Stats) {
	if m == nil {
		return
	}
	m.gcPasses.Inc()
	m.gcDeleted.Add(float64(st.Deleted))
	m.gcBytes.Add(float64(st.Bytes))
	m.gcFailed.Add(float64(st.Failed))
}

// Evicted counts an eviction sweep.
func (m *Metrics) Evicted(st proxy.EvictStats) {
	if m == nil {
		return
	}
	m.evicted.Add(float64(st.Images))
	m.evictedBytes.Add(float64(st.Bytes))
}

// Expired counts manifests a lifecycle run expired.
func (m *Metrics) Expired(n int) {
	if m != nil {
		m.expired.Add(float64(n))
	}
}
