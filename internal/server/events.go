package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/events"
)

// eventsFlush bounds how long berth, stopping, goes on delivering the events still queued: a
// receiver that is down must not hold up a restart.
const eventsFlush = 5 * time.Second

// newEvents starts the webhooks' dispatcher that cfg describes; nil when there are none.
func newEvents(cfg config.Events, log *slog.Logger) (*events.Dispatcher, error) {
	if len(cfg.Webhooks) == 0 {
		return nil, nil
	}
	var hooks []events.Webhook
	for _, w := range cfg.Webhooks {
		key, err := w.Key()
		if err != nil {
			return nil, err
		}
		hooks = append(hooks, events.Webhook{Name: w.Name, URL: w.URL, Secret: key, Repositories: w.Repositories,
			Types: w.Types, Timeout: w.Timeout, MaxAttempts: w.MaxAttempts})
	}
	d, err := events.NewDispatcher(hooks, events.Options{Source: cfg.Source, Match: auth.Match, Log: log})
	if err != nil {
		return nil, err
	}
	log.Info("webhooks on", "webhooks", d.Webhooks())
	return d, nil
}

// closeEvents delivers what is queued, for eventsFlush at most.
func closeEvents(d *events.Dispatcher, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), eventsFlush)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		log.Warn("webhooks: stopping with events undelivered", "err", err)
	}
}
