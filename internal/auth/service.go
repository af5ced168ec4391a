// Package auth decides who the caller of a request is and what it may do: accounts (users and
// robots) with hashed secrets, grants of actions on repository patterns, the Docker token service
// that hands out short-lived signed tokens, Basic authentication, OIDC federation for CI, login
// throttling and the audit log of logins and tokens.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Options configure a Service.
type Options struct {
	Accounts metadata.Accounts
	Sealer   Sealer // seals the token signing keys; nil stores them as they are
	// Service is the token service's name: the service parameter of challenges and the audience
	// of tokens. Default "berth".
	Service string
	// Realm is the token endpoint's URL in challenges. Default: /token on the scheme and host the
	// request came to.
	Realm      string
	TokenTTL   time.Duration // default 5 minutes
	RefreshTTL time.Duration // of docker login's refresh tokens; default 90 days
	Federation Federation    // OIDC federation; nil: none
	// Candidates lists the local repositories a requested name may be served from (the
	// pull-through cache's routes), so that a token for "library/nginx" carries what the caller
	// may do on "docker-hub/library/nginx".
	Candidates func(name string) []string
	Audit      *slog.Logger // one line per login failure and token issued; nil: none
	// TrustedProxies are the load balancers in front of berth: for requests from them the
	// client's address (for login throttling and the audit log) comes from X-Forwarded-For.
	TrustedProxies []netip.Prefix
	// Throttles keeps the login throttles' counts where every process serving the same store
	// sees them (replicas on PostgreSQL), so that the budgets hold across them; nil keeps them
	// in this process's memory, which costs a login no write.
	Throttles metadata.Throttles
}

// Federation verifies identity tokens of trusted OIDC issuers (package oidc).
type Federation interface {
	Exchange(ctx context.Context, raw string) (*Federated, error)
}

// Federated is a caller an OIDC token vouched for.
type Federated struct {
	Trust   string
	Subject string
	Grants  []metadata.Grant // Subject unused
	Expiry  time.Time
}

// OIDCUser is the user name under which a CI job logs in with its OIDC token as the password.
const OIDCUser = "oidc"

// Service authenticates and authorizes requests and serves the token endpoint.
type Service struct {
	opt    Options
	tokens *tokens
	guard  *guard
	logins *logins

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex
	// changes counts the notifications that accounts or grants changed (Changed): a snapshot
	// loaded before the last one is stale.
	changes atomic.Int64

	counts counts

	sessionKey sessionKeyCache // console sessions (session.go)
}

// counts are the decisions the service made since it started (Stats).
type counts struct {
	logins, failed, throttled, tokens        atomic.Int64
	unauthenticated, denied, hidden, tooMany atomic.Int64
}

// Stats counts the service's decisions since it started: logins whose secret was verified (a
// login remembered from the last minutes is not verified again), failed and throttled logins,
// tokens issued, and the requests Authorize refused by answer: 401 (credentials needed or
// wrong), 403 (denied), 404 (a repository the caller may not see), 429 (throttled).
type Stats struct {
	Logins, LoginsFailed, LoginsThrottled, TokensIssued int64
	Unauthenticated, Denied, Hidden, Throttled          int64
}

// Stats returns the counts of the service's decisions.
func (s *Service) Stats() Stats {
	c := &s.counts
	return Stats{Logins: c.logins.Load(), LoginsFailed: c.failed.Load(), LoginsThrottled: c.throttled.Load(),
		TokensIssued: c.tokens.Load(), Unauthenticated: c.unauthenticated.Load(), Denied: c.denied.Load(),
		Hidden: c.hidden.Load(), Throttled: c.tooMany.Load()}
}

// snapshot is the grants and accounts as the store had them at a moment: every request is judged
// against it, whether it carries a token, Basic credentials or nothing, so that a revoke, a
// removed account, a changed password or group takes effect within policyReload everywhere.
type snapshot struct {
	policy   *Policy
	accounts map[string]*accountState // by name
	version  int64                    // the store's AuthVersion it was loaded at
	at       time.Time                // when it was last known to be current
	changes  int64                    // Service.changes when it was
}

// fresh reports whether sn may be used without asking the store.
func (s *Service) fresh(sn *snapshot) bool {
	return sn != nil && time.Since(sn.at) <= policyReload && sn.changes == s.changes.Load()
}

// Changed tells the service that accounts or grants changed in the store (another process said
// so: metadata.AuthChannel): the next request compares the version and reloads, rather than
// wait for the next comparison.
func (s *Service) Changed() { s.changes.Add(1) }

// accountState is what a decision needs of an account.
type accountState struct {
	ID       string
	subject  string   // user:NAME or robot:NAME
	secret   string   // the stored hash: a login verified against another one is stale
	subjects []string // the grant subjects of the account: itself, its groups, anonymous
	Expires  time.Time
}

func (a *accountState) live(now time.Time) bool { return a.Expires.IsZero() || now.Before(a.Expires) }

func newAccountState(a *metadata.Account) *accountState {
	st := &accountState{ID: a.ID, subject: a.Kind + ":" + a.Name, secret: a.Secret, Expires: a.Expires}
	st.subjects = append(st.subjects, st.subject, "anonymous")
	for _, g := range a.Groups {
		st.subjects = append(st.subjects, "group:"+g)
	}
	return st
}

// policyReload is how often the store's auth version is compared with the snapshot's: grant
// and account changes, made by any process sharing the store (another replica, the account
// commands), take effect within it and a query. A comparison is one row read; the accounts and
// grants are read again only when the version moved.
const policyReload = 500 * time.Millisecond

// New returns a service; it loads (creating on first start) the token signing keys.
func New(ctx context.Context, opt Options) (*Service, error) {
	if opt.Service == "" {
		opt.Service = "berth"
	}
	if opt.TokenTTL <= 0 {
		opt.TokenTTL = 5 * time.Minute
	}
	if opt.RefreshTTL <= 0 {
		opt.RefreshTTL = 90 * 24 * time.Hour
	}
	if opt.Candidates == nil {
		opt.Candidates = func(string) []string { return nil }
	}
	s := &Service{
		opt:    opt,
		tokens: newTokens(opt.Accounts, opt.Sealer, opt.Service),
		guard:  newGuard(opt.Throttles),
	}
	s.logins = newLogins(s.guard.weight)
	if err := s.tokens.reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// PruneThrottles forgets the login throttles' buckets that are full and the logins older than an
// address stays known, and says how many it forgot. With Options.Throttles the server runs it
// every minute or so, on one replica; in memory the guard prunes as its table fills.
func (s *Service) PruneThrottles(ctx context.Context) (int64, error) { return s.guard.prune(ctx) }

// Principal is the caller of a request.
type Principal struct {
	// Subject names the caller: user:NAME, robot:NAME, oidc:TRUST:SUB, or anonymous.
	Subject string
	account string         // for user: and robot: subjects, the account's ID
	rules   []rule         // an OIDC caller's grants, from its trust
	token   *verifiedToken // when the request carried a token: what the token allows
	expiry  time.Time      // when the identity ends (an OIDC token's or a robot's expiry)
}

// Anonymous is the caller of a request without credentials.
var Anonymous = &Principal{Subject: "anonymous"}

// IsAnonymous reports whether the caller presented no identity.
func (p *Principal) IsAnonymous() bool { return p == nil || p.Subject == "anonymous" }

func (p *Principal) String() string {
	if p == nil {
		return "anonymous"
	}
	return p.Subject
}

// isAccount reports whether the caller is a user or robot account (not OIDC, not anonymous).
func (p *Principal) isAccount() bool {
	return strings.HasPrefix(p.Subject, "user:") || strings.HasPrefix(p.Subject, "robot:")
}

func accountPrincipal(a *metadata.Account) *Principal {
	return &Principal{Subject: a.Kind + ":" + a.Name, account: a.ID, expiry: a.Expires}
}

func federatedPrincipal(f *Federated) *Principal {
	p := &Principal{Subject: "oidc:" + f.Trust + ":" + f.Subject, expiry: f.Expiry}
	for _, g := range f.Grants {
		if a, err := ParseActions(g.Actions...); err == nil {
			p.rules = append(p.rules, rule{g.Pattern, a})
		}
	}
	return p
}

// current returns the snapshot of grants and accounts, reloading it when it may be out of date.
// The hot path is an atomic load.
func (s *Service) current(ctx context.Context) (*snapshot, error) {
	if sn := s.snap.Load(); s.fresh(sn) {
		return sn, nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if sn := s.snap.Load(); s.fresh(sn) {
		return sn, nil
	}
	at, changes := time.Now(), s.changes.Load()
	// The version first: a change made while the rest is read moves it past what is stored
	// here, so the next comparison reloads.
	version, err := s.opt.Accounts.AuthVersion(ctx)
	if err != nil {
		return nil, err
	}
	if sn := s.snap.Load(); sn != nil && sn.version == version {
		fresh := *sn
		fresh.at, fresh.changes = at, changes
		s.snap.Store(&fresh)
		return &fresh, nil
	}
	grants, err := s.opt.Accounts.Grants(ctx)
	if err != nil {
		return nil, err
	}
	accounts, err := s.opt.Accounts.ListAccounts(ctx, "")
	if err != nil {
		return nil, err
	}
	sn := &snapshot{policy: NewPolicy(grants), accounts: make(map[string]*accountState, len(accounts)), version: version, at: at, changes: changes}
	for i := range accounts {
		sn.accounts[accounts[i].Name] = newAccountState(&accounts[i])
	}
	s.snap.Store(sn)
	return sn, nil
}

// account returns the account name as it is now: from the snapshot, or from the store for one
// created after it. nil when there is none.
func (s *Service) account(ctx context.Context, name string) (*accountState, error) {
	sn, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	if a := sn.accounts[name]; a != nil {
		return a, nil
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return newAccountState(a), nil
}

// identity is what p's identity may do on repository name now, whatever its token says: the
// grants of its account as it is now (nothing when the account is gone, expired, or another
// account has its name now), of anonymous, and of its OIDC trust.
func (s *Service) identity(ctx context.Context, p *Principal, name string) (Actions, error) {
	sn, err := s.current(ctx)
	if err != nil {
		return 0, err
	}
	subjects := []string{"anonymous"}
	if p.isAccount() {
		_, acct, _ := strings.Cut(p.Subject, ":")
		a, err := s.account(ctx, acct)
		if err != nil {
			return 0, err
		}
		if a == nil || a.subject != p.Subject || a.ID != p.account || !a.live(time.Now()) {
			return 0, nil
		}
		subjects = a.subjects
	}
	return sn.policy.Allowed(subjects, name) | allowedBy(p.rules, name).effective(), nil
}

// allows is the one decision: what the caller p may do on repository name now. A caller with a
// token may do what the token carries and its identity still may; an OIDC token's grants come
// from the configuration, which does not change while berth runs, so its scope stands alone.
func (s *Service) allows(ctx context.Context, p *Principal, name string) (Actions, error) {
	if p.token == nil {
		return s.identity(ctx, p, name)
	}
	have := p.token.on(name).effective()
	if have == 0 || strings.HasPrefix(p.Subject, "oidc:") {
		return have, nil
	}
	now, err := s.identity(ctx, p, name)
	return have & now, err
}

// Errors of authentication, which the token endpoint and the registry answer differently.
var (
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrUnavailable: an OIDC issuer cannot be reached to check a token; not the caller's fault.
	ErrUnavailable = errors.New("identity provider unavailable")
	errMalformed   = errors.New("malformed Authorization header")
)

// ThrottledError says that logins for an account or from an address are paused.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %s", e.RetryAfter.Round(time.Second))
}

// clientAddr is the address a request came from, for throttling and the audit log: the peer, or
// behind trusted proxies the nearest address in X-Forwarded-For that is not one of them (the
// entries left of it are the client's to write, so they cannot be believed).
func (s *Service) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !s.trusted(host) {
		return host
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if _, err := netip.ParseAddr(hop); err != nil {
			return host // garbage: keep the proxy's own address
		}
		if !s.trusted(hop) {
			return hop
		}
		host = hop
	}
	return host
}

func (s *Service) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.opt.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Authenticate returns the caller of r: Anonymous without credentials, the account of Basic
// credentials (or the OIDC identity when the user is "oidc"), or the subject of a Bearer token.
func (s *Service) Authenticate(r *http.Request) (*Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Anonymous, nil
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "basic":
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil, errMalformed
		}
		return s.login(r.Context(), user, pass, s.clientAddr(r))
	case "bearer":
		v, err := s.tokens.verify(r.Context(), strings.TrimSpace(cred))
		if err != nil {
			return nil, err
		}
		return &Principal{Subject: v.sub, account: v.account, token: v}, nil
	}
	return nil, errMalformed
}

func (s *Service) audit(msg string, args ...any) {
	switch msg { // every audited decision is counted (Stats)
	case "login failed":
		s.counts.failed.Add(1)
	case "login throttled":
		s.counts.throttled.Add(1)
	case "token issued":
		s.counts.tokens.Add(1)
	}
	if s.opt.Audit != nil {
		s.opt.Audit.Info(msg, args...)
	}
}

// Authorize checks that the caller of r may do need on a repository, which the client named
// visible and which is stored as local (they differ for the pull-through cache's mirror routes).
// need 0 asks only for a caller with credentials (the /v2/ base endpoint). On refusal the
// error is an *oci.Error to answer with: 401 with a challenge when credentials may help, 403
// when the caller may see the repository but not do need, 404 for reads of repositories the
// caller may not see (whether or not they exist: names do not leak), 429 while logins are
// throttled.
func (s *Service) Authorize(r *http.Request, visible, local string, need Actions) (_ *Principal, _ Actions, err error) {
	defer func() {
		if err != nil {
			s.refused(err)
		}
	}()
	p, err := s.Authenticate(r)
	if err != nil {
		return nil, 0, s.authError(r, err, visible, local, need)
	}
	if need == 0 {
		if p.IsAnonymous() {
			return nil, 0, s.challenge(r, "", "", need, "authentication required")
		}
		return p, 0, nil
	}
	have, err := s.allows(r.Context(), p, local)
	if err != nil {
		return nil, 0, err
	}
	if have.Has(need) {
		return p, have, nil
	}
	if p.IsAnonymous() {
		return nil, 0, s.challenge(r, visible, local, need, "authentication required")
	}
	// A token without the scope, for a caller whose grants allow it: the client asks for a new token.
	if p.token != nil && p.isAccount() {
		if a, err := s.identity(r.Context(), p, local); err == nil && a.Has(need) {
			return nil, 0, s.challenge(r, visible, local, need, "insufficient_scope")
		}
	}
	if have.Has(Pull) || need&Pull == 0 {
		return nil, 0, oci.Errorf(oci.ErrDenied, "requested access to the resource is denied%s", grantHint(visible, local))
	}
	return nil, 0, oci.Errorf(oci.ErrNameUnknown, "repository name not known to registry%s", grantHint(visible, local))
}

// refused counts a refusal of Authorize by its answer.
func (s *Service) refused(err error) {
	var e *oci.Error
	if !errors.As(err, &e) {
		return
	}
	switch e.HTTPStatus() {
	case http.StatusUnauthorized:
		s.counts.unauthenticated.Add(1)
	case http.StatusForbidden:
		s.counts.denied.Add(1)
	case http.StatusNotFound:
		s.counts.hidden.Add(1)
	case http.StatusTooManyRequests:
		s.counts.tooMany.Add(1)
	}
}

// grantHint says which repository a request was authorized on, when it is not the one the client
// named (the root mirror and containerd's ?ns= requests: grants on the rule's prefix apply).
func grantHint(visible, local string) string {
	if visible == "" || visible == local {
		return ""
	}
	return fmt.Sprintf(" (requests for %s are served from the pull-through cache as %s, and grants on %s apply)", visible, local, local)
}

// MayPush reports whether the caller of r may push to repository name (by its grants, whatever
// its token's scope): a client of such a caller may be pushing a new repository of that name.
func (s *Service) MayPush(r *http.Request, name string) bool {
	p, err := s.Authenticate(r)
	if err != nil {
		return false
	}
	var a Actions
	if p.token != nil && !p.isAccount() {
		a = p.token.on(name).effective() // an OIDC caller's grants are in its token
	} else if a, err = s.identity(r.Context(), p, name); err != nil {
		return false
	}
	return a.Has(Push)
}

// ClientAddr is the address a request came from: the peer, or behind auth.trusted_proxies the
// client's address from X-Forwarded-For.
func (s *Service) ClientAddr(r *http.Request) string { return s.clientAddr(r) }

// CanList reports whether p may see repository name in the catalog: what its identity may pull
// now (a token's own scope for OIDC callers, whose grants live in their trust).
func (s *Service) CanList(ctx context.Context, p *Principal, name string) bool {
	var a Actions
	var err error
	if p.token != nil && !p.isAccount() {
		a, err = s.allows(ctx, p, name)
	} else {
		a, err = s.identity(ctx, p, name)
	}
	return err == nil && a.Has(Pull)
}

// Can reports whether p may do need on repository name (a mount's source, for example).
func (s *Service) Can(ctx context.Context, p *Principal, name string, need Actions) bool {
	a, err := s.allows(ctx, p, name)
	return err == nil && a.Has(need)
}

// IsAdmin reports whether the caller of r is allowed admin on every repository of the pattern
// (for example "*" or "docker-hub/*"): what berth's own endpoints outside /v2/ ask.
func (s *Service) IsAdmin(r *http.Request, pattern string) (bool, error) {
	p, err := s.Caller(r)
	if err != nil {
		return false, err
	}
	return s.AdminOf(r.Context(), p, pattern)
}

// Caller authenticates the caller of one of berth's own endpoints outside /v2/ (the admin API,
// the console's login): a caller with credentials, or the *oci.Error to answer with: 401 with the
// challenge /v2/ sends when there are none or they are wrong, 429 while logins are throttled.
func (s *Service) Caller(r *http.Request) (*Principal, error) {
	p, err := s.Authenticate(r)
	if err != nil {
		return nil, s.authError(r, err, "", "", 0)
	}
	if p.IsAnonymous() {
		return nil, s.challenge(r, "", "", 0, "authentication required")
	}
	return p, nil
}

// AdminOf reports whether p is allowed admin on every repository of the pattern (a repository
// name, or "team/*", "*"). A caller that presented a registry token is not: tokens carry
// repository scopes for /v2/, not berth's own endpoints, so a leaked pull token administers
// nothing.
func (s *Service) AdminOf(ctx context.Context, p *Principal, pattern string) (bool, error) {
	if p.IsAnonymous() || p.token != nil {
		return false, nil
	}
	// A pattern is matched as if it were a name: '*' in it is matched only by a '*' in a grant.
	a, err := s.identity(ctx, p, pattern)
	return err == nil && a.Has(Admin), err
}

func (s *Service) authError(r *http.Request, err error, name, local string, need Actions) error {
	var te *ThrottledError
	switch {
	case errors.As(err, &te):
		secs := int(te.RetryAfter/time.Second) + 1
		return oci.Errorf(oci.ErrTooManyRequests, "%s", te.Error()).WithHeader("Retry-After", fmt.Sprint(secs))
	case errors.Is(err, ErrBadCredentials), errors.Is(err, errMalformed):
		return s.challenge(r, name, local, need, "invalid credentials")
	case errors.Is(err, errInvalidToken):
		return s.challenge(r, name, local, need, "invalid_token")
	case errors.Is(err, ErrUnavailable):
		return oci.Errorf(oci.ErrUnavailable, "%s", err.Error())
	}
	return err
}

// challenge is a 401 telling the client where to get a token for name and need.
func (s *Service) challenge(r *http.Request, name, local string, need Actions, reason string) *oci.Error {
	h := fmt.Sprintf(`Bearer realm=%q,service=%q`, s.realm(r), s.opt.Service)
	if name != "" {
		var acts []string
		switch {
		case need.Has(Push):
			acts = append(acts, "pull", "push")
		case need&(Pull|Fetch) != 0:
			acts = append(acts, "pull")
		}
		if need.Has(Delete) {
			acts = append(acts, "delete")
		}
		h += fmt.Sprintf(`,scope="repository:%s:%s"`, name, strings.Join(acts, ","))
	}
	switch reason {
	case "insufficient_scope", "invalid_token":
		h += fmt.Sprintf(`,error=%q`, reason)
	}
	msg := "authentication required"
	if reason == "invalid credentials" || reason == "invalid_token" {
		msg = "invalid credentials"
	}
	return oci.Errorf(oci.ErrUnauthorized, "%s%s", msg, grantHint(name, local)).WithHeader("WWW-Authenticate", h)
}

func (s *Service) realm(r *http.Request) string {
	if s.opt.Realm != "" {
		return s.opt.Realm
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/token"
}

type ctxKey int

const (
	principalKey ctxKey = iota
	cacheOnlyKey
)

// WithPrincipal records the caller in a context.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey, p)
}

// PrincipalFrom returns the caller recorded in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey).(*Principal)
	return p
}

// CacheOnly marks a request whose caller may read a cached repository but not make berth ask
// its upstream (no fetch grant).
func CacheOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, cacheOnlyKey, true)
}

// IsCacheOnly reports whether ctx was marked by CacheOnly.
func IsCacheOnly(ctx context.Context) bool { b, _ := ctx.Value(cacheOnlyKey).(bool); return b }
