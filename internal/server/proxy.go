package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/storage"
)

// newCache builds the pull-through cache of cfg's rules; its fills leave minFree bytes free.
func newCache(cfg config.Proxy, minFree int64, blobs storage.BlobStore, meta metadata.Store, log *slog.Logger) (*proxy.Cache, error) {
	var rules []*proxy.Rule
	for _, r := range cfg.EffectiveRules() {
		password, err := r.Secret()
		if err != nil {
			return nil, err
		}
		up, err := proxy.NewUpstream(proxy.UpstreamConfig{
			Name: r.Upstream, URL: r.Upstream, Username: r.Username, Password: password,
		}, log.With("upstream", r.Prefix))
		if err != nil {
			return nil, fmt.Errorf("proxy rule %s: %w", r.Prefix, err)
		}
		every, err := config.ParseRevalidate(r.Revalidate)
		if err != nil {
			return nil, fmt.Errorf("proxy rule %s: %w", r.Prefix, err)
		}
		rules = append(rules, &proxy.Rule{
			Prefix: r.Prefix, Source: up, Hosts: r.Hosts, DockerHub: r.DockerHub,
			Every: every, MaxStaleness: r.MaxStaleness, QuotaReserve: r.QuotaReserve,
			Warm: r.Warm, WarmEvery: r.WarmEvery, MaxBytes: r.MaxBytes, UnusedFor: r.UnusedFor, Pin: r.Pin,
		})
	}
	c := proxy.New(rules, blobs, meta, log)
	c.SetLimits(proxy.Limits{MaxFillSize: cfg.MaxFillSize, MinFreeSpace: minFree})
	if cfg.Mirror != "" {
		if err := c.SetMirror(cfg.Mirror); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// upstreamsHandler serves GET /berth/v1/upstreams: each rule's upstream quota, requests and cache
// counters, as JSON. A rule is shown to the administrators of its repositories (admin on
// PREFIX/*, or on *): upstream addresses and counters are not every caller's business.
func upstreamsHandler(c *proxy.Cache, isAdmin adminOf) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		shown := []proxy.Status{}
		for _, st := range c.Status() {
			ok, err := isAdmin(r, st.Prefix+"/*")
			if err != nil {
				writeAuthError(w, err)
				return
			}
			if ok {
				shown = append(shown, st)
			}
		}
		if len(shown) == 0 && len(c.Status()) > 0 {
			writeAuthError(w, oci.Errorf(oci.ErrDenied, "upstream statistics are shown to administrators of the cached repositories only (a grant of admin on PREFIX/* or *)"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Upstreams []proxy.Status `json:"upstreams"`
		}{shown})
	})
}
