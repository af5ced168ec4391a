package proxy

import (
	"context"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// Replicas sharing one metadata store coordinate their upstream requests with leases in it, so
// that N replicas asked for the same cold image at once cost the upstream what one would: a
// request that would ask the upstream first takes the lease of what it asks (a tag's HEAD, a
// manifest's GET, a blob's GET, each per cached repository); the replicas that do not get it wait
// until the holder's answer is stored and serve that, or take the lease over when the holder
// gives it up (it failed) or dies (the lease expires). Within one process, singleflight and the
// fills map coalesce as before; the lease is taken once per process, by the flight's leader.

// Lease timing: a holder renews every leaseRenew, so a dead one is replaced within leaseTTL.
var (
	leaseTTL   = 15 * time.Second
	leaseRenew = 5 * time.Second
	// leasePoll is how often a replica waiting on another's lease looks for the answer.
	leasePoll = 100 * time.Millisecond
)

// ShareWith makes the cache coordinate its upstream requests with the other replicas that share
// leases (the metadata store), as holder. Without it (one process), nothing is leased.
func (c *Cache) ShareWith(leases metadata.Leases, holder string) {
	c.leases, c.holder = leases, holder
}

// leased runs fetch holding the lease key, unless answered reports (before the lease is taken,
// and again once it is) that another replica's answer is stored: then it returns with
// found set. While another replica holds the lease, it waits, looking every leasePoll.
func (c *Cache) leased(ctx context.Context, key string, answered func(context.Context) (bool, error), fetch func(context.Context) error) (found bool, err error) {
	if c.leases == nil {
		if found, err := answered(ctx); err != nil || found {
			return found, err
		}
		return false, fetch(ctx)
	}
	key = "proxy:" + key
	for {
		if found, err := answered(ctx); err != nil || found {
			return found, err
		}
		got, err := c.leases.AcquireLease(ctx, key, c.holder, leaseTTL)
		if err != nil {
			return false, err
		}
		if got {
			return c.holding(ctx, key, answered, fetch)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(leasePoll):
		}
	}
}

// holding runs fetch under the lease key, which it renews meanwhile and releases after.
func (c *Cache) holding(ctx context.Context, key string, answered func(context.Context) (bool, error), fetch func(context.Context) error) (bool, error) {
	stop := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := c.leases.AcquireLease(ctx, key, c.holder, leaseTTL); err != nil && ctx.Err() == nil {
					c.log.Warn("renewing an upstream lease", "lease", key, "err", err)
				}
			}
		}
	}()
	defer func() {
		close(stop)
		<-renewed
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.leases.ReleaseLease(rctx, key, c.holder); err != nil {
			c.log.Warn("releasing an upstream lease", "lease", key, "err", err)
		}
	}()
	// The previous holder may have stored the answer and let go just before this took over.
	if found, err := answered(ctx); err != nil || found {
		return found, err
	}
	return false, fetch(ctx)
}
