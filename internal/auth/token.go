package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
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
// that a request with a known token costs a map lookup rather than an ECDSA verification.
type tokens struct {
	acc     metadata.Accounts
	sealer  Sealer
	issuer  string
	service string

	mu       sync.RWMutex
	keys     []signingKey
	loaded   time.Time
	verified map[string]*verifiedToken
}

type verifiedToken struct {
	sub    string
	scope  Scope
	expiry time.Time
}

const (
	keyReload       = time.Minute      // how often to look for rotated keys
	keyReloadUnseen = 5 * time.Second  // at most this often when a token names an unknown key
	clockLeeway     = 30 * time.Second // for clocks of replicas that disagree a little
	maxVerified     = 10000
)

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

func (t *tokens) signer(ctx context.Context) (*signingKey, error) {
	t.mu.RLock()
	stale := time.Since(t.loaded) > keyReload
	t.mu.RUnlock()
	if stale {
		if err := t.reload(ctx); err != nil {
			return nil, err
		}
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
func (t *tokens) issue(ctx context.Context, sub string, scope Scope, expiry time.Time) (string, error) {
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
	}, Access: scope.claims()}
	return jwt.Signed(signer).Claims(c).Serialize()
}

var errInvalidToken = errors.New("invalid token")

// verify checks a token's signature, issuer, audience and times, and returns what it grants.
func (t *tokens) verify(ctx context.Context, raw string) (*verifiedToken, error) {
	t.mu.RLock()
	v := t.verified[raw]
	t.mu.RUnlock()
	if v != nil {
		if time.Now().After(v.expiry.Add(clockLeeway)) {
			return nil, fmt.Errorf("%w: expired", errInvalidToken)
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
	v = &verifiedToken{sub: c.Subject, expiry: c.Expiry.Time(), scope: Scope{Repos: map[string]Actions{}}}
	for _, a := range c.Access {
		switch {
		case a.Type == "repository":
			acts, err := ParseActions(a.Actions...)
			if err != nil && len(a.Actions) > 0 {
				return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
			}
			v.scope.Repos[a.Name] |= acts
		case a.Type == "registry" && a.Name == "catalog":
			v.scope.Catalog = true
		}
	}
	t.mu.Lock()
	if len(t.verified) >= maxVerified {
		now := time.Now()
		for k, old := range t.verified {
			if now.After(old.expiry.Add(clockLeeway)) {
				delete(t.verified, k)
			}
		}
		if len(t.verified) >= maxVerified {
			clear(t.verified)
		}
	}
	t.verified[raw] = v
	t.mu.Unlock()
	return v, nil
}

// key finds the verification key kid, reloading the keys (not too often) when it is unknown:
// another replica or `berth keys rotate` may have made it. Keys older than keyReload are
// reloaded too, so that a replica that only verifies sees a key retired by a rotation.
func (t *tokens) key(ctx context.Context, kid string) (*signingKey, error) {
	t.mu.RLock()
	stale := time.Since(t.loaded) > keyReload
	t.mu.RUnlock()
	if stale {
		if err := t.reload(ctx); err != nil {
			return nil, err
		}
	}
	find := func() (*signingKey, bool) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		for i := range t.keys {
			k := &t.keys[i]
			if k.ID == kid {
				if !k.RetireAfter.IsZero() && time.Now().After(k.RetireAfter) {
					return nil, true
				}
				return k, true
			}
		}
		return nil, time.Since(t.loaded) < keyReloadUnseen
	}
	k, settled := find()
	if k == nil && !settled {
		if err := t.reload(ctx); err != nil {
			return nil, err
		}
		k, _ = find()
	}
	if k == nil {
		return nil, fmt.Errorf("%w: unknown or retired signing key", errInvalidToken)
	}
	return k, nil
}
