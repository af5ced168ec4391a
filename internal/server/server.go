// Package server wires berth together (configuration, stores, the HTTP API) and runs the HTTP
// server until its context ends. It is the one package that knows every other.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/console"
	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/gc"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/hot"
	"github.com/berth/berth/internal/metrics"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/version"
)

// Run serves cfg until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	unlock, err := lockDir(cfg.Data)
	if err != nil {
		return err
	}
	defer unlock()
	keys, err := LoadKeyring(cfg.Encryption)
	if err != nil {
		return err
	}
	blobs, err := OpenStorage(ctx, cfg, keys, log)
	if err != nil {
		return err
	}
	meta, err := OpenMetadata(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer meta.Close()
	if cfg.Debug.PprofAddr != "" {
		stop, err := startDebug(cfg.Debug.PprofAddr, meta, log)
		if err != nil {
			return fmt.Errorf("debug.pprof_addr: %w", err)
		}
		defer stop()
	}

	// Holding the lock, nothing else writes: the temporary files of pushes and fills that a
	// killed process left are garbage.
	if tr, ok := blobs.(storage.TempRemover); ok {
		if n, err := tr.RemoveTemps(); err != nil {
			log.Warn("removing temporary files left by a previous run", "err", err)
		} else if n > 0 {
			log.Info("removed temporary files left by a previous run (interrupted pushes or pull-through fills)", "count", n)
		}
	}
	var m *metrics.Metrics // nil when metrics are off
	if !cfg.Metrics.Off {
		v := version.Get()
		m = metrics.New(metrics.Build{Version: v.Release, Commit: v.Commit, GoVersion: v.GoVersion})
		m.Register(metrics.Uploads(meta))
	}
	holder := holderID()
	jobs := sync.WaitGroup{}
	defer jobs.Wait() // leases handed over before the store closes
	jobs.Go(func() {
		exclusive(ctx, meta, "upload-purge", holder, min(cfg.Uploads.MaxIdle/4, 10*time.Minute), log,
			purgeUploads(blobs, meta, cfg.Uploads.MaxIdle, log))
	})
	if cfg.GC.Interval > 0 {
		collector := gc.New(meta, blobs, cfg.GC.Grace, log)
		collector.SetPace(gcDuty)
		jobs.Go(func() {
			exclusive(ctx, meta, "gc", holder, cfg.GC.Interval, log, collect(collector, m, log))
		})
	}

	// The registry and the pull-through cache write manifests and tags through this one value,
	// so that its memory of them is dropped by every write this process makes. Replicas sharing
	// the store keep each other's memory exact through its notifications (hot.Peers); a store
	// shared without them (none but postgres is shared) would keep lookups by digest only.
	var store metadata.Store = meta
	follow := map[string]follower{} // what this process does with the messages of other processes
	if cfg.Metadata.MemoryCache > 0 {
		h := hot.New(meta, hot.Options{Exclusive: !cfg.Metadata.Shared(), MaxBytes: cfg.Metadata.MemoryCache})
		store = h
		if n, ok := meta.(metadata.Notifier); ok && cfg.Metadata.Shared() {
			peers := hot.NewPeers(h, n, meta, holder, log)
			follow[hot.Channel] = follower{ready: peers.Ready, got: peers.Got, down: peers.Down}
			jobs.Go(func() { peers.Run(ctx) })
		}
	}
	// Webhooks: the registry and the cache only queue events; the dispatcher's workers deliver
	// them. Closed after the server has drained and the cache has stopped (deferred before
	// them), so that the last requests' events are queued before it flushes.
	dispatch, err := newEvents(cfg.Events, log)
	if err != nil {
		return err
	}
	if dispatch != nil {
		defer closeEvents(dispatch, log)
		if m != nil {
			m.Register(metrics.Webhooks(dispatch.Stats))
		}
	}
	cache, err := newCache(cfg.Proxy, cfg.MinFreeSpace, blobs, store, log)
	if err != nil {
		return err
	}
	defer cache.Close()
	if dispatch != nil {
		cache.UseEvents(dispatch.Publish) // before the warm and evict jobs start
	}
	if m != nil {
		m.Register(metrics.Cache(cache))
	}
	cache.UsePullTimes(meta) // eviction orders images by their last pull
	if cfg.Metadata.Shared() {
		// Replicas share the store: one of them asks the upstream for a given thing at a time.
		cache.ShareWith(meta, holder)
		follow[proxy.LeaseChannel] = follower{ready: cache.ReleasedAll, got: cache.Released}
	}
	// Every replica samples its own counters for the console's charts (History).
	jobs.Go(func() { every(ctx, proxy.SampleEvery, cache.Sample) })
	if period := cache.WarmPeriod(); period > 0 {
		jobs.Go(func() { exclusive(ctx, meta, "warm", holder, period, log, cache.WarmAll) })
	}
	configured, err := ConfiguredPolicies(cfg)
	if err != nil {
		return err
	}
	runner := expiry.Runner{Store: store, Pulls: meta, Skip: func(repo string) bool {
		// Not a read: the root mirror would claim every repository berth does not cache.
		_, _, cached := cache.Route(repo, "", false)
		return cached
	}}
	jobs.Go(func() {
		exclusive(ctx, meta, "lifecycle", holder, lifecycleEvery, log, applyLifecycle(runner, meta, configured, m, log))
	})
	reg := registry.New(blobs, store, log)
	if dispatch != nil {
		reg.UseEvents(dispatch.Publish)
	}
	reg.UseCache(cache)
	reg.SetMaxBlobSize(cfg.Uploads.MaxBlobSize)
	reg.SetMinFreeSpace(cfg.MinFreeSpace)
	// Pulls are counted in memory and written every few seconds; the last ones when berth stops
	// (deferred: after the server has drained, before the store closes).
	defer reg.TrackPulls(meta, pullFlushEvery)()
	if cache.Bounded() {
		jobs.Go(func() { exclusive(ctx, meta, "evict", holder, evictEvery, log, evict(cache, reg, meta, m, log)) })
	}
	var quotas []registry.Quota
	for _, q := range cfg.Quotas {
		quotas = append(quotas, registry.Quota{Pattern: q.Repositories, MaxBytes: q.MaxBytes})
	}
	reg.SetQuotas(quotas)
	if len(cfg.Immutability) > 0 {
		reg.UseTagRules(cfg.Immutability.Immutable)
	}
	if cfg.Storage.Driver == "s3" && cfg.Storage.S3.Redirect {
		reg.RedirectBlobs(cfg.Storage.S3.RedirectTTL)
	}

	audit, closeAudit, err := AuditLogger(cfg, log)
	if err != nil {
		return err
	}
	defer closeAudit()
	reg.UseAudit(audit)
	mux := http.NewServeMux()
	var authn *auth.Service
	if cfg.Dev {
		log.Warn("serving WITHOUT authentication (--dev): anyone who can connect may read, push and delete", "addr", cfg.Addr)
	} else {
		// Replicas count login guesses together, in the store they share: a guesser spread over
		// them gets the budgets once. One process alone keeps them in memory (no write per login).
		var throttles metadata.Throttles
		if cfg.Metadata.Shared() {
			throttles = meta
		}
		if authn, err = newAuth(ctx, cfg, meta, throttles, sealer(keys), cache.Candidates, audit, log); err != nil {
			return err
		}
		if throttles != nil {
			jobs.Go(func() {
				exclusive(ctx, meta, "login-throttle-prune", holder, time.Minute, log, pruneThrottles(authn, log))
			})
		}
		follow[metadata.AuthChannel] = follower{ready: authn.Changed, got: func(string) { authn.Changed() }}
		reg.UseAuth(authn)
		mux.Handle("/token", authn)
		if m != nil {
			m.Register(metrics.Auth(authn))
		}
	}
	if n, ok := meta.(metadata.Notifier); ok && cfg.Metadata.Shared() {
		jobs.Go(func() { listen(ctx, n, follow, log) })
	}
	mux.Handle("/v2/", reg)
	mux.Handle("/berth/v1/upstreams", upstreamsHandler(cache, admins(authn)))
	adm := newAdmin(authn, meta, cache, &admin.Lifecycle{Settings: meta, Configured: configured, Runner: runner}, audit)
	mux.Handle("/berth/v1/", admin.Handler(adm, callers(authn), log))
	// The console's admin pages call the same operations as the admin API.
	var hooks console.Webhooks // nil unless webhooks are configured
	if dispatch != nil {
		hooks = dispatch
	}
	if err := mountConsole(mux, authn, store, blobs, cache, adm, hooks, log); err != nil {
		return err
	}
	backends := map[string]Pinger{}
	if p, ok := meta.(Pinger); ok {
		backends["metadata"] = p
	}
	if p, ok := blobs.(Pinger); ok {
		backends["storage"] = p
	}
	hc := newHealth(log, backends)
	mux.HandleFunc("/healthz", hc.live)
	mux.HandleFunc("/readyz", hc.ready)
	var handler http.Handler = mux
	if m != nil {
		mux.Handle("/metrics", metricsHandler(m, cfg.Metrics, authn))
		handler = m.Middleware(mux)
		if cfg.Metrics.Addr != "" {
			stop, err := serveMetrics(ctx, cfg.Metrics.Addr, m, log)
			if err != nil {
				return fmt.Errorf("metrics.addr: %w", err)
			}
			defer stop()
		}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	scheme := "http"
	var redirect *http.Server // tls.acme.http_addr: HTTP-01 challenges, and redirects to HTTPS
	switch {
	case cfg.TLS.ACME != nil:
		manager, err := newACME(*cfg.TLS.ACME, meta, sealer(keys), holder, log)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = manager.TLSConfig()
		scheme = "https"
		if m != nil {
			m.Register(metrics.Certificates(manager.Expiry))
		}
		if cfg.TLS.ACME.HTTPAddr != "" {
			if redirect, err = serveHTTPChallenges(cfg.TLS.ACME.HTTPAddr, cfg.Addr, manager, srv.ErrorLog); err != nil {
				ln.Close()
				return fmt.Errorf("tls.acme.http_addr: %w", err)
			}
			defer redirect.Close()
		}
		// Not one of jobs: autocert's orders cannot be cancelled (they time out by themselves),
		// and shutting down does not wait for one.
		go manager.Run(ctx)
	case cfg.TLS.Enabled():
		tc, err := tlsConfig(cfg.TLS, cfg.Data, log)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = tc
		scheme = "https"
	}
	log.Info("berth listening", "addr", ln.Addr().String(), "scheme", scheme, "data", cfg.Data)
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // with HTTP/2 by ALPN
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Unready first, serving on for the drain time: a load balancer takes the replica out on its
	// next health checks, while requests it already sent here are still taken.
	hc.draining.Store(true)
	srv.SetKeepAlivesEnabled(false) // clients reconnect, through the load balancer, elsewhere
	log.Info("shutting down: /readyz answers 503", "drain", cfg.Shutdown.Drain, "timeout", cfg.Shutdown.Timeout)
	select {
	case err := <-errc:
		return err
	case <-time.After(cfg.Shutdown.Drain):
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// lockDir takes an exclusive lock on the data directory: two processes writing one SQLite file and
// one upload directory would each assume they are alone.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory %s is in use by another berth process", dir)
	}
	return func() { f.Close() }, nil
}

// purgeUploads discards idle upload sessions, and forgets the metadata of sessions whose bytes are
// gone (purged, or lost to a crash between the two stores). It is one pass of the background job
// that one replica runs (exclusive).
func purgeUploads(blobs storage.BlobStore, meta metadata.Store, maxIdle time.Duration, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		before := time.Now().Add(-maxIdle)
		n, err := blobs.PurgeUploads(ctx, before)
		if err != nil {
			log.Warn("purging upload sessions", "err", err)
		} else if n > 0 {
			log.Info("purged idle upload sessions", "count", n)
		}
		if ids, err := meta.UploadsBefore(ctx, before); err == nil {
			for _, id := range ids {
				u, err := blobs.ResumeUpload(ctx, id)
				if errors.Is(err, storage.ErrUploadUnknown) {
					meta.DeleteUpload(ctx, id)
				} else if err == nil {
					u.Close()
				}
			}
		}
	}
}

// pruneThrottles is the job that forgets the shared login throttles' full buckets and old logins,
// so that the rows of an attack from ever new addresses go within minutes of its end.
func pruneThrottles(authn *auth.Service, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		if n, err := authn.PruneThrottles(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pruning login throttles", "err", err)
		} else if n > 0 {
			log.Debug("pruned login throttles", "rows", n)
		}
	}
}
