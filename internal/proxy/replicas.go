package proxy

import (
	"context"
	"encoding/json"
	"errors"
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
// A holder that lets go of a lease says so on LeaseChannel, when the store can notify: the
// replicas waiting on it look at once, rather than at their next poll.

// Lease timing: a holder renews every leaseRenew, so a dead one is replaced within leaseTTL.
var (
	leaseTTL   = 15 * time.Second
	leaseRenew = 5 * time.Second
	// leasePoll is how often a replica waiting on another's lease looks for the answer, besides
	// when the holder says it let go.
	leasePoll = 100 * time.Millisecond
)

// LeaseChannel is the metadata.Notifier channel on which a replica names each lease it let go of.
const LeaseChannel = "berth_leases"

// Shared is what replicas share through the metadata store: leases, and small named values (the
// upstream quotas they saw).
type Shared interface {
	metadata.Leases
	Setting(ctx context.Context, key string) ([]byte, error)
	SetSetting(ctx context.Context, key string, value []byte) error
}

// ShareWith makes the cache coordinate its upstream requests with the other replicas that share
// the store, as holder. Without it (one process), nothing is leased or shared. If shared is also
// a metadata.Notifier, the cache tells the others of each lease it lets go of; their messages go
// to Released.
func (c *Cache) ShareWith(shared Shared, holder string) {
	c.replicas, c.holder = shared, holder
	c.notifier, _ = shared.(metadata.Notifier)
}

// Released wakes whoever waits on the lease key that another replica let go of (a message on
// LeaseChannel).
func (c *Cache) Released(key string) {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	if ch, ok := c.wake[key]; ok {
		close(ch)
		delete(c.wake, key)
	}
}

// ReleasedAll wakes every waiter: listening (re)started, and a message may have been missed.
func (c *Cache) ReleasedAll() {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	for key, ch := range c.wake {
		close(ch)
		delete(c.wake, key)
	}
}

// forget drops ch, from woken(key), when it is still there: its waiter is gone.
func (c *Cache) forget(key string, ch <-chan struct{}) {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	if c.wake[key] == ch {
		delete(c.wake, key)
	}
}

// woken returns what Released closes for key.
func (c *Cache) woken(key string) <-chan struct{} {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	if c.wake == nil {
		c.wake = map[string]chan struct{}{}
	}
	ch, ok := c.wake[key]
	if !ok {
		ch = make(chan struct{})
		c.wake[key] = ch
	}
	return ch
}

// quota is the freshest rate-limit state of r's upstream that any replica saw: this replica's
// own, or the one another replica published, whichever was seen last. So the quota reserve holds
// on every replica as soon as one of them learns that the quota ran low.
func (c *Cache) quota(ctx context.Context, r *Rule) Quota {
	q := r.Source.Quota()
	if c.replicas == nil {
		return q
	}
	b, err := c.replicas.Setting(ctx, quotaKey(r))
	if err != nil {
		if !errors.Is(err, metadata.ErrNotFound) {
			c.log.Warn("reading the upstream quota other replicas saw", "prefix", r.Prefix, "err", err)
		}
		return q
	}
	var other Quota
	if json.Unmarshal(b, &other) == nil && other.Known && other.Seen.After(q.Seen) {
		return other
	}
	return q
}

// publishQuota shares the quota this replica saw last for r's upstream, if it is newer than the
// shared one (after each upstream request that may have carried the rate-limit headers).
func (c *Cache) publishQuota(ctx context.Context, r *Rule) {
	if c.replicas == nil {
		return
	}
	q := r.Source.Quota()
	if !q.Known || c.quota(ctx, r).Seen.After(q.Seen) {
		return
	}
	b, _ := json.Marshal(q)
	if err := c.replicas.SetSetting(ctx, quotaKey(r), b); err != nil {
		c.log.Warn("sharing the upstream quota with other replicas", "prefix", r.Prefix, "err", err)
	}
}

func quotaKey(r *Rule) string { return "proxy-quota:" + r.Prefix }

// leased runs fetch holding the lease key, unless answered reports (before the lease is taken,
// and again once it is) that another replica's answer is stored: then it returns with
// found set. While another replica holds the lease, it waits, looking every leasePoll.
func (c *Cache) leased(ctx context.Context, key string, answered func(context.Context) (bool, error), fetch func(context.Context) error) (found bool, err error) {
	if c.replicas == nil {
		if found, err := answered(ctx); err != nil || found {
			return found, err
		}
		return false, fetch(ctx)
	}
	key = "proxy:" + key
	for {
		done, found, err := c.leaseOnce(ctx, key, answered, fetch)
		if done {
			return found, err
		}
	}
}

// leaseOnce is one turn of leased: look, take the lease or wait for it to be let go of (done
// false: look again).
func (c *Cache) leaseOnce(ctx context.Context, key string, answered func(context.Context) (bool, error), fetch func(context.Context) error) (done, found bool, err error) {
	// Taken before looking, so that a release between the look and the wait wakes it.
	woken := c.woken(key)
	defer c.forget(key, woken)
	if found, err := answered(ctx); err != nil || found {
		return true, found, err
	}
	got, err := c.replicas.AcquireLease(ctx, key, c.holder, leaseTTL)
	if err != nil {
		return true, false, err
	}
	if got {
		found, err := c.holding(ctx, key, answered, fetch)
		return true, found, err
	}
	select {
	case <-ctx.Done():
		return true, false, ctx.Err()
	case <-woken:
	case <-time.After(leasePoll):
	}
	return false, false, nil
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
				if _, err := c.replicas.AcquireLease(ctx, key, c.holder, leaseTTL); err != nil && ctx.Err() == nil {
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
		if err := c.replicas.ReleaseLease(rctx, key, c.holder); err != nil {
			c.log.Warn("releasing an upstream lease", "lease", key, "err", err)
		} else if c.notifier != nil && len(key) <= metadata.MaxPayload {
			if err := c.notifier.Notify(rctx, LeaseChannel, key); err != nil {
				c.log.Warn("telling other replicas of a released upstream lease", "lease", key, "err", err)
			}
		}
	}()
	// The previous holder may have stored the answer and let go just before this took over.
	if found, err := answered(ctx); err != nil || found {
		return found, err
	}
	return false, fetch(ctx)
}
