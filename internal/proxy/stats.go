package proxy

import "sync/atomic"

// cacheStats counts what the cache did for one rule.
type cacheStats struct {
	hits          atomic.Int64 // served from the cache without an upstream GET
	misses        atomic.Int64 // needed an upstream GET
	revalidations atomic.Int64 // tag checks sent upstream (manifest HEADs)
	staleServes   atomic.Int64 // served from the cache because the upstream failed
	quotaSaves    atomic.Int64 // revalidations skipped because the quota was at the reserve
	coalesced     atomic.Int64 // requests that joined an upstream fetch already under way
}

// CacheStats is a snapshot of cacheStats.
type CacheStats struct {
	Hits          int64 `json:"hits"`
	Misses        int64 `json:"misses"`
	Revalidations int64 `json:"revalidations"`
	StaleServes   int64 `json:"stale_serves"`
	QuotaSaves    int64 `json:"quota_saves"`
	Coalesced     int64 `json:"coalesced"`
}

func (s *cacheStats) snapshot() CacheStats {
	return CacheStats{
		Hits: s.hits.Load(), Misses: s.misses.Load(), Revalidations: s.revalidations.Load(),
		StaleServes: s.staleServes.Load(), QuotaSaves: s.quotaSaves.Load(), Coalesced: s.coalesced.Load(),
	}
}

// Status is what GET /berth/v1/upstreams shows for one rule.
type Status struct {
	Prefix   string        `json:"prefix"`
	Upstream string        `json:"upstream"`
	Quota    Quota         `json:"quota"`
	Requests UpstreamStats `json:"requests"`
	Cache    CacheStats    `json:"cache"`
}
