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
	clientGets    atomic.Int64 // manifest GETs answered to clients (Served)
	clientBytes   atomic.Int64 // blob bytes sent to clients (Served)
}

// CacheStats is a snapshot of cacheStats.
type CacheStats struct {
	Hits          int64 `json:"hits"`
	Misses        int64 `json:"misses"`
	Revalidations int64 `json:"revalidations"`
	StaleServes   int64 `json:"stale_serves"`
	QuotaSaves    int64 `json:"quota_saves"`
	Coalesced     int64 `json:"coalesced"`
	// ClientGets are the manifest GETs berth answered for the rule's repositories, ClientBytes
	// the blob bytes it sent. PullsSaved and BytesSaved are what the upstream did not serve of
	// them: client GETs less the upstream's successful manifest GETs, bytes sent less bytes downloaded
	// (Docker Hub counts a pull per manifest GET). Warming and revalidation fetches count
	// against the savings.
	ClientGets  int64 `json:"client_manifest_gets"`
	ClientBytes int64 `json:"client_blob_bytes"`
	PullsSaved  int64 `json:"pulls_saved"`
	BytesSaved  int64 `json:"bytes_saved"`
}

func (s *cacheStats) snapshot() CacheStats {
	return CacheStats{
		Hits: s.hits.Load(), Misses: s.misses.Load(), Revalidations: s.revalidations.Load(),
		StaleServes: s.staleServes.Load(), QuotaSaves: s.quotaSaves.Load(), Coalesced: s.coalesced.Load(),
		ClientGets: s.clientGets.Load(), ClientBytes: s.clientBytes.Load(),
	}
}

// saved fills in PullsSaved and BytesSaved from the upstream's counters.
func (s *CacheStats) saved(up UpstreamStats) {
	s.PullsSaved = max(0, s.ClientGets-up.PullsCharged())
	s.BytesSaved = max(0, s.ClientBytes-up.BlobBytes)
}

// Status is what GET /berth/v1/upstreams shows for one rule.
type Status struct {
	Prefix   string        `json:"prefix"`
	Upstream string        `json:"upstream"`
	Quota    Quota         `json:"quota"`
	Requests UpstreamStats `json:"requests"`
	Cache    CacheStats    `json:"cache"`
	// Reserve is the rule's quota reserve (QuotaReserve); FillsInFlight the blob downloads
	// under way for its repositories.
	Reserve       int `json:"quota_reserve"`
	FillsInFlight int `json:"fills_in_flight"`
}

// fillsByRule counts the blob fills in flight per rule.
func (c *Cache) fillsByRule() map[*Rule]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[*Rule]int, len(c.rules))
	for _, f := range c.fills {
		out[f.rule]++
	}
	return out
}
