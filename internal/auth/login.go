package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/berth/berth/internal/metadata"
)

// Logins: a user name and a secret (a password, a robot secret, or for the user "oidc" an OIDC
// token), from Basic credentials or the token endpoint's password grant.
//
// What a login costs an attacker and berth:
//   - The guard (guard.go) reserves a guess before anything is checked, so no more guesses are
//     checked than its budgets allow, however many arrive at once.
//   - The check is chosen by the shape of the secret, never by the account: a robot-shaped secret
//     (berth_rbt_ and 43 characters) is hashed with SHA-256 and compared, anything else runs
//     argon2id against the user's hash, or against a dummy hash when the name is a robot or
//     nobody. So the time a wrong secret takes tells nothing about what the name is.
//   - argon2id (19 MiB, ~25 ms of a core) runs at most argonSlots at once, the others waiting
//     their turn (gate.go), the address that has guessed least lately first: a flood of wrong
//     passwords costs bounded memory, and a client logging in from elsewhere meanwhile is next.
//   - The same name and secret from the same address, asked again while it is being checked,
//     waits for that check's answer instead of spending a guess of its own.
//   - A verified login is remembered (by a hash of name and secret) for loginCache, and checked
//     against the accounts of now on every use: a removed account, a changed password, new
//     groups take effect as fast as for tokens (policyReload).

const (
	loginCache = 5 * time.Minute // a verified secret is remembered this long
	maxLogins  = 10000
)

// argonSlots is how many argon2id checks run at once. One: a check takes 19 MiB, and the Go heap
// grows to twice what is live before it collects, so each slot costs about 40 MiB of RSS under a
// flood; one slot checks some 40 passwords a second, far more than people log in (a verified
// login is remembered, and robots' secrets never need argon2id).
const argonSlots = 1

type cachedLogin struct {
	id, secret string // the account's ID and stored hash when the secret was verified
	expires    time.Time
}

// logins holds the cache of verified logins, the logins being checked, and the argon2id gate.
type logins struct {
	flight singleflight.Group // logins being checked, by their key and address
	mu     sync.Mutex
	cache  map[[32]byte]cachedLogin
	swept  time.Time // when expired logins were last dropped
	gate   *gate

	argonRuns atomic.Int64 // argon2id checks done (tests count them)
}

func newLogins(weight func(addr string) float64) *logins {
	return &logins{cache: map[[32]byte]cachedLogin{}, gate: newGate(argonSlots, weight)}
}

func loginKey(user, pass string) [32]byte { return sha256.Sum256([]byte(user + "\x00" + pass)) }

// remember keeps a verified login. Expired ones go once a minute; when the cache is full all the
// same (more distinct logins in loginCache than maxLogins), it starts afresh.
func (l *logins) remember(key [32]byte, c cachedLogin) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.swept) > time.Minute {
		l.swept = now
		for k, old := range l.cache {
			if now.After(old.expires) {
				delete(l.cache, k)
			}
		}
	}
	if len(l.cache) >= maxLogins {
		clear(l.cache)
	}
	l.cache[key] = c
}

// argon runs fn (an argon2id check) when the gate lets a check from addr run.
func (l *logins) argon(ctx context.Context, addr string, fn func() (bool, error)) (bool, error) {
	if err := l.gate.acquire(ctx, addrKey(addr)); err != nil {
		return false, err
	}
	defer l.gate.release()
	l.argonRuns.Add(1)
	return fn()
}

// login checks a user name and secret from addr and returns the caller. A client that leaves
// while its check waits for its turn ends the wait (ctx).
func (s *Service) login(ctx context.Context, user, pass, addr string) (*Principal, error) {
	if user == OIDCUser && s.opt.Federation != nil {
		return s.loginOIDC(ctx, pass, addr)
	}
	key := loginKey(user, pass)
	if p, ok := s.cachedLogin(ctx, key, user); ok {
		return p, nil
	}
	// The same login from the same address already being checked (a client with many
	// connections sending Basic on each, right after a restart or the cache's expiry) is
	// answered by that check: one guess reserved and judged, however many ask at once.
	flight := string(key[:]) + "\x00" + addr
	for {
		ch := s.logins.flight.DoChan(flight, func() (any, error) { return s.verifyLogin(ctx, user, pass, addr, key) })
		select {
		case r := <-ch:
			if r.Err != nil && r.Shared && ctx.Err() == nil && (errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
				continue // the client whose check this was left; this one is still here
			}
			if r.Err != nil {
				return nil, r.Err
			}
			p := *r.Val.(*Principal)
			return &p, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// verifyLogin is login's check of a name and secret not remembered: a guess reserved, the secret
// checked, the login remembered if right.
func (s *Service) verifyLogin(ctx context.Context, user, pass, addr string, key [32]byte) (*Principal, error) {
	res, wait, err := s.guard.reserve(ctx, user, addr)
	if err != nil {
		return nil, err // the shared counts unavailable: no guess goes unchecked
	}
	if wait > 0 {
		s.audit("login throttled", "user", user, "addr", addr)
		return nil, &ThrottledError{RetryAfter: wait}
	}
	a, err := s.checkSecret(ctx, user, pass, addr)
	if err != nil {
		if errors.Is(err, ErrBadCredentials) {
			s.audit("login failed", "user", user, "addr", addr, "reason", err.Error())
		} else {
			res.refund(ctx) // not a guess that was judged
		}
		return nil, err
	}
	res.refund(ctx)
	s.counts.logins.Add(1)
	s.guard.succeeded(ctx, user, addr)
	s.logins.remember(key, cachedLogin{id: a.ID, secret: a.Secret, expires: time.Now().Add(loginCache)})
	return accountPrincipal(a), nil
}

// cachedLogin returns the caller of a login verified before, if its account is still the one
// that was verified, with the same secret, and live.
func (s *Service) cachedLogin(ctx context.Context, key [32]byte, user string) (*Principal, bool) {
	s.logins.mu.Lock()
	c, ok := s.logins.cache[key]
	s.logins.mu.Unlock()
	if !ok || time.Now().After(c.expires) {
		return nil, false
	}
	a, err := s.account(ctx, user)
	if err != nil || a == nil || a.ID != c.id || a.secret != c.secret || !a.live(time.Now()) {
		return nil, false
	}
	return &Principal{Subject: a.subject, account: a.ID, expiry: a.Expires}, true
}

// checkSecret verifies a secret for user; it picks the check by the secret's shape (see above).
func (s *Service) checkSecret(ctx context.Context, user, pass, addr string) (*metadata.Account, error) {
	a, err := s.opt.Accounts.Account(ctx, user)
	if errors.Is(err, metadata.ErrNotFound) {
		a = nil
	} else if err != nil {
		return nil, err
	}
	var ok bool
	if IsRobotSecret(pass) {
		hash := dummyRobotHash
		if a != nil && a.Kind == metadata.KindRobot {
			hash = a.Secret
		}
		ok, err = verifySecret(hash, pass)
	} else {
		hash := dummyHash()
		if a != nil && a.Kind == metadata.KindUser {
			hash = a.Secret
		}
		ok, err = s.logins.argon(ctx, addr, func() (bool, error) { return verifySecret(hash, pass) })
	}
	switch {
	case err != nil && a != nil:
		return nil, fmt.Errorf("account %s: %w", a.Name, err)
	case err != nil:
		return nil, err
	case !ok || a == nil || (a.Kind != metadata.KindUser && a.Kind != metadata.KindRobot):
		return nil, ErrBadCredentials
	case !a.Expires.IsZero() && time.Now().After(a.Expires):
		return nil, fmt.Errorf("%w: account expired", ErrBadCredentials)
	}
	return a, nil
}

// loginOIDC exchanges an OIDC token for a caller. Only the address's budget counts: the user
// name is the same for every CI job, and a token cannot be guessed.
func (s *Service) loginOIDC(ctx context.Context, raw, addr string) (*Principal, error) {
	res, wait, err := s.guard.reserve(ctx, "", addr)
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		s.audit("login throttled", "user", OIDCUser, "addr", addr)
		return nil, &ThrottledError{RetryAfter: wait}
	}
	f, err := s.opt.Federation.Exchange(ctx, raw)
	if errors.Is(err, ErrUnavailable) {
		res.refund(ctx)
		return nil, err
	}
	if err != nil {
		s.audit("login failed", "user", OIDCUser, "addr", addr, "reason", err.Error())
		return nil, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	res.refund(ctx)
	s.counts.logins.Add(1)
	return federatedPrincipal(f), nil
}

// The hashes that wrong secrets for robots, users and unknown names are checked against, so
// that every wrong secret of a shape costs the same.
var (
	// Made on first use: hashing costs 19 MiB, which a process that never sees a wrong password
	// (the CLI) need not spend.
	dummyHash      = sync.OnceValue(func() string { h, _ := HashPassword("berth dummy password"); return h })
	dummyRobotHash = hashRobotSecret(RobotPrefix + "berth-dummy-robot-secret-berth-dummy-robot-s")
)
