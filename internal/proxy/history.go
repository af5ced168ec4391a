package proxy

import (
	"sync"
	"time"
)

// HistorySpan is how far back History goes; SampleEvery is how often the server takes a sample
// (Sample) for it.
const (
	HistorySpan = 24 * time.Hour
	SampleEvery = 5 * time.Minute
)

// Sample is one rule's state at one moment of its history: the upstream quota reported last and
// what happened since the sample before (counts over the interval, not totals).
type Sample struct {
	At         time.Time `json:"at"`
	QuotaKnown bool      `json:"quota_known"`
	Limit      int       `json:"limit"`
	Remaining  int       `json:"remaining"`
	Reserve    int       `json:"reserve"`
	// Upstream requests of the interval. ManifestGets are those the upstream answered with
	// success, which Docker Hub counts as pulls (not a GET refused for want of a token).
	ManifestGets  int64 `json:"manifest_gets"`
	ManifestHeads int64 `json:"manifest_heads"`
	BlobGets      int64 `json:"blob_gets"`
	// What the cache did in the interval.
	ClientGets  int64 `json:"client_manifest_gets"`
	PullsSaved  int64 `json:"pulls_saved"`
	BytesSaved  int64 `json:"bytes_saved"`
	StaleServes int64 `json:"stale_serves"`
}

// history keeps each rule's cumulative state at every sample of the last HistorySpan. It lives in
// the process: each replica keeps its own (its own requests; the quota is the upstream's, the
// same for replicas sharing one address), and a restart starts it again.
type history struct {
	mu    sync.Mutex
	rules map[string][]point // by prefix, oldest first
}

type point struct {
	at time.Time
	st Status
}

// Sample records every rule's state now, and forgets samples older than HistorySpan.
func (c *Cache) Sample(now time.Time) {
	sts := c.Status()
	c.hist.mu.Lock()
	defer c.hist.mu.Unlock()
	if c.hist.rules == nil {
		c.hist.rules = map[string][]point{}
	}
	for _, st := range sts {
		h := append(c.hist.rules[st.Prefix], point{now, st})
		for len(h) > 0 && now.Sub(h[0].at) > HistorySpan {
			h = h[1:]
		}
		c.hist.rules[st.Prefix] = h
	}
}

// History returns the samples of the rule with the given prefix over the last HistorySpan,
// oldest first, ending with the state now; nil for a prefix that is no rule.
func (c *Cache) History(prefix string) []Sample {
	var now *Status
	for _, st := range c.Status() {
		if st.Prefix == prefix {
			now = &st
		}
	}
	if now == nil {
		return nil
	}
	c.hist.mu.Lock()
	points := append([]point(nil), c.hist.rules[prefix]...)
	c.hist.mu.Unlock()
	points = append(points, point{time.Now(), *now})
	out := make([]Sample, 0, len(points))
	var prev Status
	for i, pt := range points {
		p := pt.st
		s := Sample{At: pt.at, QuotaKnown: p.Quota.Known, Limit: p.Quota.Limit, Remaining: p.Quota.Remaining, Reserve: p.Reserve}
		if i > 0 {
			s.ManifestGets = p.Requests.PullsCharged() - prev.Requests.PullsCharged()
			s.ManifestHeads = p.Requests.ManifestHeads - prev.Requests.ManifestHeads
			s.BlobGets = p.Requests.BlobGets - prev.Requests.BlobGets
			s.ClientGets = p.Cache.ClientGets - prev.Cache.ClientGets
			s.PullsSaved = max(0, s.ClientGets-s.ManifestGets)
			s.BytesSaved = max(0, (p.Cache.ClientBytes-prev.Cache.ClientBytes)-(p.Requests.BlobBytes-prev.Requests.BlobBytes))
			s.StaleServes = p.Cache.StaleServes - prev.Cache.StaleServes
		}
		prev = p
		out = append(out, s)
	}
	return out
}
