// Package auth decides who the caller of a request is and what it may do: accounts (users and
// robots) with hashed secrets, grants of actions on repository patterns, the Docker token service
// that hands out short-lived signed tokens, Basic authentication, OIDC federation for CI, login
// throttling and the audit log of logins and tokens.
package auth

import (
	"context"
	"crypto/sha256"
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
	opt      Options
	tokens   *tokens
	throttle *throttle

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex
	logins   map[[32]byte]cachedLogin
	loginMu  sync.Mutex
}

// snapshot is the grants and accounts as the store had them at a moment: every request is judged
// against it, so that a revoke or a removed account takes effect within policyReload, for tokens
// already handed out too.
type snapshot struct {
	policy   *Policy
	accounts map[string]accountState
	at       time.Time
}

type accountState struct {
	subjects []string // the grant subjects of the account: itself, its groups, anonymous
	expires  time.Time
}

func (a accountState) live(now time.Time) bool { return a.expires.IsZero() || now.Before(a.expires) }

type cachedLogin struct {
	p       *Principal
	expires time.Time
}

const (
	policyReload = 2 * time.Second  // grants changed by the CLI take effect within this
	loginCache   = 10 * time.Second // a verified password is remembered this long
	maxLogins    = 10000
)

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
		opt:      opt,
		tokens:   &tokens{acc: opt.Accounts, sealer: opt.Sealer, issuer: opt.Service, service: opt.Service, verified: map[string]*verifiedToken{}},
		throttle: newThrottle(),
		logins:   map[[32]byte]cachedLogin{},
	}
	if err := s.tokens.reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Principal is the caller of a request.
type Principal struct {
	// Subject names the caller: user:NAME, robot:NAME, oidc:TRUST:SUB, or anonymous.
	Subject string
	// subjects are the grant subjects that apply: the caller, its groups, and anonymous.
	subjects []string
	rules    []rule         // an OIDC caller's grants, from its trust
	token    *verifiedToken // when the request carried a token: what the token allows
	expiry   time.Time      // when the identity ends (an OIDC token's or a robot's expiry)
	listAs   *Principal     // for a token's subject: its account, for catalog filtering
}

// Anonymous is the caller of a request without credentials.
var Anonymous = &Principal{Subject: "anonymous", subjects: []string{"anonymous"}}

// IsAnonymous reports whether the caller presented no identity.
func (p *Principal) IsAnonymous() bool { return p == nil || p.Subject == "anonymous" }

func (p *Principal) String() string {
	if p == nil {
		return "anonymous"
	}
	return p.Subject
}

func accountPrincipal(a *metadata.Account) *Principal {
	p := &Principal{Subject: a.Kind + ":" + a.Name, expiry: a.Expires}
	p.subjects = append(p.subjects, p.Subject, "anonymous")
	for _, g := range a.Groups {
		p.subjects = append(p.subjects, "group:"+g)
	}
	return p
}

func federatedPrincipal(f *Federated) *Principal {
	p := &Principal{Subject: "oidc:" + f.Trust + ":" + f.Subject, subjects: []string{"anonymous"}, expiry: f.Expiry}
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
	if sn := s.snap.Load(); sn != nil && time.Since(sn.at) <= policyReload {
		return sn, nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if sn := s.snap.Load(); sn != nil && time.Since(sn.at) <= policyReload {
		return sn, nil
	}
	grants, err := s.opt.Accounts.Grants(ctx)
	if err != nil {
		return nil, err
	}
	accounts, err := s.opt.Accounts.ListAccounts(ctx, "")
	if err != nil {
		return nil, err
	}
	sn := &snapshot{policy: NewPolicy(grants), accounts: make(map[string]accountState, len(accounts)), at: time.Now()}
	for i := range accounts {
		p := accountPrincipal(&accounts[i])
		sn.accounts[p.Subject] = accountState{subjects: p.subjects, expires: accounts[i].Expires}
	}
	s.snap.Store(sn)
	return sn, nil
}

// currentPolicy returns the grants, reloading them when they may have changed.
func (s *Service) currentPolicy(ctx context.Context) (*Policy, error) {
	sn, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return sn.policy, nil
}

// tokenAllows is what a token allows on repository name now: what it carries, less what its
// subject may no longer do (a revoked grant, a removed or expired account). OIDC callers' grants
// come from the configuration, which does not change while berth runs.
func (s *Service) tokenAllows(ctx context.Context, p *Principal, name string) (Actions, error) {
	have := p.token.scope.Repos[name].effective()
	if have == 0 || strings.HasPrefix(p.Subject, "oidc:") {
		return have, nil
	}
	sn, err := s.current(ctx)
	if err != nil {
		return 0, err
	}
	subjects := []string{"anonymous"}
	if p.Subject != "anonymous" {
		a, ok := sn.accounts[p.Subject]
		if !ok {
			// Created after the snapshot (or removed): ask the store.
			_, name, _ := strings.Cut(p.Subject, ":")
			acct, err := s.opt.Accounts.Account(ctx, name)
			if errors.Is(err, metadata.ErrNotFound) {
				return 0, nil
			} else if err != nil {
				return 0, err
			}
			if acct.Kind+":"+acct.Name != p.Subject {
				return 0, nil // the name now belongs to an account of the other kind
			}
			ap := accountPrincipal(acct)
			a = accountState{subjects: ap.subjects, expires: acct.Expires}
		}
		if !a.live(time.Now()) {
			return 0, nil
		}
		subjects = a.subjects
	}
	return have & sn.policy.Allowed(subjects, name), nil
}

// allowed is what p's identity (not its token) may do on repository name.
func (s *Service) allowed(ctx context.Context, p *Principal, name string) (Actions, error) {
	pol, err := s.currentPolicy(ctx)
	if err != nil {
		return 0, err
	}
	return pol.Allowed(p.subjects, name) | allowedBy(p.rules, name).effective(), nil
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
		return &Principal{Subject: v.sub, token: v}, nil
	}
	return nil, errMalformed
}

// login checks a user name and password (or robot secret, or OIDC token for user "oidc").
func (s *Service) login(ctx context.Context, user, pass, addr string) (*Principal, error) {
	name := user
	if user == OIDCUser && s.opt.Federation != nil {
		name = "" // see throttle.wait
	}
	if d := s.throttle.wait(name, addr); d > 0 {
		s.audit("login throttled", "user", user, "addr", addr)
		return nil, &ThrottledError{RetryAfter: d}
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	s.loginMu.Lock()
	c, ok := s.logins[key]
	s.loginMu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.p, nil
	}
	p, expires, err := s.verifyLogin(ctx, user, pass)
	if err != nil {
		if errors.Is(err, ErrBadCredentials) {
			s.throttle.fail(name, addr)
			s.audit("login failed", "user", user, "addr", addr, "reason", err.Error())
		}
		return nil, err
	}
	s.throttle.succeed(name)
	s.loginMu.Lock()
	if len(s.logins) >= maxLogins {
		clear(s.logins)
	}
	if until := time.Now().Add(loginCache); until.Before(expires) {
		expires = until
	}
	s.logins[key] = cachedLogin{p, expires}
	s.loginMu.Unlock()
	return p, nil
}

func (s *Service) verifyLogin(ctx context.Context, user, pass string) (*Principal, time.Time, error) {
	far := time.Now().Add(time.Hour)
	if user == OIDCUser && s.opt.Federation != nil {
		f, err := s.opt.Federation.Exchange(ctx, pass)
		if errors.Is(err, ErrUnavailable) {
			return nil, time.Time{}, err
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%w: %v", ErrBadCredentials, err)
		}
		return federatedPrincipal(f), f.Expiry, nil
	}
	a, err := s.opt.Accounts.Account(ctx, user)
	if errors.Is(err, metadata.ErrNotFound) {
		// Spend the time a password check takes, so that timing does not tell which accounts exist.
		verifySecret(dummyHash, pass)
		return nil, time.Time{}, ErrBadCredentials
	} else if err != nil {
		return nil, time.Time{}, err
	}
	ok, err := verifySecret(a.Secret, pass)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("account %s: %w", a.Name, err)
	}
	if !ok {
		return nil, time.Time{}, ErrBadCredentials
	}
	if !a.Expires.IsZero() && time.Now().After(a.Expires) {
		return nil, time.Time{}, fmt.Errorf("%w: account expired", ErrBadCredentials)
	}
	if !a.Expires.IsZero() && a.Expires.Before(far) {
		far = a.Expires
	}
	return accountPrincipal(a), far, nil
}

var dummyHash, _ = HashPassword("berth dummy password")

func (s *Service) audit(msg string, args ...any) {
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
func (s *Service) Authorize(r *http.Request, visible, local string, need Actions) (*Principal, Actions, error) {
	p, err := s.Authenticate(r)
	if err != nil {
		return nil, 0, s.authError(r, err, visible, need)
	}
	if need == 0 {
		if p.IsAnonymous() {
			return nil, 0, s.challenge(r, "", need, "authentication required")
		}
		return p, 0, nil
	}
	var have Actions
	if p.token != nil {
		have, err = s.tokenAllows(r.Context(), p, local)
		if err != nil {
			return nil, 0, err
		}
	} else {
		have, err = s.allowed(r.Context(), p, local)
		if err != nil {
			return nil, 0, err
		}
	}
	if have.Has(need) {
		return p, have, nil
	}
	if p.IsAnonymous() {
		return nil, 0, s.challenge(r, visible, need, "authentication required")
	}
	// A token without the scope, for a caller whose grants allow it: the client asks for a new token.
	if p.token != nil && (strings.HasPrefix(p.Subject, "user:") || strings.HasPrefix(p.Subject, "robot:")) {
		if a, err := s.subjectAllowed(r.Context(), p.Subject, local); err == nil && a.Has(need) {
			return nil, 0, s.challenge(r, visible, need, "insufficient_scope")
		}
	}
	if have.Has(Pull) || need&Pull == 0 {
		return nil, 0, oci.Errorf(oci.ErrDenied, "requested access to the resource is denied")
	}
	return nil, 0, oci.Errorf(oci.ErrNameUnknown, "repository name not known to registry")
}

// subjectAllowed is what the account behind a token subject may do now.
func (s *Service) subjectAllowed(ctx context.Context, subject, name string) (Actions, error) {
	_, acct, _ := strings.Cut(subject, ":")
	a, err := s.opt.Accounts.Account(ctx, acct)
	if err != nil {
		return 0, err
	}
	return s.allowed(ctx, accountPrincipal(a), name)
}

// CanList reports whether p may see repository name in the catalog: what its identity may pull
// (a token's own scope for OIDC callers, whose grants live in their trust).
func (s *Service) CanList(ctx context.Context, p *Principal, name string) bool {
	if p.token != nil {
		if a, err := s.tokenAllows(ctx, p, name); err == nil && a.Has(Pull) {
			return true
		}
		if !strings.HasPrefix(p.Subject, "user:") && !strings.HasPrefix(p.Subject, "robot:") {
			return false
		}
		// The account's grants, looked up once per request (a catalog asks for every repository).
		if p.listAs == nil {
			_, acct, _ := strings.Cut(p.Subject, ":")
			a, err := s.opt.Accounts.Account(ctx, acct)
			if err != nil {
				return false
			}
			p.listAs = accountPrincipal(a)
		}
		p = p.listAs
	}
	a, err := s.allowed(ctx, p, name)
	return err == nil && a.Has(Pull)
}

// Can reports whether p may do need on repository name (a mount's source, for example).
func (s *Service) Can(ctx context.Context, p *Principal, name string, need Actions) bool {
	var a Actions
	var err error
	if p.token != nil {
		a, err = s.tokenAllows(ctx, p, name)
	} else {
		a, err = s.allowed(ctx, p, name)
	}
	return err == nil && a.Has(need)
}

func (s *Service) authError(r *http.Request, err error, name string, need Actions) error {
	var te *ThrottledError
	switch {
	case errors.As(err, &te):
		secs := int(te.RetryAfter/time.Second) + 1
		return oci.Errorf(oci.ErrTooManyRequests, "%s", te.Error()).WithHeader("Retry-After", fmt.Sprint(secs))
	case errors.Is(err, ErrBadCredentials), errors.Is(err, errMalformed):
		return s.challenge(r, name, need, "invalid credentials")
	case errors.Is(err, errInvalidToken):
		return s.challenge(r, name, need, "invalid_token")
	case errors.Is(err, ErrUnavailable):
		return oci.Errorf(oci.ErrUnavailable, "%s", err.Error())
	}
	return err
}

// challenge is a 401 telling the client where to get a token for name and need.
func (s *Service) challenge(r *http.Request, name string, need Actions, reason string) *oci.Error {
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
	return oci.Errorf(oci.ErrUnauthorized, "%s", msg).WithHeader("WWW-Authenticate", h)
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
