package server

import (
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/expiry"
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

// LocalAdmin is the administrative operations on cfg's stores for the command line: every caller
// trusted (whoever may open the store may change it anyway), named actor in audit lines, no
// pull-through cache (Revalidate and Evict need a running berth), lifecycle previews as berth
// evaluates them: cached repositories are the cache bounds', not the policies'.
func LocalAdmin(cfg config.Config, meta Metadata, audit *slog.Logger, actor string) (*admin.Service, error) {
	configured, err := ConfiguredPolicies(cfg)
	if err != nil {
		return nil, err
	}
	var prefixes []string
	for _, r := range cfg.Proxy.EffectiveRules() {
		prefixes = append(prefixes, r.Prefix+"/")
	}
	runner := expiry.Runner{Store: meta, Pulls: meta, Skip: func(repo string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(repo, p) })
	}}
	return admin.New(admin.Options{Accounts: meta, Actor: actor, Audit: audit,
		Lifecycle: &admin.Lifecycle{Settings: meta, Configured: configured, Runner: runner}}), nil
}
