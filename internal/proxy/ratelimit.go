package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The rate-limit headers Docker Hub sends on manifest GETs and HEADs (DESIGN.md §2).
const (
	headerRateLimit     = "Ratelimit-Limit"
	headerRateRemaining = "Ratelimit-Remaining"
	headerRateSource    = "Docker-Ratelimit-Source"
)

// ParseRateLimit reads the rate-limit headers of a registry response: `ratelimit-limit: 100;w=21600`,
// `ratelimit-remaining: 76;w=21600` and `docker-ratelimit-source: 1.2.3.4` (names in any case,
// spaces tolerated). ok is false when neither count is present and well formed; a malformed or
// missing header leaves its field zero. Known is ok, Window comes from either header's w= (0 when
// neither has one), and Seen is the time of the call.
func ParseRateLimit(h http.Header) (q Quota, ok bool) {
	q, hasLimit, hasRemaining := parseRateLimit(h)
	if !hasLimit && !hasRemaining {
		return Quota{}, false
	}
	q.Known, q.Seen = true, time.Now()
	return q, true
}

// parseRateLimit is ParseRateLimit that says which counts were present and well formed.
func parseRateLimit(h http.Header) (q Quota, hasLimit, hasRemaining bool) {
	var limitWindow, remainingWindow time.Duration
	if v, ok := rateLimitHeader(h, headerRateLimit); ok {
		q.Limit, limitWindow, hasLimit = parseQuotaValue(v)
	}
	if v, ok := rateLimitHeader(h, headerRateRemaining); ok {
		q.Remaining, remainingWindow, hasRemaining = parseQuotaValue(v)
	}
	switch {
	case hasLimit && limitWindow > 0:
		q.Window = limitWindow
	case hasRemaining:
		q.Window = remainingWindow
	}
	if v, ok := rateLimitHeader(h, headerRateSource); ok {
		q.Source = strings.TrimSpace(v)
	}
	return q, hasLimit, hasRemaining
}

// rateLimitHeader finds a header by name in any case, also in a header map that was built by hand
// with keys that are not in canonical form.
func rateLimitHeader(h http.Header, name string) (string, bool) {
	if vs := h[name]; len(vs) > 0 {
		return vs[0], true
	}
	for k, vs := range h {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0], true
		}
	}
	return "", false
}

// parseQuotaValue parses "76;w=21600" (also " 76 ; w = 21600 ", w quoted, or the list form of the
// IETF draft "100, 100;w=21600", whose first item counts and whose first w= is the window).
func parseQuotaValue(v string) (n int, window time.Duration, ok bool) {
	items := strings.Split(v, ",")
	for i, item := range items {
		parts := strings.Split(item, ";")
		if i == 0 {
			num, err := strconv.Atoi(strings.TrimSpace(parts[0]))
			if err != nil || num < 0 {
				return 0, 0, false
			}
			n, ok = num, true
		}
		for _, p := range parts[1:] {
			k, val, found := strings.Cut(p, "=")
			if !found || !strings.EqualFold(strings.TrimSpace(k), "w") {
				continue
			}
			secs, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
			if err != nil || secs < 0 || secs > 1<<32 {
				if i == 0 {
					return 0, 0, false // the count's own window is malformed: distrust the header
				}
				continue
			}
			if window == 0 {
				window = time.Duration(secs) * time.Second
			}
		}
	}
	return n, window, ok
}

// recordQuota merges the rate-limit headers of a response into u.quota: the counts present replace
// the ones known, missing or malformed headers leave them as they were.
func (u *Upstream) recordQuota(h http.Header) {
	q, hasLimit, hasRemaining := parseRateLimit(h)
	if !hasLimit && !hasRemaining {
		return
	}
	now := u.st.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if hasLimit {
		u.quota.Limit = q.Limit
	}
	if hasRemaining {
		u.quota.Remaining = q.Remaining
	}
	if q.Window > 0 {
		u.quota.Window = q.Window
	}
	if q.Source != "" {
		u.quota.Source = q.Source
	}
	u.quota.Known, u.quota.Seen = true, now
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
// A date in the past is a zero delay.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 || secs > 1<<32 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
