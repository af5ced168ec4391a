package metrics

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The route kinds of the route label: what a request asked for, never which repository.
var routes = [...]string{"base", "catalog", "manifest", "blob", "upload", "tags", "referrers",
	"token", "api", "console", "health", "metrics", "other"}

const (
	routeBase = iota
	routeCatalog
	routeManifest
	routeBlob
	routeUpload
	routeTags
	routeReferrers
	routeToken
	routeAPI
	routeConsole
	routeHealth
	routeMetrics
	routeOther
)

// The method label: the methods berth answers, and "other" for anything a client makes up.
var methods = [...]string{"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other"}

func methodIndex(m string) int {
	for i, name := range methods[:len(methods)-1] {
		if m == name {
			return i
		}
	}
	return len(methods) - 1
}

// Route is the route kind of a request path (the route label).
func Route(path string) string { return routes[routeIndex(path)] }

func routeIndex(path string) int {
	switch {
	case path == "/v2/" || path == "/v2":
		return routeBase
	case strings.HasPrefix(path, "/v2/"):
		return registryRoute(path[len("/v2"):])
	case path == "/token":
		return routeToken
	case strings.HasPrefix(path, "/berth/v1/"):
		return routeAPI
	case path == "/ui" || strings.HasPrefix(path, "/ui/"):
		return routeConsole
	case path == "/healthz" || path == "/readyz":
		return routeHealth
	case path == "/metrics":
		return routeMetrics
	}
	return routeOther
}

// registryRoute classifies a /v2 path by its last route keyword: a repository name may contain
// "manifests" or "blobs" as a component, but tags, digests and upload ids contain no slash, so
// the keyword nearest the end is the route's.
func registryRoute(p string) int {
	if p == "/_catalog" {
		return routeCatalog
	}
	if strings.HasSuffix(p, "/tags/list") {
		return routeTags
	}
	best, at := routeOther, -1
	for _, k := range []struct {
		word  string
		route int
	}{{"/manifests/", routeManifest}, {"/blobs/", routeBlob}, {"/referrers/", routeReferrers}} {
		if i := strings.LastIndex(p, k.word); i > at {
			best, at = k.route, i
		}
	}
	if best == routeBlob && strings.HasPrefix(p[at+len("/blobs/"):], "uploads") {
		return routeUpload
	}
	return best
}

// httpMetrics are the request metrics, with the series of each route and method made once.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	in, out  *prometheus.CounterVec
	inFlight *prometheus.GaugeVec

	mu     sync.Mutex
	series [len(routes)][len(methods)]atomic.Pointer[series]
	codes  sync.Map // codeKey -> prometheus.Counter
}

type series struct {
	duration prometheus.Observer
	in, out  prometheus.Counter
	inFlight prometheus.Gauge
}

type codeKey struct{ route, method, code int }

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	h := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_http_requests_total",
			Help: "HTTP requests answered, by route kind, method and status code."}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_http_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, by route kind and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}},
			[]string{"route", "method"}),
		in: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_http_request_body_bytes_total",
			Help: "Request body bytes received (pushed blobs and manifests), by route kind."}, []string{"route"}),
		out: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_http_response_body_bytes_total",
			Help: "Response body bytes sent (pulled blobs and manifests), by route kind."}, []string{"route"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_http_requests_in_flight",
			Help: "Requests being answered now, by route kind (route=\"upload\": pushes streaming in)."}, []string{"route"}),
	}
	reg.MustRegister(h.requests, h.duration, h.in, h.out, h.inFlight)
	return h
}

func (h *httpMetrics) seriesOf(route, method int) *series {
	if s := h.series[route][method].Load(); s != nil {
		return s
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.series[route][method].Load(); s != nil {
		return s
	}
	r, m := routes[route], methods[method]
	s := &series{duration: h.duration.WithLabelValues(r, m), in: h.in.WithLabelValues(r),
		out: h.out.WithLabelValues(r), inFlight: h.inFlight.WithLabelValues(r)}
	h.series[route][method].Store(s)
	return s
}

func (h *httpMetrics) counted(route, method, code int) prometheus.Counter {
	k := codeKey{route, method, code}
	if c, ok := h.codes.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := h.requests.WithLabelValues(routes[route], methods[method], strconv.Itoa(code))
	h.codes.Store(k, c)
	return c
}

// Middleware measures every request next answers.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	h := m.http
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, method := routeIndex(r.URL.Path), methodIndex(r.Method)
		s := h.seriesOf(route, method)
		s.inFlight.Inc()
		start := time.Now()
		rw := &writer{ResponseWriter: w}
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		defer func() { // also when the handler aborts the response (panic(http.ErrAbortHandler))
			s.inFlight.Dec()
			s.duration.Observe(time.Since(start).Seconds())
			code := rw.status
			if code == 0 {
				code = http.StatusOK
			}
			h.counted(route, method, code).Inc()
			if rw.n > 0 {
				s.out.Add(float64(rw.n))
			}
			if body != nil && body.n > 0 {
				s.in.Add(float64(body.n))
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// writer records a response's status and size. It passes ReadFrom through, so that net/http
// still sends files with sendfile, and Unwrap, so that http.ResponseController still flushes.
type writer struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *writer) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are interim: the final status comes later
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.n += n
	return n, err
}

func (w *writer) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the bytes read of a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
