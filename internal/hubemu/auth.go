package hubemu

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Token auth, per the registry token authentication spec
// (https://distribution.github.io/distribution/spec/auth/token/):
//
//  1. A request without a valid token gets 401 with WWW-Authenticate: Bearer realm="<AuthURL>",
//     service="registry.docker.io", and for a repository scope="repository:NAME:ACTIONS".
//  2. The client asks the realm: GET /token?service=...&scope=... (scope may repeat), anonymously
//     or with Basic credentials. The answer is {"token","access_token","expires_in","issued_at"}.
//  3. The client retries with Authorization: Bearer <token>.
//
// Tokens are opaque random strings remembered with their grant. The token service grants the
// subset of the requested access the caller may have (spec: "Requesting a Token"): pull, and only
// on repositories that exist, so that a token for a missing repository carries no access and the
// registry answers 401, as Docker Hub does for a repository that does not exist. Push is never
// granted: the front is read-only, content is seeded with the Push helpers.

// grant is what a token allows, and for whom.
type grant struct {
	user    string          // "" for anonymous
	pull    map[string]bool // repositories it may pull
	expires time.Time
}

type tokenStore struct {
	mu sync.Mutex
	m  map[string]*grant
}

func (t *tokenStore) init() { t.m = map[string]*grant{} }

func (t *tokenStore) add(g *grant) string {
	tok := randomHex(24)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > 1024 { // forget expired grants now and then
		now := time.Now()
		for k, v := range t.m {
			if now.After(v.expires) {
				delete(t.m, k)
			}
		}
	}
	t.m[tok] = g
	return tok
}

// lookup returns the grant of a bearer token and whether it has expired; nil if unknown.
func (t *tokenStore) lookup(r *http.Request) (*grant, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	g := t.m[strings.TrimSpace(tok)]
	t.mu.Unlock()
	if g == nil {
		return nil, false
	}
	return g, !time.Now().Before(g.expires)
}

// serveToken is the token service: GET /token?service=registry.docker.io&scope=repository:NAME:pull.
func (h *Hub) serveToken(w http.ResponseWriter, r *http.Request) {
	h.counts.add(func(c *Counts) { c.Token++ })
	scopes := r.URL.Query()["scope"]
	repo := ""
	if len(scopes) > 0 {
		_, repo, _ = parseScope(scopes[0])
	}
	if _, done := h.applyFault(w, r, Tokens, repo, requestStage, nil); done {
		return
	}
	if f, _ := h.applyFault(w, r, Tokens, repo, bodyStage, nil); f != nil {
		w = &bodyWriter{ResponseWriter: w, h: h, ctx: r.Context(), fault: f}
	}
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		// The spec's OAuth2 variant (POST /token) is not emulated; clients fall back to GET.
		w.Header().Set("Allow", http.MethodGet)
		tokenError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if s := r.URL.Query().Get("service"); s != "" && s != Service {
		tokenError(w, http.StatusBadRequest, fmt.Sprintf("unknown service %q", s))
		return
	}
	g := &grant{pull: map[string]bool{}}
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		want, known := h.opts.Users[user]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			h.counts.add(func(c *Counts) { c.Unauthorized++ })
			tokenError(w, http.StatusUnauthorized, "incorrect username or password")
			return
		}
		g.user = user
	}
	for _, s := range scopes {
		for _, one := range strings.Fields(s) { // a scope parameter may list several, space-separated
			typ, name, actions := parseScope(one)
			if typ == "repository" && h.exists(name) && (hasAction(actions, "pull") || hasAction(actions, "*")) {
				g.pull[name] = true
			}
		}
	}
	now := time.Now()
	g.expires = now.Add(h.opts.TokenTTL)
	tok := h.tokens.add(g)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(math.Ceil(h.opts.TokenTTL.Seconds())),
		"issued_at":    now.UTC().Format(time.RFC3339Nano),
	})
}

// parseScope splits "repository:NAME:ACTIONS" (the name cannot hold ':', the type may:
// "repository(plugin)").
func parseScope(s string) (typ, name, actions string) {
	i, j := strings.Index(s, ":"), strings.LastIndex(s, ":")
	if i < 0 || i == j {
		return "", "", ""
	}
	return s[:i], s[i+1 : j], s[j+1:]
}

func hasAction(actions, a string) bool {
	for _, x := range strings.Split(actions, ",") {
		if x == a {
			return true
		}
	}
	return false
}

// tokenError answers as Docker Hub's token service does: {"details": "..."}.
func tokenError(w http.ResponseWriter, status int, details string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"details": details})
}

// authorize checks a registry request's bearer token against the scope it needs (pull on rt.repo,
// or any valid token for /v2/ itself). On failure it writes the 401 challenge and returns nil.
func (h *Hub) authorize(w http.ResponseWriter, r *http.Request, rt route) *grant {
	g, expired := h.tokens.lookup(r)
	switch {
	case g == nil:
		h.challenge(w, rt, "")
		return nil
	case expired:
		h.challenge(w, rt, "invalid_token")
		return nil
	case rt.repo == "" && rt.kind != kindCatalog: // /v2/ itself, or a path that names no repository
		return g
	case rt.write || !g.pull[rt.repo]:
		h.challenge(w, rt, "insufficient_scope")
		return nil
	}
	return g
}

// challenge answers 401 with the WWW-Authenticate header of the token spec ("How to
// authenticate") and Docker Hub's UNAUTHORIZED error body.
func (h *Hub) challenge(w http.ResponseWriter, rt route, errCode string) {
	h.counts.add(func(c *Counts) { c.Unauthorized++ })
	v := fmt.Sprintf(`Bearer realm=%q,service=%q`, h.AuthURL(), Service)
	var detail any
	switch {
	case rt.kind == kindCatalog:
		v += `,scope="registry:catalog:*"`
	case rt.repo != "":
		actions := "pull"
		if rt.write {
			actions = "pull,push"
		}
		v += fmt.Sprintf(`,scope="repository:%s:%s"`, rt.repo, actions)
		detail = []map[string]string{{"Type": "repository", "Class": "", "Name": rt.repo, "Action": actions}}
	}
	if errCode != "" {
		v += fmt.Sprintf(`,error=%q`, errCode)
	}
	w.Header().Set("WWW-Authenticate", v)
	writeErrors(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required", detail)
}

// regError is one error of a registry error document.
type regError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeErrors writes a registry error document {"errors":[{"code","message"[,"detail"]}]}.
func writeErrors(w http.ResponseWriter, status int, code, message string, detail any) {
	body, _ := json.Marshal(map[string][]regError{"errors": {{code, message, detail}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func (h *Hub) exists(repo string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.repos[repo]
}
