package hubemu

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The pull rate limit, per https://docs.docker.com/docker-hub/usage/pulls/ ("Pull definition",
// "View pull rate and limit") and https://docs.docker.com/docker-hub/usage/ (limits per user type):
//
//   - A GET of a manifest is a pull; a HEAD is a version check and does not count; blobs do not
//     count. A multi-arch pull counts once per manifest fetched, which is what counting GETs gives.
//     Every manifest GET that passes auth counts, whatever the backend answers (a 404 too): the
//     docs do not say, and this is the side berth must survive.
//   - Anonymous pulls are counted per IPv4 address or IPv6 /64 (docker-ratelimit-source is that
//     address or prefix); pulls with a token issued for Basic credentials per user (the source is
//     the username; Docker Hub sends an account id).
//   - GET and HEAD of manifests carry ratelimit-limit: L;w=W, ratelimit-remaining: R;w=W (W the
//     window in seconds; R after this request) and docker-ratelimit-source. No limit, no headers.
//   - Over the limit: 429 TOOMANYREQUESTS with Docker Hub's message, the same headers (remaining
//     0), and Retry-After. The docs say the limit "is calculated on a 6-hour basis"; the emulator
//     uses a sliding window: each pull stops counting Window after it was made, and Retry-After is
//     the seconds (rounded up) until the oldest pull in the window leaves it, i.e. until one pull is
//     free again. After a whole Window without pulls the quota is full again.
//   - With Options.HeadLimitedAtZero a HEAD answers 429 too while the quota is 0.

type quota struct {
	mu    sync.Mutex
	pulls map[string][]time.Time // key ("ip:A", "user:U") -> times of the pulls in the window, oldest first
}

func (q *quota) init() { q.pulls = map[string][]time.Time{} }

// use prunes key's window and, if spend and there is room, records a pull. It returns the
// remaining quota after that, whether the request is within the limit, and when the quota is 0,
// how long until a pull is free.
func (q *quota) use(key string, limit int, window time.Duration, spend bool) (remaining int, ok bool, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	ts := prune(q.pulls[key], now, window)
	ok = true
	if spend {
		if len(ts) < limit {
			ts = append(ts, now)
		} else {
			ok = false
		}
	}
	q.pulls[key] = ts
	remaining = max(limit-len(ts), 0)
	if remaining == 0 && len(ts) > 0 {
		wait = ts[len(ts)-limit].Add(window).Sub(now)
	}
	return remaining, ok, wait
}

// set makes key's remaining quota n, by forgetting the oldest pulls or adding pulls made now.
func (q *quota) set(key string, limit int, window time.Duration, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	ts := prune(q.pulls[key], now, window)
	want := min(max(limit-n, 0), limit)
	if len(ts) > want {
		ts = append([]time.Time(nil), ts[len(ts)-want:]...)
	}
	for len(ts) < want {
		ts = append(ts, now)
	}
	q.pulls[key] = ts
}

func (q *quota) keys() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ks []string
	for k := range q.pulls {
		ks = append(ks, k)
	}
	return ks
}

// prune drops the pulls that have left the window.
func prune(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	cut := now.Add(-window)
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	return ts[i:]
}

// sourceIP is the rate-limit source of a request: its IPv4 address, or its IPv6 /64 prefix.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr().String()
	}
	return a.String()
}

// limitOf returns the quota key, source, limit and over-limit message for a request with grant g.
func (h *Hub) limitOf(r *http.Request, g *grant) (key, source string, limit int, msg string) {
	if g.user != "" {
		return "user:" + g.user, g.user, h.opts.AuthenticatedLimit,
			fmt.Sprintf("You have reached your pull rate limit as '%s'. You may increase the limit by upgrading. https://www.docker.com/increase-rate-limit", g.user)
	}
	ip := sourceIP(r)
	return "ip:" + ip, ip, h.opts.Limit,
		"You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"
}

// checkQuota applies the limit to a manifest GET or HEAD: it sets the rate-limit headers, and
// answers 429 and returns false when the request is over the limit.
func (h *Hub) checkQuota(w http.ResponseWriter, r *http.Request, g *grant) bool {
	get := r.Method == http.MethodGet
	key, source, limit, msg := h.limitOf(r, g)
	if limit == 0 {
		if get {
			h.counts.add(func(c *Counts) { c.Pulls++ })
		}
		return true
	}
	remaining, ok, wait := h.quota.use(key, limit, h.opts.Window, get)
	win := int64(h.opts.Window / time.Second)
	hd := w.Header()
	hd.Set("RateLimit-Limit", fmt.Sprintf("%d;w=%d", limit, win))
	hd.Set("RateLimit-Remaining", fmt.Sprintf("%d;w=%d", remaining, win))
	hd.Set("Docker-RateLimit-Source", source)
	if ok && (get || remaining > 0 || !h.opts.HeadLimitedAtZero) {
		if get {
			h.counts.add(func(c *Counts) { c.Pulls++ })
		}
		return true
	}
	h.counts.add(func(c *Counts) { c.Rejected429++ })
	hd.Set("Retry-After", strconv.Itoa(max(int(math.Ceil(wait.Seconds())), 1)))
	writeErrors(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", msg, nil)
	return false
}

// quotaKey is the key and limit of a source as SetQuotaRemaining names it.
func (h *Hub) quotaKey(source string) (string, int) {
	if _, ok := h.opts.Users[source]; ok {
		return "user:" + source, h.opts.AuthenticatedLimit
	}
	return "ip:" + source, h.opts.Limit
}

// SetQuotaRemaining puts the remaining quota of a source (an IP such as "127.0.0.1", an IPv6 /64
// prefix such as "2001:db8::", or a username from Options.Users) at n, as if pulls had just been
// made (they leave the window Window from now). No effect on a source without a limit.
func (h *Hub) SetQuotaRemaining(source string, n int) {
	key, limit := h.quotaKey(source)
	if limit > 0 {
		h.quota.set(key, limit, h.opts.Window, n)
	}
}

// QuotaRemaining is a source's remaining quota, or -1 when no limit applies to it.
func (h *Hub) QuotaRemaining(source string) int {
	key, limit := h.quotaKey(source)
	if limit == 0 {
		return -1
	}
	remaining, _, _ := h.quota.use(key, limit, h.opts.Window, false)
	return remaining
}

// ExhaustQuota puts at 0 the quota of 127.0.0.1, of every user in Options.Users and of every
// source seen so far.
func (h *Hub) ExhaustQuota() {
	h.SetQuotaRemaining("127.0.0.1", 0)
	for u := range h.opts.Users {
		h.SetQuotaRemaining(u, 0)
	}
	for _, k := range h.quota.keys() {
		if ip, ok := strings.CutPrefix(k, "ip:"); ok {
			h.SetQuotaRemaining(ip, 0)
		}
	}
}
