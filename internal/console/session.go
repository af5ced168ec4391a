package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Sessions are stateless: a cookie holds the user's name, a fingerprint of the account's state
// (auth.Service.Fingerprint), when the session began and when it was last seen, and a random
// nonce, signed with HMAC-SHA256 under a key every replica reads from the shared store
// (auth.Service.SessionKey). Any replica accepts any session; nothing is written per login.
//
// A session ends:
//   - after IdleTimeout without a request (the cookie's "seen" time is renewed at most once a
//     minute, so an open tab does not rewrite the cookie on every click), or MaxAge after login;
//   - at once when its account is deleted, expires, or gets a new password: the fingerprint no
//     longer matches, checked on every request;
//   - when the user logs out (the cookie is cleared; a copy taken before stays valid until the idle
//     timeout — the price of keeping no session table).
//
// The CSRF token of a session is an HMAC of its nonce: it is the same on every page of the
// session, and no other session's token matches.

const (
	sessionCookie = "berth_session"
	loginCookie   = "berth_login" // the nonce of the login form's CSRF token, before a session exists
	// IdleTimeout ends a session nobody used for this long.
	IdleTimeout = 30 * time.Minute
	// MaxAge ends any session this long after its login.
	MaxAge  = 12 * time.Hour
	renewal = time.Minute
)

type session struct {
	User   string `json:"u"`
	FP     string `json:"f"`
	Issued int64  `json:"i"` // unix seconds
	Seen   int64  `json:"s"`
	Nonce  string `json:"n"`
}

// sign returns the cookie value of payload: base64url(payload) "." base64url(mac).
func sign(key []byte, purpose string, payload []byte) string {
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac(key, purpose, payload))
}

func mac(key []byte, purpose string, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("berth console " + purpose + "\x00"))
	h.Write(payload)
	return h.Sum(nil)
}

// verify returns the payload of a value sign made, or false when it was not made with key and
// purpose.
func verify(key []byte, purpose, value string) ([]byte, bool) {
	p, m, ok := strings.Cut(value, ".")
	if !ok {
		return nil, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	got, err2 := base64.RawURLEncoding.DecodeString(m)
	if err1 != nil || err2 != nil || !hmac.Equal(got, mac(key, purpose, payload)) {
		return nil, false
	}
	return payload, true
}

func nonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// token is the CSRF token for a nonce: of a session, or of the login form's cookie.
func token(key []byte, purpose, n string) string {
	return hex.EncodeToString(mac(key, "csrf "+purpose, []byte(n))[:16])
}

func (c *Console) key(ctx context.Context) ([]byte, error) { return c.opt.Auth.SessionKey(ctx) }

// readSession returns the session of r's cookie if it is signed, not idle too long and not too
// old; its account is checked by the caller.
func (c *Console) readSession(r *http.Request, key []byte) (*session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	payload, ok := verify(key, "session", ck.Value)
	if !ok {
		return nil, false
	}
	var s session
	if json.Unmarshal(payload, &s) != nil || s.User == "" || s.Nonce == "" {
		return nil, false
	}
	now := c.now()
	if now.Sub(time.Unix(s.Seen, 0)) > IdleTimeout || now.Sub(time.Unix(s.Issued, 0)) > MaxAge {
		return nil, false
	}
	return &s, true
}

// writeSession sets the cookie of s.
func (c *Console) writeSession(w http.ResponseWriter, r *http.Request, key []byte, s *session) {
	payload, _ := json.Marshal(s)
	http.SetCookie(w, c.cookie(r, sessionCookie, sign(key, "session", payload), 0))
}

// cookie is a console cookie: HttpOnly, SameSite=Lax (a link from elsewhere arrives logged in;
// a form posted from elsewhere does not carry it), Secure when served over TLS. maxAge < 0
// deletes it; 0 makes it last as long as the browser session.
func (c *Console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: Prefix, MaxAge: maxAge, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}
}
