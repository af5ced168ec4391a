package proxy

import "time"

// SetLeaseTiming shortens the lease timing for a test and returns what restores it.
func SetLeaseTiming(ttl, renew, poll time.Duration) (restore func()) {
	t, r, p := leaseTTL, leaseRenew, leasePoll
	leaseTTL, leaseRenew, leasePoll = ttl, renew, poll
	return func() { leaseTTL, leaseRenew, leasePoll = t, r, p }
}

// LeaseKey is the lease a replica takes to fill blob d of the cached repository local.
func LeaseKey(local, d string) string { return "proxy:fill " + local + "@" + d }

// SetEvictionGuard changes how recently pulled an image must be to be safe from eviction.
func SetEvictionGuard(d time.Duration) (restore func()) {
	g := evictionGuard
	evictionGuard = d
	return func() { evictionGuard = g }
}
