package server

import (
	"log/slog"
	"net/http"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/proxy"
)

// devAccountsOff is why berth --dev refuses the operations on accounts and grants.
const devAccountsOff = "berth --dev authenticates no one, so it manages no accounts or grants " +
	"(they would outlive --dev once the data is served with authentication): use `berth user`, " +
	"`berth robot` and `berth grant` on the data directory"

// newAdmin builds the administrative operations of the admin API and the console. authn nil
// (--dev): every caller may revalidate, evict and preview, as every caller may push and delete,
// and no caller may touch accounts or grants.
func newAdmin(authn *auth.Service, acc metadata.Accounts, cache *proxy.Cache, lc *admin.Lifecycle, audit *slog.Logger) *admin.Service {
	opt := admin.Options{Accounts: acc, Audit: audit, Cache: cache, Lifecycle: lc}
	if authn != nil {
		opt.Authorizer = authn
	} else {
		opt.Actor, opt.AccountsOff = "dev", devAccountsOff
	}
	return admin.New(opt)
}

// callers authenticates the callers of the admin API (nil for --dev: every caller is let
// through, unauthenticated).
func callers(authn *auth.Service) func(r *http.Request) (*auth.Principal, error) {
	if authn == nil {
		return nil
	}
	return authn.Caller
}
