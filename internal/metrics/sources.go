package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/proxy"
)

// collector turns what another package counted into metrics at each scrape.
type collector struct {
	descs   []*prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// descs builds descriptions and remembers them for Describe.
type descs []*prometheus.Desc

func (ds *descs) add(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	*ds = append(*ds, d)
	return d
}

// Cache reports the pull-through cache's counters per rule (its prefix is the rule label).
func Cache(c *proxy.Cache) prometheus.Collector {
	var ds descs
	upReq := ds.add("berth_upstream_requests_total", "Requests sent to upstream registries, by rule, kind (manifest_get, manifest_head, blob_get, blob_head, token, tags) and the status answered (0: none, a network failure).", "rule", "kind", "code")
	upErr := ds.add("berth_upstream_failures_total", "Upstream requests that failed, by rule and kind of failure (network, timeout, ratelimit, unavailable, auth, ...).", "rule", "failure")
	upBytes := ds.add("berth_upstream_blob_bytes_total", "Blob bytes downloaded from upstream registries.", "rule")
	qLimit := ds.add("berth_upstream_quota_limit", "The pull quota the upstream reported last (ratelimit-limit); absent until one did.", "rule")
	qRemaining := ds.add("berth_upstream_quota_remaining", "Pulls left in the upstream's window as it reported last (ratelimit-remaining); absent until one did.", "rule")
	qReserve := ds.add("berth_upstream_quota_reserve", "The rule's quota reserve: at or below it, cached tags are served without asking the upstream.", "rule")
	qWindow := ds.add("berth_upstream_quota_window_seconds", "The upstream's quota window.", "rule")
	qSeen := ds.add("berth_upstream_quota_seen_timestamp_seconds", "When the upstream last reported its quota.", "rule")
	hits := ds.add("berth_cache_hits_total", "Manifests and blobs served from the cache without an upstream GET.", "rule")
	misses := ds.add("berth_cache_misses_total", "Manifests and blobs that needed an upstream GET.", "rule")
	revalidations := ds.add("berth_cache_revalidations_total", "Cached tags checked with the upstream (manifest HEADs, which Docker Hub does not count).", "rule")
	quotaSaves := ds.add("berth_cache_quota_reserve_serves_total", "Tag checks skipped because the upstream quota was at the reserve.", "rule")
	stale := ds.add("berth_cache_stale_serves_total", "Cached manifests served because the upstream failed.", "rule")
	coalesced := ds.add("berth_cache_coalesced_total", "Requests that joined an upstream fetch already under way instead of sending their own.", "rule")
	clientGets := ds.add("berth_cache_client_manifest_gets_total", "Manifest GETs berth answered for the rule's repositories (pulls, as Docker Hub counts them).", "rule")
	saved := ds.add("berth_cache_upstream_pulls_saved_total", "Client manifest GETs the upstream did not have to answer: client GETs less the upstream's successful manifest GETs.", "rule")
	sent := ds.add("berth_cache_sent_bytes_total", "Blob bytes sent to clients from the rule's repositories.", "rule")
	bytesSaved := ds.add("berth_cache_saved_bytes_total", "Blob bytes sent to clients that were not downloaded for them: bytes sent less bytes downloaded.", "rule")
	fills := ds.add("berth_cache_fills_in_flight", "Blob downloads from the upstream under way.", "rule")

	// The savings are differences of two counters, which warming or a revalidation fetch can
	// make shrink; a counter must not go down, so each is reported as the highest seen.
	var mu sync.Mutex
	highest := map[string][2]int64{}
	counter := func(ch chan<- prometheus.Metric, d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	return &collector{descs: ds, collect: func(ch chan<- prometheus.Metric) {
		for _, st := range c.Status() {
			r := st.Prefix
			for kind, codes := range st.Requests.Responses {
				for code, n := range codes {
					counter(ch, upReq, n, r, kind, strconv.Itoa(code))
				}
			}
			for kind, n := range st.Requests.Errors {
				counter(ch, upErr, n, r, string(kind))
			}
			counter(ch, upBytes, st.Requests.BlobBytes, r)
			if q := st.Quota; q.Known {
				gauge(ch, qLimit, float64(q.Limit), r)
				gauge(ch, qRemaining, float64(q.Remaining), r)
				gauge(ch, qWindow, q.Window.Seconds(), r)
				gauge(ch, qSeen, float64(q.Seen.UnixNano())/1e9, r)
			}
			gauge(ch, qReserve, float64(st.Reserve), r)
			cs := st.Cache
			counter(ch, hits, cs.Hits, r)
			counter(ch, misses, cs.Misses, r)
			counter(ch, revalidations, cs.Revalidations, r)
			counter(ch, quotaSaves, cs.QuotaSaves, r)
			counter(ch, stale, cs.StaleServes, r)
			counter(ch, coalesced, cs.Coalesced, r)
			counter(ch, clientGets, cs.ClientGets, r)
			counter(ch, sent, cs.ClientBytes, r)
			mu.Lock()
			h := highest[r]
			h[0], h[1] = max(h[0], cs.PullsSaved), max(h[1], cs.BytesSaved)
			highest[r] = h
			mu.Unlock()
			counter(ch, saved, h[0], r)
			counter(ch, bytesSaved, h[1], r)
			gauge(ch, fills, float64(st.FillsInFlight), r)
		}
	}}
}

// Auth reports the authentication service's decisions.
func Auth(s *auth.Service) prometheus.Collector {
	var ds descs
	logins := ds.add("berth_auth_logins_total", "Logins by result: ok (a secret verified; a login remembered from the last minute is not verified again), failed, throttled.", "result")
	tokens := ds.add("berth_auth_tokens_issued_total", "Tokens the token endpoint issued.")
	refused := ds.add("berth_auth_refusals_total", "Registry requests refused, by answer: 401 (credentials needed or wrong), 403 (denied), 404 (a repository the caller may not see), 429 (logins throttled).", "code")
	return &collector{descs: ds, collect: func(ch chan<- prometheus.Metric) {
		st := s.Stats()
		c := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		c(logins, st.Logins, "ok")
		c(logins, st.LoginsFailed, "failed")
		c(logins, st.LoginsThrottled, "throttled")
		c(tokens, st.TokensIssued)
		c(refused, st.Unauthenticated, "401")
		c(refused, st.Denied, "403")
		c(refused, st.Hidden, "404")
		c(refused, st.Throttled, "429")
	}}
}

// UploadLister lists upload sessions (metadata.Store).
type UploadLister interface {
	UploadsBefore(ctx context.Context, t time.Time) ([]string, error)
}

// Uploads reports the upload sessions open in the store: every replica sharing it reports the
// same number (use max, not sum, across replicas).
func Uploads(l UploadLister) prometheus.Collector {
	var ds descs
	open := ds.add("berth_uploads_open", "Upload sessions started and neither finished nor cancelled (in the store, shared by replicas).")
	return &collector{descs: ds, collect: func(ch chan<- prometheus.Metric) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ids, err := l.UploadsBefore(ctx, time.Now().Add(time.Hour))
		if err != nil {
			ch <- prometheus.NewInvalidMetric(open, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(open, prometheus.GaugeValue, float64(len(ids)))
	}}
}

// Webhooks reports each webhook's deliveries (the webhook's configured name is the label).
func Webhooks(stats func() []events.Stats) prometheus.Collector {
	var ds descs
	delivered := ds.add("berth_webhook_deliveries_total", "Events a webhook's receiver accepted (2xx).", "webhook")
	failed := ds.add("berth_webhook_failed_attempts_total", "Delivery attempts that failed (retried with backoff, or the last).", "webhook")
	abandoned := ds.add("berth_webhook_abandoned_total", "Events given up: out of attempts or too old.", "webhook")
	dropped := ds.add("berth_webhook_dropped_total", "Events never queued: the webhook's queue was full, or berth was stopping.", "webhook")
	queued := ds.add("berth_webhook_queued", "Events waiting for delivery.", "webhook")
	return &collector{descs: ds, collect: func(ch chan<- prometheus.Metric) {
		for _, s := range stats() {
			c := func(d *prometheus.Desc, v int64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
			}
			c(delivered, s.Delivered)
			c(failed, s.FailedAttempts)
			c(abandoned, s.Abandoned)
			c(dropped, s.Dropped)
			ch <- prometheus.MustNewConstMetric(queued, prometheus.GaugeValue, float64(s.Queued), s.Name)
		}
	}}
}

// Certificates reports when each certificate berth obtained (tls.acme) expires, by domain: an
// alert on the time left catches renewals that keep failing.
func Certificates(expiry func() map[string]time.Time) prometheus.Collector {
	var ds descs
	exp := ds.add("berth_tls_certificate_expiry_timestamp_seconds", "When the certificate served for a domain (tls.acme) expires.", "domain")
	return &collector{descs: ds, collect: func(ch chan<- prometheus.Metric) {
		for domain, t := range expiry() {
			ch <- prometheus.MustNewConstMetric(exp, prometheus.GaugeValue, float64(t.Unix()), domain)
		}
	}}
}
