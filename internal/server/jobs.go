package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/berth/berth/internal/gc"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metrics"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
)

// holderID names this process among the replicas that share a metadata store: the host, the
// process and a random part (a restarted container may get the same host name and PID).
func holderID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// exclusive runs job every period on whichever one of the replicas holds the lease name. The
// lease lasts two periods and is renewed at each run, so the holder keeps it while it lives;
// when it dies, another replica takes over within two periods. On the way out (ctx done) the
// holder gives the lease up, so that another replica need not wait for it to expire.
func exclusive(ctx context.Context, leases metadata.Leases, name, holder string, period time.Duration, log *slog.Logger, job func(context.Context)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	held := false
	for {
		got, err := leases.AcquireLease(ctx, name, holder, 2*period)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("background job: taking its lease", "job", name, "err", err)
		case got:
			if !held {
				log.Debug("background job: this replica runs it", "job", name)
			}
			held = true
			job(ctx)
		default:
			held = false
		}
		select {
		case <-ctx.Done():
			if held {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				leases.ReleaseLease(rctx, name, holder)
				cancel()
			}
			return
		case <-tick.C:
		}
	}
}

// gcDuty is the share of its time the background collector works (bench -only gc: pushes and
// pulls keep 0.9x of their throughput while it sweeps).
const gcDuty = 0.25

// collect is one online garbage collection pass (internal/gc).
func collect(c *gc.Collector, m *metrics.Metrics, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		st, err := c.Pass(ctx, false)
		m.GCPass(st)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("garbage collection", "err", err, "done", st.String())
		case st.Deleted > 0 || st.Failed > 0:
			log.Info("garbage collection", "deleted", st.Deleted, "bytes", st.Bytes, "reviewed", st.Reviewed, "failed", st.Failed)
		}
	}
}

// evictEvery is how often the pull-through caches' bounds are enforced.
const evictEvery = time.Minute

// evict is one eviction pass over the bounded pull-through rules, after this replica's counted
// pulls are written (an image being pulled here looks pulled).
func evict(c *proxy.Cache, reg *registry.Registry, rec registry.PullRecorder, m *metrics.Metrics, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		reg.FlushPulls(ctx, rec)
		st, err := c.Evict(ctx)
		m.Evicted(st)
		if err != nil && ctx.Err() == nil {
			log.Warn("evicting cached images", "err", err, "evicted", st.Images)
		} else if st.Images > 0 {
			log.Info("evicted cached images", "images", st.Images, "blobs_deleted", st.Blobs, "bytes", st.Bytes)
		}
	}
}

// every calls fn with the time now, and again each period, until ctx ends.
func every(ctx context.Context, period time.Duration, fn func(time.Time)) {
	fn(time.Now())
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}
