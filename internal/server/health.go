package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// Pinger is a backend that can say whether it is reachable: the metadata database, the bucket.
type Pinger interface {
	Ping(ctx context.Context) error
}

// health answers /healthz (the process is alive: a load balancer that gets no answer restarts it)
// and /readyz (it should be sent requests: its backends answer and it is not shutting down).
type health struct {
	draining atomic.Bool
	checks   map[string]Pinger // by what the failure message calls it
	log      *slog.Logger
}

// pingTimeout bounds one readiness check: a backend slower than this is as good as down for
// requests too.
const pingTimeout = 2 * time.Second

func (h *health) live(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }

func (h *health) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
	defer cancel()
	for what, p := range h.checks {
		if err := p.Ping(ctx); err != nil {
			h.log.Warn("not ready: a backend does not answer", "backend", what, "err", err)
			http.Error(w, fmt.Sprintf("%s unreachable", what), http.StatusServiceUnavailable)
			return
		}
	}
	w.Write([]byte("ready\n"))
}
