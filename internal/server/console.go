package server

import (
	"log/slog"
	"net/http"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/console"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/proxy"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/version"
)

// mountConsole serves the web console at /ui/. It needs accounts: with --dev (authn nil) /ui/
// says so instead.
func mountConsole(mux *http.ServeMux, authn *auth.Service, store metadata.Store, blobs storage.BlobStore, cache *proxy.Cache,
	adm admin.API, hooks console.Webhooks, log *slog.Logger) error {
	if authn == nil {
		mux.HandleFunc(console.Prefix, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "the web console needs berth's accounts: it is off with --dev", http.StatusNotFound)
		})
		return nil
	}
	c, err := console.New(console.Options{Auth: authn, Store: store, Blobs: blobs, Cache: cache, Admin: adm, Webhooks: hooks,
		Version: version.Get().Detail(), Log: log.With("component", "console")})
	if err != nil {
		return err
	}
	mux.Handle(console.Prefix, c)
	mux.Handle("GET /ui", http.RedirectHandler(console.Prefix, http.StatusMovedPermanently))
	return nil
}
