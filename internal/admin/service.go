// Package admin holds berth's administrative operations — accounts, robots, grants, forced
// revalidation and eviction of cached images, lifecycle previews — once, for every front end: the
// admin API (/berth/v1/..., handler.go), the web console, and the command line, which calls them
// on the store directly or, with --server, through Client against a running berth.
//
// Every operation authorizes its caller itself (the principal in its context, auth.WithPrincipal)
// and writes the audit line, so that no front end can forget either.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
)

// API is the set of administrative operations. *Service implements it on the stores; *Client
// implements it over HTTP against a running berth's admin API. Errors are, or wrap, the sentinels
// below (ErrInvalid, ErrDenied, ...), metadata.ErrNotFound and metadata.ErrExists, whichever side
// of the wire they come from.
type API interface {
	// ListAccounts lists the accounts of kind (metadata.KindUser, metadata.KindRobot, "" for
	// all) by name. Needs admin on *.
	ListAccounts(ctx context.Context, kind string) ([]Account, error)
	// Account returns one account; metadata.ErrNotFound. Needs admin on *.
	Account(ctx context.Context, name string) (*Account, error)
	// CreateUser adds a user. An empty u.Password is generated and returned, to be shown once
	// (else the returned password is ""). ErrInvalid (name, groups, a password shorter than 12
	// characters), metadata.ErrExists. Needs admin on *.
	CreateUser(ctx context.Context, u NewUser) (*Account, string, error)
	// CreateRobot adds a robot account and returns its secret, which berth keeps only hashed: it
	// is never shown again (listings never carry it). ErrInvalid (name, groups, an expiry in the
	// past), metadata.ErrExists. Needs admin on *.
	CreateRobot(ctx context.Context, r NewRobot) (*Account, string, error)
	// SetPassword sets a user's password, which ends its docker login sessions (refresh tokens).
	// An empty password is generated and returned. ErrInvalid (a robot: its secret is replaced by
	// removing it and adding a new one; a short password), metadata.ErrNotFound. Needs admin on *.
	SetPassword(ctx context.Context, name, password string) (string, error)
	// SetGroups replaces the groups of a user or robot (nil: none). ErrInvalid,
	// metadata.ErrNotFound. Needs admin on *.
	SetGroups(ctx context.Context, name string, groups []string) (*Account, error)
	// DeleteAccount removes an account with its grants and login sessions; a running berth
	// refuses its tokens within seconds. kind, when not "", must be the account's kind
	// (ErrInvalid otherwise: `berth user rm` does not remove a robot). metadata.ErrNotFound.
	// Needs admin on *.
	DeleteAccount(ctx context.Context, name, kind string) error

	// ListGrants lists the grants on the patterns the caller administers (all of them for an
	// admin on *), by subject and pattern. Needs admin on some pattern: a caller who
	// administers nothing gets ErrDenied, not an empty list.
	ListGrants(ctx context.Context) ([]Grant, error)
	// Grant adds actions (pull, push, delete, fetch, admin, or * for all) to what subject
	// (user:NAME, robot:NAME, group:NAME, anonymous) may do on the repositories pattern matches,
	// and returns the grant as it is now. A user or robot subject must exist (a typo would grant
	// nothing, silently, until someone creates that name): metadata.ErrNotFound. ErrInvalid.
	// Needs admin on pattern.
	Grant(ctx context.Context, subject, pattern string, actions []string) (*Grant, error)
	// Revoke takes actions (all when none are given) back from subject on pattern; it takes
	// effect on /v2/ within seconds. metadata.ErrNotFound when subject had no grant on pattern.
	// ErrInvalid. Needs admin on pattern.
	Revoke(ctx context.Context, subject, pattern string, actions []string) error

	// Revalidate asks the upstream now whether the cached tag of a pull-through repository
	// (its local name, PREFIX/...) moved, whatever the rule's revalidation interval, and caches
	// the new manifest when it did, so that the next pull serves it. ErrInvalid (not a cached
	// repository), metadata.ErrNotFound (the tag is not cached), ErrUnavailable (no cache here,
	// the upstream failed, or its quota is at the rule's reserve). Needs admin on repository.
	Revalidate(ctx context.Context, repository, tag string) (*Revalidation, error)
	// Evict removes from the cache, now, the image that reference (a tag or digest) names in a
	// pull-through repository, whatever the rule's bounds, pins and the image's last pull: the
	// next pull fetches it again from the upstream. ErrInvalid (not a cached repository, or a
	// platform manifest that an index lists: evict the index), metadata.ErrNotFound,
	// ErrUnavailable (no cache here). Needs admin on repository.
	Evict(ctx context.Context, repository, reference string) (*Eviction, error)
	// LifecyclePreview lists what the lifecycle policies would expire now in repository (""
	// for every repository), changing nothing: what `berth lifecycle preview` prints. Cached
	// repositories are skipped (the cache's bounds govern them). Needs admin on repository (on
	// * for every repository).
	LifecyclePreview(ctx context.Context, repository string) ([]Expiry, error)
}

// Errors of the operations, besides metadata.ErrNotFound and metadata.ErrExists. The HTTP
// handler answers them 400, 403 and 503; Client turns those answers back into them.
var (
	// ErrInvalid is bad input: a malformed name, pattern, action or body.
	ErrInvalid = errors.New("invalid request")
	// ErrDenied is a caller without the grant an operation needs; the *DeniedError in the chain
	// names it.
	ErrDenied = errors.New("denied")
	// ErrUnavailable is an operation that cannot be done here or now: no pull-through cache
	// (the command line on the store, or a berth without proxy rules), an upstream that failed,
	// a quota at its reserve.
	ErrUnavailable = errors.New("unavailable")
)

// DeniedError says which grant a refused caller lacks. It matches ErrDenied (errors.Is).
type DeniedError struct {
	Caller  string // the principal's subject
	Pattern string // admin is needed on this pattern
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("%s needs a grant of admin on %s (berth grant %s '%s' admin)", e.Caller, e.Pattern, e.Caller, e.Pattern)
}

// Is makes a DeniedError match ErrDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Account is an account as the operations show it: never its secret.
type Account struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"` // metadata.KindUser or metadata.KindRobot
	Groups      []string  `json:"groups"`
	Description string    `json:"description,omitempty"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
	Created     time.Time `json:"created"`
}

func accountOf(a *metadata.Account) *Account {
	return &Account{Name: a.Name, Kind: a.Kind, Groups: nonNil(a.Groups), Description: a.Description,
		Expires: a.Expires, Created: a.Created}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// NewUser is a user to add.
type NewUser struct {
	Name        string   `json:"name"`
	Password    string   `json:"password,omitempty"` // "": generated
	Groups      []string `json:"groups,omitempty"`
	Description string   `json:"description,omitempty"`
}

// NewRobot is a robot account to add.
type NewRobot struct {
	Name        string    `json:"name"`
	Groups      []string  `json:"groups,omitempty"`
	Description string    `json:"description,omitempty"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
}

// Grant is what a subject may do on the repositories a pattern matches.
type Grant struct {
	Subject string    `json:"subject"`
	Pattern string    `json:"pattern"`
	Actions []string  `json:"actions"`
	Created time.Time `json:"created,omitzero"`
}

// Revalidation is what Revalidate found: the tag named Previous in the cache and names Digest now.
type Revalidation struct {
	Repository string     `json:"repository"`
	Tag        string     `json:"tag"`
	Previous   oci.Digest `json:"previous"`
	Digest     oci.Digest `json:"digest"`
	Changed    bool       `json:"changed"`
}

// Eviction is what Evict removed.
type Eviction struct {
	Repository   string       `json:"repository"`
	Digest       oci.Digest   `json:"digest"`    // the image's root manifest
	Manifests    []oci.Digest `json:"manifests"` // every manifest deleted, the root first
	BlobsDeleted int          `json:"blobs_deleted"`
	BytesFreed   int64        `json:"bytes_freed"`
}

// Expiry is a manifest the lifecycle policies would expire.
type Expiry struct {
	Repository string     `json:"repository"`
	Digest     oci.Digest `json:"digest"`
	Tags       []string   `json:"tags"`
	Rule       int        `json:"rule"` // the rulePriority that expires it
	Pushed     time.Time  `json:"pushed"`
	Pulled     time.Time  `json:"pulled,omitzero"` // zero: never
}

// Authorizer decides whether a caller administers the repositories of a pattern;
// *auth.Service is one (AdminOf).
type Authorizer interface {
	AdminOf(ctx context.Context, p *auth.Principal, pattern string) (bool, error)
}

// Cache is the pull-through cache's part of the operations (*proxy.Cache).
type Cache interface {
	Revalidate(ctx context.Context, local, tag string) (proxy.Revalidation, error)
	EvictImage(ctx context.Context, local, ref string) (proxy.Evicted, error)
}

// Lifecycle is what previews evaluate: the policies (configured, and set in the store) and the
// runner over the manifests.
type Lifecycle struct {
	Settings   expiry.Settings
	Configured []expiry.Assignment
	Runner     expiry.Runner
}

// Options configure a Service.
type Options struct {
	Accounts metadata.Accounts
	// Authorizer checks every caller. nil trusts every caller: the command line on the store
	// (whoever may open it may change it anyway) and berth --dev (no authentication at all).
	Authorizer Authorizer
	// Actor names the caller in audit lines when there is no principal (Authorizer nil):
	// "cli:USER", "dev".
	Actor string
	// Audit receives one line per change (nil: none).
	Audit *slog.Logger
	// Cache serves Revalidate and Evict (nil: they answer ErrUnavailable).
	Cache Cache
	// Lifecycle serves LifecyclePreview (nil: it answers ErrUnavailable).
	Lifecycle *Lifecycle
	// Now is the clock of previews and robot expiries (nil: time.Now).
	Now func() time.Time
	// AccountsOff, when not "", refuses the operations on accounts and grants (ErrDenied) with
	// this reason: berth --dev, where no caller is authenticated, yet accounts made then would
	// outlive --dev when the same store is later served with authentication.
	AccountsOff string
}

// Service is API on berth's stores.
type Service struct{ opt Options }

var _ API = (*Service)(nil)

// New returns a Service.
func New(opt Options) *Service {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Audit == nil {
		opt.Audit = slog.New(slog.DiscardHandler)
	}
	return &Service{opt: opt}
}

// Trusts reports whether the service lets every caller do everything (Options.Authorizer nil).
func (s *Service) Trusts() bool { return s.opt.Authorizer == nil }

// authorizeAccounts is authorize for the operations on accounts and grants.
func (s *Service) authorizeAccounts(ctx context.Context, pattern string) (string, error) {
	if s.opt.AccountsOff != "" {
		return "", fmt.Errorf("%w: %s", ErrDenied, s.opt.AccountsOff)
	}
	return s.authorize(ctx, pattern)
}

// authorize checks that the caller in ctx administers pattern and returns its name for audit
// lines. A context without a principal is anonymous, and refused.
func (s *Service) authorize(ctx context.Context, pattern string) (string, error) {
	p := auth.PrincipalFrom(ctx)
	if s.opt.Authorizer == nil {
		if p != nil && !p.IsAnonymous() {
			return p.Subject, nil
		}
		return s.opt.Actor, nil
	}
	ok, err := s.opt.Authorizer.AdminOf(ctx, p, pattern)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", &DeniedError{Caller: p.String(), Pattern: pattern}
	}
	return p.Subject, nil
}

// ListAccounts implements API.
func (s *Service) ListAccounts(ctx context.Context, kind string) ([]Account, error) {
	if _, err := s.authorizeAccounts(ctx, "*"); err != nil {
		return nil, err
	}
	if kind != "" && kind != metadata.KindUser && kind != metadata.KindRobot {
		return nil, invalid("kind %q: user or robot", kind)
	}
	list, err := s.opt.Accounts.ListAccounts(ctx, kind)
	if err != nil {
		return nil, err
	}
	out := make([]Account, 0, len(list))
	for i := range list {
		out = append(out, *accountOf(&list[i]))
	}
	return out, nil
}

// Account implements API.
func (s *Service) Account(ctx context.Context, name string) (*Account, error) {
	if _, err := s.authorizeAccounts(ctx, "*"); err != nil {
		return nil, err
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if err != nil {
		return nil, err
	}
	return accountOf(a), nil
}

// CreateUser implements API.
func (s *Service) CreateUser(ctx context.Context, u NewUser) (*Account, string, error) {
	by, err := s.authorizeAccounts(ctx, "*")
	if err != nil {
		return nil, "", err
	}
	if err := auth.ValidAccountName(u.Name); err != nil {
		return nil, "", invalid("%v", err)
	}
	groups, err := checkGroups(u.Groups)
	if err != nil {
		return nil, "", err
	}
	password, generated, err := newPassword(u.Password)
	if err != nil {
		return nil, "", err
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return nil, "", err
	}
	a := &metadata.Account{Name: u.Name, Kind: metadata.KindUser, Secret: hash, Groups: groups, Description: u.Description}
	if err := s.opt.Accounts.CreateAccount(ctx, a); err != nil {
		return nil, "", err
	}
	s.opt.Audit.Info("account created", "account", u.Name, "kind", metadata.KindUser, "groups", groups, "by", by)
	if !generated {
		password = ""
	}
	return s.reread(ctx, a), password, nil
}

// reread returns the account as stored (with its creation time), or as given when the store
// cannot say: the change is made either way.
func (s *Service) reread(ctx context.Context, a *metadata.Account) *Account {
	if b, err := s.opt.Accounts.Account(ctx, a.Name); err == nil {
		return accountOf(b)
	}
	return accountOf(a)
}

// newPassword checks a password, or generates one when it is "".
func newPassword(p string) (password string, generated bool, err error) {
	if p == "" {
		p, err = auth.RandomPassword()
		return p, true, err
	}
	if len(p) < 12 {
		return "", false, invalid("a password needs at least 12 characters")
	}
	if err := auth.ValidPassword(p); err != nil {
		return "", false, invalid("%v", err)
	}
	return p, false, nil
}

func checkGroups(groups []string) ([]string, error) {
	var out []string
	for _, g := range groups {
		if err := auth.ValidAccountName(g); err != nil {
			return nil, invalid("group %q: %v", g, err)
		}
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out, nil
}

// CreateRobot implements API.
func (s *Service) CreateRobot(ctx context.Context, r NewRobot) (*Account, string, error) {
	by, err := s.authorizeAccounts(ctx, "*")
	if err != nil {
		return nil, "", err
	}
	if err := auth.ValidAccountName(r.Name); err != nil {
		return nil, "", invalid("%v", err)
	}
	groups, err := checkGroups(r.Groups)
	if err != nil {
		return nil, "", err
	}
	if !r.Expires.IsZero() && !r.Expires.After(s.opt.Now()) {
		return nil, "", invalid("the expiry %s is not in the future", r.Expires.UTC().Format(time.RFC3339))
	}
	secret, hash, err := auth.NewRobotSecret()
	if err != nil {
		return nil, "", err
	}
	a := &metadata.Account{Name: r.Name, Kind: metadata.KindRobot, Secret: hash, Groups: groups,
		Description: r.Description}
	if !r.Expires.IsZero() {
		a.Expires = r.Expires.UTC()
	}
	if err := s.opt.Accounts.CreateAccount(ctx, a); err != nil {
		return nil, "", err
	}
	s.opt.Audit.Info("account created", "account", r.Name, "kind", metadata.KindRobot, "groups", groups, "expires", a.Expires, "by", by)
	return s.reread(ctx, a), secret, nil
}

// SetPassword implements API.
func (s *Service) SetPassword(ctx context.Context, name, password string) (string, error) {
	by, err := s.authorizeAccounts(ctx, "*")
	if err != nil {
		return "", err
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if err != nil {
		return "", err
	}
	if a.Kind != metadata.KindUser {
		return "", invalid("%s is a robot account: remove it and add a new one to change its secret", a.Name)
	}
	password, generated, err := newPassword(password)
	if err != nil {
		return "", err
	}
	if a.Secret, err = auth.HashPassword(password); err != nil {
		return "", err
	}
	if err := s.opt.Accounts.UpdateAccount(ctx, a); err != nil {
		return "", err
	}
	s.opt.Audit.Info("password changed", "account", a.Name, "by", by)
	if !generated {
		password = ""
	}
	return password, nil
}

// SetGroups implements API.
func (s *Service) SetGroups(ctx context.Context, name string, groups []string) (*Account, error) {
	by, err := s.authorizeAccounts(ctx, "*")
	if err != nil {
		return nil, err
	}
	if groups, err = checkGroups(groups); err != nil {
		return nil, err
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if err != nil {
		return nil, err
	}
	a.Groups = groups
	if err := s.opt.Accounts.UpdateAccount(ctx, a); err != nil {
		return nil, err
	}
	s.opt.Audit.Info("groups changed", "account", a.Name, "groups", a.Groups, "by", by)
	return accountOf(a), nil
}

// DeleteAccount implements API.
func (s *Service) DeleteAccount(ctx context.Context, name, kind string) error {
	by, err := s.authorizeAccounts(ctx, "*")
	if err != nil {
		return err
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if err != nil {
		return err
	}
	if kind != "" && a.Kind != kind {
		return invalid("%s is a %s, not a %s", a.Name, a.Kind, kind)
	}
	if err := s.opt.Accounts.DeleteAccount(ctx, a.Name); err != nil {
		return err
	}
	s.opt.Audit.Info("account removed", "account", a.Name, "kind", a.Kind, "by", by)
	return nil
}

// ListGrants implements API.
func (s *Service) ListGrants(ctx context.Context) ([]Grant, error) {
	grants, err := s.opt.Accounts.Grants(ctx)
	if err != nil {
		return nil, err
	}
	out := []Grant{}
	for _, g := range grants {
		if _, err := s.authorizeAccounts(ctx, g.Pattern); errors.Is(err, ErrDenied) {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, Grant{Subject: g.Subject, Pattern: g.Pattern, Actions: nonNil(g.Actions), Created: g.Created})
	}
	if len(out) == 0 {
		// Someone who administers nothing is told so, not shown an empty registry.
		if _, err := s.authorizeAccounts(ctx, "*"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Grant implements API.
func (s *Service) Grant(ctx context.Context, subject, pattern string, actions []string) (*Grant, error) {
	if err := auth.ValidPattern(pattern); err != nil {
		return nil, invalid("%v", err)
	}
	by, err := s.authorizeAccounts(ctx, pattern)
	if err != nil {
		return nil, err
	}
	if len(actions) == 0 {
		return nil, invalid("no actions: name one or more of pull, push, delete, fetch, admin")
	}
	acts, err := auth.ParseActions(actions...)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if err := s.checkSubject(ctx, subject); err != nil {
		return nil, err
	}
	if err := s.opt.Accounts.AddGrant(ctx, metadata.Grant{Subject: subject, Pattern: pattern, Actions: acts.Names()}); err != nil {
		return nil, err
	}
	s.opt.Audit.Info("grant added", "subject", subject, "pattern", pattern, "actions", acts.String(), "by", by)
	grants, err := s.opt.Accounts.Grants(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range grants {
		if g.Subject == subject && g.Pattern == pattern {
			return &Grant{Subject: g.Subject, Pattern: g.Pattern, Actions: nonNil(g.Actions), Created: g.Created}, nil
		}
	}
	return &Grant{Subject: subject, Pattern: pattern, Actions: acts.Names()}, nil
}

// checkSubject refuses grants to accounts that do not exist (a typo would grant nothing,
// silently, until someone creates that name).
func (s *Service) checkSubject(ctx context.Context, subject string) error {
	if err := auth.ValidSubject(subject); err != nil {
		return invalid("%v", err)
	}
	kind, name, _ := strings.Cut(subject, ":")
	if kind != metadata.KindUser && kind != metadata.KindRobot {
		return nil
	}
	a, err := s.opt.Accounts.Account(ctx, name)
	if err != nil {
		return err
	}
	if a.Kind != kind {
		return invalid("%s is a %s: use %s:%s", name, a.Kind, a.Kind, name)
	}
	return nil
}

// Revoke implements API.
func (s *Service) Revoke(ctx context.Context, subject, pattern string, actions []string) error {
	if err := auth.ValidPattern(pattern); err != nil {
		return invalid("%v", err)
	}
	by, err := s.authorizeAccounts(ctx, pattern)
	if err != nil {
		return err
	}
	if err := auth.ValidSubject(subject); err != nil {
		return invalid("%v", err)
	}
	var names []string
	if len(actions) > 0 {
		acts, err := auth.ParseActions(actions...)
		if err != nil {
			return invalid("%v", err)
		}
		names = acts.Names()
	}
	if err := s.opt.Accounts.RevokeGrant(ctx, subject, pattern, names...); err != nil {
		return err
	}
	s.opt.Audit.Info("grant revoked", "subject", subject, "pattern", pattern, "actions", strings.Join(names, ","), "by", by)
	return nil
}

// Revalidate implements API.
func (s *Service) Revalidate(ctx context.Context, repository, tag string) (*Revalidation, error) {
	if !oci.ValidName(repository) {
		return nil, invalid("repository %q is not a valid name", repository)
	}
	if !oci.ValidTag(tag) {
		return nil, invalid("tag %q is not a valid tag", tag)
	}
	by, err := s.authorize(ctx, repository)
	if err != nil {
		return nil, err
	}
	if s.opt.Cache == nil {
		return nil, fmt.Errorf("%w: revalidation needs a running berth's pull-through cache (--server)", ErrUnavailable)
	}
	rv, err := s.opt.Cache.Revalidate(ctx, repository, tag)
	if err != nil {
		return nil, cacheError(repository+":"+tag, err)
	}
	s.opt.Audit.Info("cached tag revalidated", "repository", repository, "tag", tag, "previous", rv.Previous, "digest", rv.Digest, "by", by)
	return &Revalidation{Repository: repository, Tag: tag, Previous: rv.Previous, Digest: rv.Digest, Changed: rv.Previous != rv.Digest}, nil
}

// cacheError maps the cache's errors onto the operations'.
func cacheError(what string, err error) error {
	var ue *proxy.Error
	switch {
	case errors.Is(err, proxy.ErrNotCached), errors.Is(err, proxy.ErrPartOfImage):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	case errors.Is(err, metadata.ErrNotFound):
		return fmt.Errorf("%s is not cached: %w", what, metadata.ErrNotFound)
	case errors.Is(err, proxy.ErrQuotaReserve), errors.As(err, &ue):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// The cache answers upstream failures as it answers clients.
	if e := oci.AsError(err); e != nil {
		if e.Code == oci.ErrManifestUnknown {
			return fmt.Errorf("%s: the upstream does not have it (%s): %w", what, e.Message, metadata.ErrNotFound)
		}
		return fmt.Errorf("%w: %s: %s", ErrUnavailable, what, e.Message)
	}
	return err
}

// Evict implements API.
func (s *Service) Evict(ctx context.Context, repository, reference string) (*Eviction, error) {
	if !oci.ValidName(repository) {
		return nil, invalid("repository %q is not a valid name", repository)
	}
	if !oci.ValidTag(reference) && !oci.IsDigest(reference) {
		return nil, invalid("reference %q is neither a tag nor a digest", reference)
	}
	by, err := s.authorize(ctx, repository)
	if err != nil {
		return nil, err
	}
	if s.opt.Cache == nil {
		return nil, fmt.Errorf("%w: eviction needs a running berth's pull-through cache (--server)", ErrUnavailable)
	}
	ev, err := s.opt.Cache.EvictImage(ctx, repository, reference)
	if err != nil {
		return nil, cacheError(repository+":"+reference, err)
	}
	s.opt.Audit.Info("cached image evicted", "repository", repository, "reference", reference, "digest", ev.Root,
		"manifests", len(ev.Manifests), "blobs_deleted", ev.Blobs, "bytes", ev.Bytes, "by", by)
	return &Eviction{Repository: repository, Digest: ev.Root, Manifests: ev.Manifests, BlobsDeleted: ev.Blobs, BytesFreed: ev.Bytes}, nil
}

// LifecyclePreview implements API.
func (s *Service) LifecyclePreview(ctx context.Context, repository string) ([]Expiry, error) {
	pattern := "*"
	if repository != "" {
		if !oci.ValidName(repository) {
			return nil, invalid("repository %q is not a valid name", repository)
		}
		pattern = repository
	}
	if _, err := s.authorize(ctx, pattern); err != nil {
		return nil, err
	}
	if s.opt.Lifecycle == nil {
		return nil, fmt.Errorf("%w: no lifecycle policies are evaluated here", ErrUnavailable)
	}
	l := s.opt.Lifecycle
	as, err := expiry.Policies(ctx, l.Settings, l.Configured)
	if err != nil {
		return nil, err
	}
	ex, err := l.Runner.Run(ctx, as, repository, true, s.opt.Now())
	if err != nil {
		return nil, err
	}
	out := make([]Expiry, 0, len(ex))
	for _, e := range ex {
		out = append(out, Expiry{Repository: e.Repo, Digest: e.Digest, Tags: nonNil(e.Tags), Rule: e.Rule, Pushed: e.Pushed, Pulled: e.Pulled})
	}
	return out, nil
}
