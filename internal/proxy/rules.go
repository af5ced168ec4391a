package proxy

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Rule maps the repositories under Prefix to an upstream: <prefix>/<name> in berth is <name> there.
type Rule struct {
	Prefix    string
	Source    Source
	Hosts     []string // registry hosts that ?ns= names for this rule (containerd mirrors)
	DockerHub bool     // one-component names are official images under library/
	// Every is how often a cached tag is revalidated with a manifest HEAD; 0 means on every pull.
	Every time.Duration
	// MaxStaleness bounds how old (since its last successful check) a cached tag may be and still
	// be served while the upstream fails.
	MaxStaleness time.Duration
	// QuotaReserve: at or below this many remaining pulls, cached tags are not revalidated.
	QuotaReserve int
	// Warm are references (NAME:TAG, NAME as below the prefix) that berth keeps cached, whole,
	// checking each tag upstream every WarmEvery (RunWarm).
	Warm      []string
	WarmEvery time.Duration
	// MaxBytes bounds what the rule's repositories hold (evict.go); 0: no bound. UnusedFor
	// evicts images not pulled for that long; 0: never. Pin are references (NAME:TAG) never
	// evicted.
	MaxBytes  int64
	UnusedFor time.Duration
	Pin       []string

	stats cacheStats
	// quotaLow: the last quota this replica saw was at or below QuotaReserve (watchQuota).
	quotaLow atomic.Bool
}

// upstreamName is the repository name on the upstream for a name below the prefix.
func (r *Rule) upstreamName(rest string) string {
	if r.DockerHub && !strings.Contains(rest, "/") {
		return "library/" + rest
	}
	return rest
}

// route finds the rule for a repository name as a client sent it, with the ns query parameter of
// containerd mirror requests, and returns the local repository (prefix + upstream name) and the
// upstream name. Docker Hub's "docker-hub/nginx" and "docker-hub/library/nginx" are one repository.
func route(rules []*Rule, name, ns string) (r *Rule, local, upstream string, ok bool) {
	if ns != "" {
		for _, r := range rules {
			if slices.Contains(r.Hosts, ns) {
				up := r.upstreamName(name)
				return r, r.Prefix + "/" + up, up, true
			}
		}
		// A mirror request for a registry berth does not cache: serve it as local.
	}
	for _, r := range rules { // longest prefix first
		rest, found := strings.CutPrefix(name, r.Prefix+"/")
		if found && rest != "" {
			up := r.upstreamName(rest)
			return r, r.Prefix + "/" + up, up, true
		}
	}
	return nil, "", "", false
}
