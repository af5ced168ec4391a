package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metrics"
	"github.com/berth/berth/internal/oci"
)

// metricsHandler serves /metrics on berth's own address: to anyone when cfg.Open (or without
// authentication, --dev), else to administrators of every repository and the accounts cfg names.
func metricsHandler(m *metrics.Metrics, cfg config.Metrics, authn *auth.Service) http.Handler {
	h := m.Handler()
	if cfg.Open || authn == nil {
		return h
	}
	allowed := map[string]bool{}
	for _, a := range cfg.Accounts {
		allowed["user:"+a], allowed["robot:"+a] = true, true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _, err := authn.Authorize(r, "", "", 0)
		if err != nil {
			writeAuthError(w, err)
			return
		}
		if !allowed[p.Subject] {
			ok, err := authn.IsAdmin(r, "*")
			if err != nil {
				writeAuthError(w, err)
				return
			}
			if !ok {
				writeAuthError(w, oci.Errorf(oci.ErrDenied, "metrics are shown to administrators of every repository (admin on *) and to the accounts metrics.accounts names"))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// serveMetrics serves /metrics without authentication on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *metrics.Metrics, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}, nil
}
