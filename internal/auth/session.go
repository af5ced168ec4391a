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

var sessionKeyAAD = []byte("berth " + sessionKeySetting)

// openSessionKey reads the stored session key; resealed reports that it is stored in the clear or
// under a key that is being rotated out, while sealer is there to seal it now.
func openSessionKey(b []byte, sealer Sealer) (key []byte, resealed bool, err error) {
	switch {
	case len(b) == len("plain:")+32 && string(b[:6]) == "plain:":
		return b[6:], sealer != nil, nil
	case strings.HasPrefix(string(b), "sealed:"):
		if sealer == nil {
			return nil, false, fmt.Errorf("the console session key is sealed with an encryption key, and none is configured (encryption.key_file)")
		}
		sealed := b[len("sealed:"):]
		if key, err = sealer.Open(sealed, sessionKeyAAD); err != nil {
			return nil, false, fmt.Errorf("console session key: %w", err)
		}
		c, ok := sealer.(interface{ Current(sealed []byte) bool })
		return key, ok && !c.Current(sealed), nil
	}
	return nil, false, fmt.Errorf("console session key: unknown format")
}

func sealSessionKey(key []byte, sealer Sealer) ([]byte, error) {
	if sealer == nil {
		return append([]byte("plain:"), key...), nil
	}
	sealed, err := sealer.Seal(key, sessionKeyAAD)
	if err != nil {
		return nil, err
	}
	return append([]byte("sealed:"), sealed...), nil
}

// resealSessionKey seals the stored session key, if there is one, under sealer's current key.
func resealSessionKey(ctx context.Context, acc metadata.Accounts, sealer Sealer) error {
	b, err := acc.Setting(ctx, sessionKeySetting)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	key, resealed, err := openSessionKey(b, sealer)
	if err != nil || !resealed {
		return err
	}
	enc, err := sealSessionKey(key, sealer)
	if err != nil {
		return err
	}
	return acc.SetSetting(ctx, sessionKeySetting, enc)
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
	b, err := s.opt.Accounts.Setting(ctx, sessionKeySetting)
	if errors.Is(err, metadata.ErrNotFound) {
		key := make([]byte, 32)
		rand.Read(key)
		stored, serr := sealSessionKey(key, s.opt.Sealer)
		if serr != nil {
			return nil, serr
		}
		if cerr := s.opt.Accounts.CreateSetting(ctx, sessionKeySetting, stored); cerr != nil && !errors.Is(cerr, metadata.ErrExists) {
			return nil, cerr
		}
		b, err = s.opt.Accounts.Setting(ctx, sessionKeySetting) // whoever created it first wins
	}
	if err != nil {
		return nil, err
	}
	key, resealed, err := openSessionKey(b, s.opt.Sealer)
	if err != nil {
		return nil, err
	}
	if resealed {
		// Stored before encryption was turned on, or under a key being rotated out: sealed now
		// under the current one (as the token signing keys are), so that the old key can go.
		if enc, err := sealSessionKey(key, s.opt.Sealer); err == nil {
			s.opt.Accounts.SetSetting(ctx, sessionKeySetting, enc)
		}
	}
	s.sessionKey.key = key
	return key, nil
}
