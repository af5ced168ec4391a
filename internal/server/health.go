package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
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
	probes   map[string]*probe // by what the failure message calls it
	log      *slog.Logger
}

func newHealth(log *slog.Logger, backends map[string]Pinger) *health {
	h := &health{probes: map[string]*probe{}, log: log}
	for what, p := range backends {
		h.probes[what] = &probe{what: what, p: p, log: log}
	}
	return h
}

func (h *health) live(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }

func (h *health) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	for what, p := range h.probes {
		if err := p.result(r.Context()); err != nil {
			http.Error(w, fmt.Sprintf("%s unreachable", what), http.StatusServiceUnavailable)
			return
		}
	}
	w.Write([]byte("ready\n"))
}

// Probe timing. A backend is unready when its ping fails: at once when it is refused, after
// pingTimeout when it does not answer. A ping that is merely slow (a loaded bucket, a busy
// database) does not make the replica unready: a load balancer would take every replica out at
// once, and a slow registry is better than none. /readyz waits at most probeWait for a ping and
// otherwise answers with the last result; one ping per backend runs at a time, however many
// health checks ask, and a result is reused for probeFresh.
const (
	pingTimeout = 10 * time.Second
	probeWait   = time.Second
	probeFresh  = time.Second
)

// probe is the reachability of one backend, as its last ping found it.
type probe struct {
	what string
	p    Pinger
	log  *slog.Logger

	mu      sync.Mutex
	err     error     // the last ping's result (nil before the first: ready)
	at      time.Time // when it ended
	running chan struct{}
}

// result returns the backend's reachability, pinging it when the last result is not fresh.
func (p *probe) result(ctx context.Context) error {
	p.mu.Lock()
	if time.Since(p.at) < probeFresh {
		defer p.mu.Unlock()
		return p.err
	}
	done := p.running
	if done == nil {
		done = make(chan struct{})
		p.running = done
		go p.ping(done)
	}
	p.mu.Unlock()
	wait := time.NewTimer(probeWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *probe) ping(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	err := p.p.Ping(ctx)
	p.mu.Lock()
	if err != nil && p.err == nil {
		p.log.Warn("not ready: a backend does not answer", "backend", p.what, "err", err)
	} else if err == nil && p.err != nil {
		p.log.Info("ready again: the backend answers", "backend", p.what)
	}
	p.err, p.at, p.running = err, time.Now(), nil
	p.mu.Unlock()
	close(done)
}
