package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/berth/berth/internal/metadata"
)

// access is one entry of a token's access claim, as the Docker token specification writes it.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type tokenClaims struct {
	jwt.Claims
	Access []access `json:"access"`
	// Account is the ID of the account the token was issued to (user: and robot: subjects): a
	// token never passes to a later account that takes a deleted one's name.
	Account string `json:"berth_account,omitempty"`
}

// Scope is what a token lets its bearer do: actions per repository, and whether it may list the
// catalog.
type Scope struct {
	Repos   map[string]Actions
	Catalog bool
}

func (sc Scope) claims() []access {
	out := make([]access, 0, len(sc.Repos)+1)
	for name, a := range sc.Repos {
		out = append(out, access{Type: "repository", Name: name, Actions: nonEmpty(a.Names())})
	}
	if sc.Catalog {
		out = append(out, access{Type: "registry", Name: "catalog", Actions: []string{"*"}})
	}
	return out
}

func nonEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tokens signs and verifies the registry's JWTs (ES256) and remembers tokens it verified, so
// that a request with a known token costs a map lookup rather than an ECDSA verification. The
// memory of verified tokens is bounded in bytes, not entries: tokens can be large (many scopes).
type tokens struct {
	acc     metadata.Accounts
	sealer  Sealer
	issuer  string
	service string

	reloadMu sync.Mutex // one reload at a time
	mu       sync.RWMutex
	keys     []signingKey
	loaded   time.Time
	verified map[[32]byte]*verifiedToken // by SHA-256 of the token
	size     int                         // bytes of verified, estimated
	maxSize  int                         // bound of size: maxVerifiedBytes (tests set less)
	swept    time.Time                   // when expired tokens were last dropped
}

type verifiedToken struct {
	sub     string
	account string        // the account's ID, for user: and robot: subjects
	kid     string        // the key that signed it: a token is good only while its key is
	repos   []repoActions // sorted by name: a few bytes each, where a map costs hundreds
	catalog bool
	expiry  time.Time
	size    int
	used    atomic.Int64 // when it was last presented (UnixNano)
}

type repoActions struct {
	name    string
	actions Actions
}

// on is what the token carries for repository name.
func (v *verifiedToken) on(name string) Actions {
	i, ok := slices.BinarySearchFunc(v.repos, name, func(r repoActions, n string) int { return strings.Compare(r.name, n) })
	if !ok {
		return 0
	}
	return v.repos[i].actions
}

// scope is what the token carries, as the token service writes it.
func (v *verifiedToken) scope() Scope {
	sc := Scope{Repos: map[string]Actions{}, Catalog: v.catalog}
	for _, r := range v.repos {
		sc.Repos[r.name] = r.actions
	}
	return sc
}

const (
	keyReload       = time.Minute      // how often to look for rotated keys
	keyReloadUnseen = 5 * time.Second  // at most this often when a token names an unknown key
	clockLeeway     = 30 * time.Second // for clocks of replicas that disagree a little
	// maxVerifiedBytes bounds the memory of verified tokens; a 5-minute token with a handful of
	// scopes takes a few hundred bytes, so this holds tens of thousands.
	maxVerifiedBytes = 16 << 20
	// verifiedIdle: a verified token not presented again for this long is forgotten (and
	// verified again if it comes back). Clients present a token in bursts (a pull: a manifest and
	// its blobs), so the memory of tokens is what the last minute's clients use, not every token
	// of the last five minutes.
	verifiedIdle = time.Minute
)

func newTokens(acc metadata.Accounts, sealer Sealer, service string) *tokens {
	return &tokens{acc: acc, sealer: sealer, issuer: service, service: service,
		verified: map[[32]byte]*verifiedToken{}, maxSize: maxVerifiedBytes}
}

func (t *tokens) reload(ctx context.Context) error {
	keys, err := loadKeys(ctx, t.acc, t.sealer)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.keys, t.loaded = keys, time.Now()
	t.mu.Unlock()
	return nil
}

// fresh reloads the keys when they are older than maxAge, once for all callers.
func (t *tokens) fresh(ctx context.Context, maxAge time.Duration) error {
	t.mu.RLock()
	stale := time.Since(t.loaded) > maxAge
	t.mu.RUnlock()
	if !stale {
		return nil
	}
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	t.mu.RLock()
	stale = time.Since(t.loaded) > maxAge
	t.mu.RUnlock()
	if !stale {
		return nil // another caller reloaded meanwhile
	}
	return t.reload(ctx)
}

func (t *tokens) signer(ctx context.Context) (*signingKey, error) {
	if err := t.fresh(ctx, keyReload); err != nil {
		return nil, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	k := current(t.keys)
	if k == nil {
		return nil, errors.New("no token signing key")
	}
	return k, nil
}

// issue signs a token for sub with scope, valid until expiry.
func (t *tokens) issue(ctx context.Context, sub, account string, scope Scope, expiry time.Time) (string, error) {
	k, err := t.signer(ctx)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.ID))
	if err != nil {
		return "", err
	}
	id := make([]byte, 16)
	rand.Read(id)
	now := time.Now()
	c := tokenClaims{Claims: jwt.Claims{
		Issuer:    t.issuer,
		Subject:   sub,
		Audience:  jwt.Audience{t.service},
		Expiry:    jwt.NewNumericDate(expiry),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        hex.EncodeToString(id),
	}, Access: scope.claims(), Account: account}
	return jwt.Signed(signer).Claims(c).Serialize()
}

var errInvalidToken = errors.New("invalid token")

// verify checks a token's signature, issuer, audience and times, and returns what it grants. A
// token verified before is looked up by its hash, and is good while it has not expired and its
// signing key is neither retired nor gone.
func (t *tokens) verify(ctx context.Context, raw string) (*verifiedToken, error) {
	sum := sha256.Sum256([]byte(raw))
	t.mu.RLock()
	v := t.verified[sum]
	t.mu.RUnlock()
	if v != nil {
		now := time.Now()
		if now.After(v.expiry.Add(clockLeeway)) {
			return nil, fmt.Errorf("%w: expired", errInvalidToken)
		}
		v.used.Store(now.UnixNano())
		if err := t.fresh(ctx, keyReload); err != nil {
			return nil, err
		}
		t.mu.RLock()
		k := findKey(t.keys, v.kid)
		t.mu.RUnlock()
		if k == nil {
			return nil, fmt.Errorf("%w: unknown or retired signing key", errInvalidToken)
		}
		return v, nil
	}
	if len(raw) > 64<<10 {
		return nil, fmt.Errorf("%w: too large", errInvalidToken)
	}
	// Only ES256: a token naming "none", HS256 or any other algorithm is refused before its
	// signature is looked at.
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", errInvalidToken)
	}
	k, err := t.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return nil, err
	}
	var c tokenClaims
	if err := tok.Claims(&k.priv.PublicKey, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: t.issuer, AnyAudience: jwt.Audience{t.service}, Time: time.Now()}, clockLeeway); err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
	}
	if c.Expiry == nil || c.Subject == "" {
		return nil, fmt.Errorf("%w: no expiry or subject", errInvalidToken)
	}
	if c.Account == "" && (strings.HasPrefix(c.Subject, "user:") || strings.HasPrefix(c.Subject, "robot:")) {
		// Issued before tokens named their account's ID: the client logs in again.
		return nil, fmt.Errorf("%w: no account ID", errInvalidToken)
	}
	v = &verifiedToken{sub: c.Subject, account: c.Account, kid: k.ID, expiry: c.Expiry.Time()}
	for _, a := range c.Access {
		switch {
		case a.Type == "repository":
			acts, err := ParseActions(a.Actions...)
			if err != nil && len(a.Actions) > 0 {
				return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
			}
			v.repos = append(v.repos, repoActions{a.Name, acts})
		case a.Type == "registry" && a.Name == "catalog":
			v.catalog = true
		}
	}
	slices.SortFunc(v.repos, func(a, b repoActions) int { return strings.Compare(a.name, b.name) })
	merged := v.repos[:0] // a name given twice carries the union of its actions
	for _, r := range v.repos {
		if n := len(merged); n > 0 && merged[n-1].name == r.name {
			merged[n-1].actions |= r.actions
		} else {
			merged = append(merged, r)
		}
	}
	v.repos = slices.Clip(merged)
	// What the entry holds, as measured: the struct, its map entry, the strings and the slice.
	v.size = 200 + len(c.Subject) + len(c.Account) + len(k.ID)
	for _, r := range v.repos {
		v.size += 24 + len(r.name)
	}
	t.remember(sum, v)
	return v, nil
}

// remember keeps a verified token. Expired and idle ones (verifiedIdle) go every half minute, so
// that the memory of tokens is what the last minute's clients use; when it is full all the same,
// those go first, then any (they are verified again when they come back).
func (t *tokens) remember(sum [32]byte, v *verifiedToken) {
	if v.size > t.maxSize/64 {
		return // too large to be worth keeping
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	v.used.Store(now.UnixNano())
	if now.Sub(t.swept) > verifiedIdle/2 || t.size+v.size > t.maxSize {
		// The survivors go into a new map: a map keeps the room of the most it ever held, and
		// with every token replaced within minutes, the old one's room would be for a burst.
		t.swept = now
		idle := now.Add(-verifiedIdle).UnixNano()
		kept := map[[32]byte]*verifiedToken{}
		t.size = 0
		for k, old := range t.verified {
			if now.After(old.expiry.Add(clockLeeway)) || old.used.Load() < idle {
				continue
			}
			kept[k] = old
			t.size += old.size
		}
		t.verified = kept
	}
	if t.size+v.size > t.maxSize {
		for k, old := range t.verified { // in Go's random order
			if t.size+v.size <= t.maxSize*3/4 {
				break
			}
			delete(t.verified, k)
			t.size -= old.size
		}
	}
	if old := t.verified[sum]; old != nil {
		t.size -= old.size
	}
	t.verified[sum] = v
	t.size += v.size
}

// findKey returns the key kid unless it is unknown or retired.
func findKey(keys []signingKey, kid string) *signingKey {
	for i := range keys {
		k := &keys[i]
		if k.ID == kid {
			if !k.RetireAfter.IsZero() && time.Now().After(k.RetireAfter) {
				return nil
			}
			return k
		}
	}
	return nil
}

// key finds the verification key kid, reloading the keys (not too often) when it is unknown:
// another replica or `berth keys rotate` may have made it. Keys older than keyReload are
// reloaded too, so that a replica that only verifies sees a key retired by a rotation.
func (t *tokens) key(ctx context.Context, kid string) (*signingKey, error) {
	if err := t.fresh(ctx, keyReload); err != nil {
		return nil, err
	}
	find := func() (k *signingKey, known bool) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		for i := range t.keys {
			if t.keys[i].ID == kid {
				return findKey(t.keys, kid), true
			}
		}
		return nil, false
	}
	k, known := find()
	if k == nil && !known {
		if err := t.fresh(ctx, keyReloadUnseen); err != nil {
			return nil, err
		}
		k, _ = find()
	}
	if k == nil {
		return nil, fmt.Errorf("%w: unknown or retired signing key", errInvalidToken)
	}
	return k, nil
}
