package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/metrics"
)

// lifecycleEvery is how often lifecycle policies are applied.
const lifecycleEvery = time.Hour

// pullFlushEvery is how often counted pulls are written: well within eviction's guard of recent
// pulls (internal/proxy), so that an image being pulled looks pulled.
const pullFlushEvery = 5 * time.Second

// ConfiguredPolicies are the lifecycle policies of cfg (validated with it).
func ConfiguredPolicies(cfg config.Config) ([]expiry.Assignment, error) {
	var out []expiry.Assignment
	for _, l := range cfg.Lifecycle {
		text, err := l.Text()
		if err != nil {
			return nil, err
		}
		p, err := lifecycle.Parse(text)
		if err != nil {
			return nil, err
		}
		out = append(out, expiry.Assignment{Pattern: l.Repositories, Source: "config", Text: text, Policy: p})
	}
	return out, nil
}

// applyLifecycle is one application of the lifecycle policies, configured and set.
func applyLifecycle(r expiry.Runner, settings expiry.Settings, configured []expiry.Assignment, m *metrics.Metrics, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		as, err := expiry.Policies(ctx, settings, configured)
		if err != nil {
			log.Warn("lifecycle policies", "err", err)
			return
		}
		if len(as) == 0 {
			return
		}
		ex, err := r.Run(ctx, as, "", false, time.Now())
		m.Expired(len(ex))
		for _, e := range ex {
			log.Info("lifecycle policy expired a manifest", "repository", e.Repo, "digest", e.Digest, "tags", e.Tags, "rule", e.Rule)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("applying lifecycle policies", "err", err)
		}
	}
}
