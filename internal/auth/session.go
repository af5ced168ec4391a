package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// Sessions of berth's own pages (the web console): a user logs in with a password through the
// same checks, throttles and audit lines as Basic credentials, and the page keeps, in a signed
// cookie, the account's name and a fingerprint of its state. Every request checks the
// fingerprint against the account as it is now, so a session ends with its account: deleted,
// expired, or given a new password (or recreated under the same name: a new ID).

// sessionKeySetting is where the key that signs console sessions lives in the metadata store,
// so that every replica verifies every other's cookies.
const sessionKeySetting = "console_session_key"

// sessionKeyCache holds the session key once read.
type sessionKeyCache struct {
	mu  sync.Mutex
	key []byte
}

// Login checks a user's name and password for a login form: the same check, throttles and audit
// as Basic credentials from the request's client address. Only users log in this way; a robot's
// or an OIDC token's correct secret gets ErrBadCredentials (a form is for people). A
// *ThrottledError while logins of the name or address are paused.
func (s *Service) Login(r *http.Request, user, password string) (*Principal, error) {
	if user == OIDCUser {
		return nil, ErrBadCredentials
	}
	p, err := s.login(r.Context(), user, password, s.clientAddr(r))
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(p.Subject, "user:") {
		return nil, fmt.Errorf("%w: only users log in here (robots use the registry API)", ErrBadCredentials)
	}
	return p, nil
}

// Fingerprint is a short digest of an account's state (its ID, kind and stored secret hash): it
// changes when the account is deleted and recreated or its password changes. "" for an account
// that is gone or expired.
func (s *Service) Fingerprint(ctx context.Context, name string) (string, error) {
	a, err := s.account(ctx, name)
	if err != nil || a == nil || !a.live(time.Now()) {
		return "", err
	}
	return fingerprint(a), nil
}

func fingerprint(a *accountState) string {
	sum := sha256.Sum256([]byte("berth session\x00" + a.ID + "\x00" + a.subject + "\x00" + a.secret))
	return hex.EncodeToString(sum[:16])
}

// SessionPrincipal returns the caller of a session of user name whose account had fingerprint fp
// at login, or nil when the account is no longer that one (gone, expired, new password, not a
// user). Its decisions follow the account's grants as they are now.
func (s *Service) SessionPrincipal(ctx context.Context, name, fp string) (*Principal, error) {
	a, err := s.account(ctx, name)
	if err != nil || a == nil {
		return nil, err
	}
	if !a.live(time.Now()) || a.subject != "user:"+name || fp == "" || fingerprint(a) != fp {
		return nil, nil
	}
	return &Principal{Subject: a.subject, account: a.ID, expiry: a.Expires}, nil
}

// SessionKey returns the 32-byte key that signs console sessions, the same for every process
// sharing the store: created on first use (the first process to store it wins), sealed under the
// encryption key when one is configured.
func (s *Service) SessionKey(ctx context.Context) ([]byte, error) {
	s.sessionKey.mu.Lock()
	defer s.sessionKey.mu.Unlock()
	if s.sessionKey.key != nil {
		return s.sessionKey.key, nil
	}
	aad := []byte("berth " + sessionKeySetting)
	b, err := s.opt.Accounts.Setting(ctx, sessionKeySetting)
	if errors.Is(err, metadata.ErrNotFound) {
		key := make([]byte, 32)
		rand.Read(key)
		stored := append([]byte("plain:"), key...)
		if s.opt.Sealer != nil {
			sealed, err := s.opt.Sealer.Seal(key, aad)
			if err != nil {
				return nil, err
			}
			stored = append([]byte("sealed:"), sealed...)
		}
		if err := s.opt.Accounts.CreateSetting(ctx, sessionKeySetting, stored); err != nil && !errors.Is(err, metadata.ErrExists) {
			return nil, err
		}
		b, err = s.opt.Accounts.Setting(ctx, sessionKeySetting) // whoever created it first wins
	}
	if err != nil {
		return nil, err
	}
	var key []byte
	switch {
	case len(b) == len("plain:")+32 && string(b[:6]) == "plain:":
		key = b[6:]
	case strings.HasPrefix(string(b), "sealed:"):
		if s.opt.Sealer == nil {
			return nil, fmt.Errorf("the console session key is sealed with an encryption key, and none is configured (encryption.key_file)")
		}
		if key, err = s.opt.Sealer.Open(b[len("sealed:"):], aad); err != nil {
			return nil, fmt.Errorf("console session key: %w", err)
		}
	default:
		return nil, fmt.Errorf("console session key: unknown format")
	}
	s.sessionKey.key = key
	return key, nil
}
