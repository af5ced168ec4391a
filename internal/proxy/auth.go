package proxy

// The Docker token flow (distribution.github.io/distribution/spec/auth/token/): challenges,
// credentials and bearer tokens cached per scope.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// authChallenge is one challenge of a WWW-Authenticate header: a scheme ("bearer", "basic"; lower
// case) and its parameters (realm, service, scope, error; lower-case names).
type authChallenge struct {
	scheme string
	params map[string]string
}

// authorize returns the Authorization header for a request that needs scope under the challenge ch
// ("" when the registry has not asked for anything), and whether it is a token from the cache.
func (u *Upstream) authorize(ctx context.Context, ch authChallenge, scope string) (authz string, cached bool, err error) {
	switch ch.scheme {
	case "":
		return "", false, nil
	case "basic":
		if !u.hasCredentials() {
			return "", false, &Error{Kind: KindAuth, Status: http.StatusUnauthorized,
				Message: "the registry asks for Basic credentials and none are configured"}
		}
		return "Basic " + u.basic(), false, nil
	case "bearer":
		tok, cached, err := u.token(ctx, ch, scope)
		if err != nil {
			return "", false, err
		}
		return "Bearer " + tok, cached, nil
	}
	return "", false, nil
}

func (u *Upstream) hasCredentials() bool { return u.cfg.Username != "" || u.cfg.Password != "" }

// basic is the base64 of the Basic credentials; a password without a username is a token, sent as
// the password of user "<token>" as Docker clients do.
func (u *Upstream) basic() string {
	user := u.cfg.Username
	if user == "" {
		user = "<token>"
	}
	r := http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, u.cfg.Password)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// token returns a bearer token for scope: from the cache while it is valid, else from the one token
// request in flight for scope, started here if there is none. The request belongs to no caller, so
// one caller leaving does not fail the others.
func (u *Upstream) token(ctx context.Context, ch authChallenge, scope string) (string, bool, error) {
	u.mu.Lock()
	if t, ok := u.tokens[scope]; ok && u.st.now().Before(t.expires) {
		u.mu.Unlock()
		return t.value, true, nil
	}
	c, ok := u.st.inflight[scope]
	if !ok {
		c = &tokenCall{done: make(chan struct{})}
		u.st.inflight[scope] = c
		go func() {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), u.cfg.DialTimeout+u.cfg.HeaderTimeout+u.cfg.StallTimeout)
			defer cancel()
			c.tok, c.err = u.fetchToken(fctx, ch, scope)
			u.mu.Lock()
			delete(u.st.inflight, scope)
			if c.err == nil {
				u.tokens[scope] = c.tok
				u.pruneTokens()
			}
			u.mu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	u.mu.Unlock()
	select {
	case <-c.done:
		return c.tok.value, false, c.err
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
}

// minTokenPrune is the size of the token cache below which expired tokens are not looked for.
const minTokenPrune = 64

// pruneTokens drops expired tokens once the cache has doubled since it last did. Tokens are per
// scope, that is per upstream repository: without this, every repository ever pulled through
// berth would keep its token (on Docker Hub about 1 KiB) for as long as berth runs. Amortized,
// it costs O(1) per token fetched. Callers hold u.mu.
func (u *Upstream) pruneTokens() {
	if len(u.tokens) < max(u.st.pruneAt, minTokenPrune) {
		return
	}
	now := u.st.now()
	for scope, t := range u.tokens {
		if !now.Before(t.expires) {
			delete(u.tokens, scope)
		}
	}
	u.st.pruneAt = 2 * len(u.tokens)
}

// tokenResponse is the token endpoint's answer (distribution's token authentication spec).
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// fetchToken asks the challenge's realm for a token for scope: anonymously, or with Basic
// credentials when they are configured. A failure is KindAuth, except a 429, which is
// KindRateLimited (so that a client that cannot be served gets 429 with Retry-After, not an error
// that suggests bad credentials). The token is kept until shortly before expires_in (60 s when absent).
func (u *Upstream) fetchToken(ctx context.Context, ch authChallenge, scope string) (token, error) {
	realm, err := url.Parse(ch.params["realm"])
	if err != nil || (realm.Scheme != "http" && realm.Scheme != "https") || realm.Host == "" {
		return token{}, &Error{Kind: KindAuth, Message: fmt.Sprintf("bad token realm %q", ch.params["realm"])}
	}
	authz := ""
	if u.hasCredentials() {
		if realm.Scheme == "http" && u.st.base.Scheme == "https" {
			return token{}, &Error{Kind: KindAuth, Message: fmt.Sprintf("refusing to send credentials to the plain-http token realm %s", realm.Redacted())}
		}
		authz = "Basic " + u.basic()
	}
	q := realm.Query()
	if s := ch.params["service"]; s != "" {
		q.Set("service", s)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	realm.RawQuery = q.Encode()

	start := u.st.now()
	resp, err := u.do(ctx, http.MethodGet, realm.String(), "application/json", authz, &u.stats.TokenRequests)
	if err != nil {
		return token{}, &Error{Kind: KindAuth, Message: "token endpoint unreachable", Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := u.statusError(resp)
		if e.Kind != KindRateLimited {
			e.Kind = KindAuth
		}
		e.Message = strings.TrimSuffix("token endpoint: "+e.Message, ": ")
		return token{}, e
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return token{}, &Error{Kind: KindAuth, Status: resp.StatusCode, Message: "token endpoint: reading the token", Err: err}
	}
	var tr tokenResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		return token{}, &Error{Kind: KindAuth, Status: resp.StatusCode, Message: "token endpoint: answer is not JSON", Err: err}
	}
	t := token{value: tr.Token}
	if t.value == "" {
		t.value = tr.AccessToken
	}
	if t.value == "" {
		return token{}, &Error{Kind: KindAuth, Status: resp.StatusCode, Message: "token endpoint: answer has no token"}
	}
	ttl := time.Duration(tr.ExpiresIn) * time.Second
	if tr.ExpiresIn <= 0 || tr.ExpiresIn > 1<<31 {
		ttl = 60 * time.Second
	}
	t.expires = start.Add(ttl - min(ttl/10, 10*time.Second))
	return t, nil
}

// pickChallenge returns the Bearer challenge with a realm among WWW-Authenticate values, else the
// Basic one.
func pickChallenge(values []string) (authChallenge, bool) {
	var basic authChallenge
	for _, c := range parseChallenges(values) {
		switch {
		case c.scheme == "bearer" && c.params["realm"] != "":
			return c, true
		case c.scheme == "basic" && basic.scheme == "":
			basic = c
		}
	}
	return basic, basic.scheme != ""
}

// parseChallenges parses WWW-Authenticate values (RFC 9110 §11.6.1): each holds one or more
// challenges, a scheme followed by comma-separated name=value parameters whose values may be
// quoted strings with commas and backslash escapes.
func parseChallenges(values []string) []authChallenge {
	var out []authChallenge
	for _, v := range values {
		p := challengeParser{s: v}
		for {
			p.skip(" \t,")
			scheme := p.token()
			if scheme == "" {
				break
			}
			c := authChallenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
			for {
				p.skip(" \t")
				save := p.i
				name := p.token()
				p.skip(" \t")
				if name == "" || !p.consume('=') {
					p.i = save // the next challenge's scheme, or garbage
					break
				}
				p.skip(" \t")
				c.params[strings.ToLower(name)] = p.value()
				p.skip(" \t")
				if !p.consume(',') {
					break
				}
			}
			out = append(out, c)
			if p.i < len(p.s) && p.s[p.i] != ',' && p.s[p.i] != ' ' && !isTokenChar(p.s[p.i]) {
				break // garbage: keep what was understood
			}
		}
	}
	return out
}

type challengeParser struct {
	s string
	i int
}

func (p *challengeParser) skip(chars string) {
	for p.i < len(p.s) && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *challengeParser) consume(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *challengeParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// value reads a quoted string (unescaping backslashes) or a bare value up to a comma or a space.
func (p *challengeParser) value() string {
	if !p.consume('"') {
		start := p.i
		for p.i < len(p.s) && p.s[p.i] != ',' && p.s[p.i] != ' ' && p.s[p.i] != '\t' {
			p.i++
		}
		return p.s[start:p.i]
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\' && p.i < len(p.s):
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '"':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String() // unterminated: take the rest
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
