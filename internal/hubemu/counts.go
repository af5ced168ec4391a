package hubemu

import (
	"maps"
	"sync"
)

// Counts are the requests a hub received, by kind. A request answered 401 by the registry (no
// token, an expired one, or one whose scope does not cover it) counts only as Unauthorized, so
// that a client's challenge round trip does not count twice; every other request counts in its
// kind, including those refused with 429 or acted on by a fault.
type Counts struct {
	ManifestGet  int64
	ManifestHead int64
	BlobGet      int64
	BlobHead     int64
	TagList      int64 // GET /v2/<name>/tags/list
	Base         int64 // /v2/
	Other        int64 // anything else on the registry (referrers, catalog, writes, other methods)
	Token        int64 // requests to the token service, whatever their outcome
	CDNGet       int64 // requests to the blob CDN (RedirectBlobs)

	Pulls        int64 // manifest GETs admitted by the rate limit (spent quota, when one applies)
	Rejected429  int64 // requests refused because of the rate limit
	Unauthorized int64 // 401s from the registry and the token service
	Faulted      int64 // requests a fault acted on (a request can meet a request and a body fault)
	BlobBytes    int64 // blob body bytes written to clients (after Truncated)

	Repos map[string]RepoCounts // per repository
}

// RepoCounts are the requests for one repository.
type RepoCounts struct {
	ManifestGet, ManifestHead, BlobGet, BlobHead, TagList, Other int64
}

type counter struct {
	mu sync.Mutex
	c  Counts
}

func (c *counter) add(f func(*Counts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.c)
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c = Counts{Repos: map[string]RepoCounts{}}
}

// Counts returns a copy of the counts since Start or the last ResetCounts.
func (h *Hub) Counts() Counts {
	h.counts.mu.Lock()
	defer h.counts.mu.Unlock()
	c := h.counts.c
	c.Repos = maps.Clone(c.Repos)
	return c
}

// ResetCounts sets every count to zero.
func (h *Hub) ResetCounts() { h.counts.reset() }
