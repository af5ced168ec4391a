package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// The token endpoint, as Docker's token authentication specification and its OAuth2 variant
// describe it (distribution/docs/spec/auth/token.md, oauth.md):
//
//	GET  /token?service=berth&scope=repository:team/app:pull,push[&offline_token=true]
//	     with Basic credentials, or none for an anonymous token
//	POST /token  grant_type=password (username, password[, access_type=offline]),
//	             grant_type=refresh_token (refresh_token),
//	             grant_type=urn:ietf:params:oauth:grant-type:token-exchange (subject_token: an OIDC token)
//
// The token grants what was asked for and is allowed; what is not allowed is left out, not
// refused (the registry refuses the request itself), as the specification says.

const (
	maxTokenForm  = 64 << 10 // bytes of a POST body
	maxScopes     = 64
	grantExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
)

type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	TokenType    string `json:"token_type,omitempty"`
}

// ServeHTTP serves the token endpoint.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var (
		p       *Principal
		err     error
		offline bool
		scopes  []string
		account string
		oauth   = r.Method == http.MethodPost
	)
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		if svc := q.Get("service"); svc != "" && svc != s.opt.Service {
			writeTokenError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("unknown service %q (this is %q)", svc, s.opt.Service))
			return
		}
		scopes = q["scope"]
		offline = q.Get("offline_token") == "true"
		p, err = s.Authenticate(r)
		if err == nil && p.token != nil {
			err = errors.New("a token cannot be exchanged for another; send credentials")
			err = fmt.Errorf("%w: %v", ErrBadCredentials, err)
		}
		if u, _, ok := r.BasicAuth(); ok {
			account = u
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil {
			writeTokenError(w, http.StatusBadRequest, "invalid_request", "malformed form")
			return
		}
		if svc := r.PostForm.Get("service"); svc != "" && svc != s.opt.Service {
			writeTokenError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("unknown service %q", svc))
			return
		}
		scopes = strings.Fields(r.PostForm.Get("scope"))
		switch gt := r.PostForm.Get("grant_type"); gt {
		case "password":
			account = r.PostForm.Get("username")
			offline = r.PostForm.Get("access_type") == "offline"
			p, err = s.login(r.Context(), account, r.PostForm.Get("password"), s.clientAddr(r))
		case "refresh_token":
			p, account, err = s.refresh(r.Context(), r.PostForm.Get("refresh_token"), s.clientAddr(r))
		case grantExchange:
			account = OIDCUser
			p, err = s.login(r.Context(), OIDCUser, r.PostForm.Get("subject_token"), s.clientAddr(r))
		default:
			writeTokenError(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q is not supported", gt))
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		writeTokenError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET or POST")
		return
	}
	if err != nil {
		var te *ThrottledError
		switch {
		case errors.As(err, &te):
			w.Header().Set("Retry-After", fmt.Sprint(int(te.RetryAfter/time.Second)+1))
			writeTokenError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", te.Error())
		case errors.Is(err, ErrBadCredentials), errors.Is(err, errMalformed), errors.Is(err, errInvalidToken):
			if !oauth {
				w.Header().Set("WWW-Authenticate", `Basic realm="`+s.opt.Service+`"`)
			}
			writeTokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid credentials")
		case errors.Is(err, ErrUnavailable):
			writeTokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error())
		case errors.Is(err, metadata.ErrUnavailable):
			writeTokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the registry's database is unavailable; try again")
		default:
			writeTokenError(w, http.StatusInternalServerError, "server_error", "internal error")
		}
		return
	}
	// Counted after splitting: one parameter may hold several scopes, separated by spaces.
	nscopes := 0
	for _, sc := range scopes {
		nscopes += len(strings.Fields(sc))
	}
	if nscopes > maxScopes {
		writeTokenError(w, http.StatusBadRequest, "invalid_scope", fmt.Sprintf("at most %d scopes", maxScopes))
		return
	}
	scope, err := s.grantScope(r.Context(), p, scopes)
	if err != nil {
		writeTokenError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	now := time.Now()
	expiry := now.Add(s.opt.TokenTTL)
	if !p.expiry.IsZero() && p.expiry.Before(expiry) {
		expiry = p.expiry // an OIDC caller's access ends with its OIDC token, a robot's with the robot
	}
	tok, err := s.tokens.issue(r.Context(), p.Subject, p.account, scope, expiry)
	if errors.Is(err, metadata.ErrUnavailable) {
		writeTokenError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the registry's database is unavailable; try again")
		return
	} else if err != nil {
		writeTokenError(w, http.StatusInternalServerError, "server_error", "internal error")
		return
	}
	resp := tokenResponse{Token: tok, AccessToken: tok, ExpiresIn: int(time.Until(expiry) / time.Second),
		IssuedAt: now.UTC().Format(time.RFC3339)}
	if oauth {
		resp.Token, resp.TokenType = "", "Bearer"
		resp.Scope = strings.Join(scopeStrings(scope), " ")
	}
	if offline && p.isAccount() {
		if resp.RefreshToken, err = s.newRefreshToken(r.Context(), p); err != nil {
			writeTokenError(w, http.StatusInternalServerError, "server_error", "internal error")
			return
		}
	}
	s.audit("token issued", "subject", p.Subject, "account", account, "addr", s.clientAddr(r),
		"scope", strings.Join(scopeStrings(scope), " "), "refresh", resp.RefreshToken != "")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func writeTokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Both shapes: OAuth2 clients read error/error_description, Docker clients the errors list.
	json.NewEncoder(w).Encode(map[string]any{
		"error": code, "error_description": msg,
		"errors": []map[string]string{{"code": strings.ToUpper(code), "message": msg}},
	})
}

// grantScope computes what a token for p asking for scopes grants: the requested actions p may
// do. Pull on a cached repository comes with fetch when p may make berth ask the upstream.
func (s *Service) grantScope(ctx context.Context, p *Principal, scopes []string) (Scope, error) {
	sc := Scope{Repos: map[string]Actions{}}
	for _, raw := range scopes {
		for _, one := range strings.Fields(raw) {
			typ, rest, ok := strings.Cut(one, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok || i < 0 {
				return sc, fmt.Errorf("malformed scope %q", one)
			}
			name, acts := rest[:i], rest[i+1:]
			typ, _, _ = strings.Cut(typ, "(") // repository(plugin) is a repository
			switch typ {
			case "registry":
				if name == "catalog" && !p.IsAnonymous() {
					sc.Catalog = true
				}
				continue
			case "repository":
			default:
				continue // unknown resource types get nothing
			}
			if !oci.ValidName(name) {
				return sc, fmt.Errorf("scope %q: invalid repository name", one)
			}
			want, err := ParseActions(acts)
			if err != nil {
				continue // an action berth does not know is not granted
			}
			if want.Has(Pull) {
				want |= Fetch
			}
			// Each repository the request may be served from gets its own entry (the registry
			// checks the one it serves from), so that a grant on a cache's repositories never
			// spills onto a local repository of the same name.
			for _, n := range append([]string{name}, s.opt.Candidates(name)...) {
				have, err := s.identity(ctx, p, n)
				if err != nil {
					return sc, err
				}
				if g := want.effective() & have; g != 0 {
					sc.Repos[n] |= g &^ Admin
				}
			}
		}
	}
	return sc, nil
}

func scopeStrings(sc Scope) []string {
	var out []string
	for name, a := range sc.Repos {
		out = append(out, "repository:"+name+":"+a.String())
	}
	if sc.Catalog {
		out = append(out, "registry:catalog:*")
	}
	slices.Sort(out)
	return out
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

const refreshPrefix = "berth_rft_"

func (s *Service) newRefreshToken(ctx context.Context, p *Principal) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := refreshPrefix + base64.RawURLEncoding.EncodeToString(b)
	_, name, _ := strings.Cut(p.Subject, ":")
	return tok, s.opt.Accounts.CreateRefreshToken(ctx, hashToken(tok), name, time.Now().Add(s.opt.RefreshTTL))
}

// refresh authenticates by a refresh token; a wrong one counts as a guess from its address.
func (s *Service) refresh(ctx context.Context, tok, addr string) (*Principal, string, error) {
	res, wait, err := s.guard.reserve(ctx, "", addr)
	if err != nil {
		return nil, "", err
	}
	if wait > 0 {
		s.audit("login throttled", "addr", addr, "reason", "refresh token")
		return nil, "", &ThrottledError{RetryAfter: wait}
	}
	name, err := s.opt.Accounts.RefreshToken(ctx, hashToken(tok))
	if err == nil {
		var a *metadata.Account
		if a, err = s.opt.Accounts.Account(ctx, name); err == nil {
			if !a.Expires.IsZero() && time.Now().After(a.Expires) {
				err = metadata.ErrNotFound
			} else {
				res.refund(ctx)
				s.counts.logins.Add(1)
				return accountPrincipal(a), name, nil
			}
		}
	}
	if errors.Is(err, metadata.ErrNotFound) {
		s.audit("login failed", "addr", addr, "reason", "unknown or expired refresh token")
		return nil, "", ErrBadCredentials
	}
	res.refund(ctx)
	return nil, "", err
}
