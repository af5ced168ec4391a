package oidc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// MaxTokenSize caps the raw token Verify accepts. Real CI tokens are 1 to 3 KiB.
const MaxTokenSize = 16 << 10

// Defaults of Options.
const (
	DefaultLeeway     = time.Minute
	DefaultRetryAfter = 10 * time.Second
)

const (
	// discoveryTimeout bounds one discovery request, whatever the client.
	discoveryTimeout = 30 * time.Second
	// clientTimeout is set on clients that have none, and on the default client.
	clientTimeout = 15 * time.Second
	// maxResponseSize caps discovery documents and key sets read from an issuer.
	maxResponseSize = 1 << 20
)

// allowedAlgs are the signature algorithms a token may use. Never none, never HS*: a shared
// secret cannot come from a public key set, and "HS256 keyed with the public key" is the
// classic confusion attack.
var allowedAlgs = []string{gooidc.RS256, gooidc.ES256}

// Errors of Verify wrap one of these. The message of an error Verify returns is safe to show
// to the client: it never contains the token or its claim values, nor a trust's patterns.
var (
	// ErrUntrusted: no trust names the token's issuer.
	ErrUntrusted = errors.New("oidc: token issuer is not trusted")
	// ErrInvalid: the token is malformed, its signature does not verify, it has expired or is
	// not valid yet, or its audience is not accepted.
	ErrInvalid = errors.New("oidc: invalid token")
	// ErrConditions: the token is valid but no trust's conditions accept its claims.
	ErrConditions = errors.New("oidc: token does not meet the trust conditions")
	// ErrUnavailable: the issuer's discovery document or keys cannot be fetched (or the
	// discovery document names another issuer), so the token cannot be checked now.
	ErrUnavailable = errors.New("oidc: token issuer unavailable")
)

// Error is the error Verify returns. Error() is the client-safe message; Unwrap gives the
// sentinel (ErrUntrusted, ErrInvalid, ErrConditions, ErrUnavailable) and the underlying cause,
// which may hold details meant for the server log only (see Detail).
type Error struct {
	Kind  error  // one of the sentinels
	Msg   string // safe for the client
	Cause error  // may be nil; for the log
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the sentinel and, if there is one, the cause.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

// Detail is the message with its cause, for the server log. It may name the token's issuer
// or a server error message, never the token itself.
func (e *Error) Detail() string {
	if e.Cause == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Cause.Error()
}

func fail(kind error, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: kind.Error() + ": " + fmt.Sprintf(format, args...), Cause: cause}
}

// Identity is who a verified token speaks for and what it may do.
type Identity struct {
	Trust   string         // the name of the trust that accepted the token
	Subject string         // the token's sub
	Claims  map[string]any // all claims; numbers are json.Number
	Grants  []Grant        // the trust's grants (a copy)
	Expiry  time.Time      // the OIDC token's exp (the registry caps its own tokens to it)
}

// Name is the identity's principal name, "oidc:<trust>:<sub>".
func (id *Identity) Name() string { return "oidc:" + id.Trust + ":" + id.Subject }

// Options tune a Federation; the zero value gives the defaults.
type Options struct {
	// Now is the clock for exp and nbf and for retrying discovery; default time.Now.
	Now func() time.Time
	// Leeway is the clock skew tolerated on exp and nbf; default DefaultLeeway.
	Leeway time.Duration
	// RetryAfter is how long a failed discovery is remembered: tokens arriving meanwhile
	// fail at once, and the first one after it tries again. Default DefaultRetryAfter.
	RetryAfter time.Duration
}

// Federation verifies OIDC tokens against a set of trusts. It is safe for concurrent use.
type Federation struct {
	trusts  []Trust
	issuers map[string]*issuerState
	client  *http.Client
	now     func() time.Time
	leeway  time.Duration
	retry   time.Duration
}

// issuerState is what the federation knows about one issuer: its trusts, in configuration
// order, and once discovered, a verifier whose key set is cached and refreshed by go-oidc.
type issuerState struct {
	url    string
	trusts []*Trust

	mu          sync.Mutex
	verifier    *gooidc.IDTokenVerifier
	discovering chan struct{} // closed when the discovery in flight ends; nil if none
	lastErr     error         // the last discovery failure
	retryAt     time.Time     // no new discovery before this, after a failure
}

// New builds a federation; it contacts no issuer until a token arrives (discovery is lazy and
// retried, so a down issuer does not stop berth from starting). client nil means a default
// client with timeouts.
func New(trusts []Trust, client *http.Client) (*Federation, error) {
	return NewWithOptions(trusts, client, Options{})
}

// NewWithOptions is New with options.
func NewWithOptions(trusts []Trust, client *http.Client, opts Options) (*Federation, error) {
	f := &Federation{
		issuers: map[string]*issuerState{},
		client:  limitClient(client),
		now:     opts.Now,
		leeway:  opts.Leeway,
		retry:   opts.RetryAfter,
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.leeway <= 0 {
		f.leeway = DefaultLeeway
	}
	if f.retry <= 0 {
		f.retry = DefaultRetryAfter
	}
	names := map[string]bool{}
	f.trusts = make([]Trust, len(trusts))
	for i, t := range trusts {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, fmt.Errorf("oidc: trust %q is defined twice", t.Name)
		}
		names[t.Name] = true
		t.Issuer = t.issuer()
		t.Conditions = maps.Clone(t.Conditions)
		t.Grants = cloneGrants(t.Grants)
		f.trusts[i] = t
	}
	for i := range f.trusts {
		t := &f.trusts[i]
		st := f.issuers[t.Issuer]
		if st == nil {
			st = &issuerState{url: t.Issuer}
			f.issuers[t.Issuer] = st
		}
		st.trusts = append(st.trusts, t)
	}
	return f, nil
}

// Verify checks raw against the trusts of the issuer the token names: the unverified "iss" is
// read only to pick them; then go-oidc checks the signature against the issuer's JWKS (found
// through its discovery document, cached, and refetched when an unknown kid appears), the
// algorithm (RS256 or ES256) and the issuer; Verify checks expiry and not-before (with a small
// leeway), the subject, and then, trust by trust in configuration order, the audience and
// every condition. The first trust that accepts the token gives the identity.
func (f *Federation) Verify(ctx context.Context, raw string) (*Identity, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fail(ErrInvalid, nil, "empty token")
	}
	if len(raw) > MaxTokenSize {
		return nil, fail(ErrInvalid, nil, "token larger than %d bytes", MaxTokenSize)
	}
	iss, err := peekIssuer(raw)
	if err != nil {
		return nil, fail(ErrInvalid, err, "not a JWT signed with RS256 or ES256")
	}
	st := f.issuers[iss]
	if st == nil {
		return nil, &Error{Kind: ErrUntrusted, Msg: ErrUntrusted.Error(), Cause: fmt.Errorf("issuer %q", iss)}
	}

	verifier, err := st.getVerifier(ctx, f)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fail(ErrUnavailable, ctx.Err(), "request ended while waiting for the issuer")
		}
		return nil, fail(ErrUnavailable, err, "cannot read the issuer's configuration")
	}
	note := &fetchNote{}
	tok, err := verifier.Verify(context.WithValue(ctx, fetchNoteKey{}, note), raw)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, fail(ErrUnavailable, ctx.Err(), "request ended while waiting for the issuer")
		case note.err != nil:
			return nil, fail(ErrUnavailable, note.err, "cannot fetch the issuer's keys")
		default:
			return nil, fail(ErrInvalid, err, "signature or issuer does not verify")
		}
	}

	claims, err := decodeClaims(tok)
	if err != nil {
		return nil, fail(ErrInvalid, err, "claims are not a JSON object")
	}
	exp, err := f.checkTimes(claims)
	if err != nil {
		return nil, err
	}
	if tok.Subject == "" {
		return nil, fail(ErrInvalid, nil, "token has no subject (sub)")
	}
	if _, ok := claims["sub"].(string); !ok {
		return nil, fail(ErrInvalid, nil, "token subject (sub) is not a string")
	}

	var refusals []string
	audienceOK := false
	for _, t := range st.trusts {
		if !slices.Contains(tok.Audience, t.Audience) {
			continue
		}
		audienceOK = true
		if failed := unmet(t.Conditions, claims); len(failed) > 0 {
			refusals = append(refusals, fmt.Sprintf("trust %q: %s", t.Name, strings.Join(failed, ", ")))
			continue
		}
		return &Identity{
			Trust:   t.Name,
			Subject: tok.Subject,
			Claims:  claims,
			Grants:  cloneGrants(t.Grants),
			Expiry:  exp,
		}, nil
	}
	if !audienceOK {
		return nil, fail(ErrInvalid, fmt.Errorf("audience %q", tok.Audience), "audience not accepted")
	}
	return nil, fail(ErrConditions, nil, "%s", strings.Join(refusals, "; "))
}

// peekIssuer reads the "iss" claim of a compact JWS without verifying it, only to choose the
// trusts to verify it against. Algorithms other than RS256 and ES256 are refused here already.
func peekIssuer(raw string) (string, error) {
	algs := make([]jose.SignatureAlgorithm, len(allowedAlgs))
	for i, a := range allowedAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return "", err
	}
	var peek struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &peek); err != nil {
		return "", fmt.Errorf("payload: %w", err)
	}
	if peek.Iss == "" {
		return "", errors.New("no issuer (iss)")
	}
	return peek.Iss, nil
}

// decodeClaims decodes the verified payload, keeping numbers as json.Number so that they keep
// their JSON text (and large ids their precision).
func decodeClaims(tok *gooidc.IDToken) (map[string]any, error) {
	var raw json.RawMessage
	if err := tok.Claims(&raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	if claims == nil {
		return nil, errors.New("null claims")
	}
	return claims, nil
}

// checkTimes requires exp and checks it and nbf (if present) against the clock, with leeway.
func (f *Federation) checkTimes(claims map[string]any) (time.Time, error) {
	now := f.now()
	exp, ok, err := numericDate(claims, "exp")
	if err != nil || !ok {
		return time.Time{}, fail(ErrInvalid, err, "token has no valid expiry (exp)")
	}
	if !now.Before(exp.Add(f.leeway)) {
		return time.Time{}, fail(ErrInvalid, nil, "token expired")
	}
	nbf, ok, err := numericDate(claims, "nbf")
	if err != nil {
		return time.Time{}, fail(ErrInvalid, err, "token has an invalid not-before (nbf)")
	}
	if ok && now.Add(f.leeway).Before(nbf) {
		return time.Time{}, fail(ErrInvalid, nil, "token not valid yet")
	}
	return exp, nil
}

// numericDate reads a NumericDate claim (seconds since the epoch, possibly fractional).
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return time.Time{}, false, fmt.Errorf("%s is not a number", name)
	}
	if i, err := n.Int64(); err == nil {
		return time.Unix(i, 0), true, nil
	}
	fl, err := n.Float64()
	if err != nil || !(fl >= 0 && fl < 1<<40) {
		return time.Time{}, false, fmt.Errorf("%s is out of range", name)
	}
	return time.Unix(int64(fl), 0), true, nil
}

// unmet returns, in claim name order, a client-safe description of each condition the claims
// do not meet. String claims are matched as they are; booleans and numbers by their JSON
// text; anything else (missing, null, arrays, objects) fails.
func unmet(conditions map[string]string, claims map[string]any) []string {
	var failed []string
	for _, name := range slices.Sorted(maps.Keys(conditions)) {
		v, ok := claims[name]
		if !ok {
			failed = append(failed, fmt.Sprintf("claim %q is missing", name))
			continue
		}
		var text string
		switch v := v.(type) {
		case string:
			text = v
		case json.Number:
			text = v.String()
		case bool:
			text = fmt.Sprint(v)
		default:
			failed = append(failed, fmt.Sprintf("claim %q is not a string", name))
			continue
		}
		if !match(conditions[name], text) {
			failed = append(failed, fmt.Sprintf("claim %q does not match", name))
		}
	}
	return failed
}

// getVerifier returns the issuer's verifier, discovering the issuer if needed. One discovery
// runs at a time per issuer, in the background so that a caller giving up does not cancel it
// for the others; after a failure, tokens get the same error until f.retry has passed.
func (st *issuerState) getVerifier(ctx context.Context, f *Federation) (*gooidc.IDTokenVerifier, error) {
	st.mu.Lock()
	if st.verifier != nil {
		v := st.verifier
		st.mu.Unlock()
		return v, nil
	}
	if st.discovering == nil {
		if st.lastErr != nil && f.now().Before(st.retryAt) {
			err := st.lastErr
			st.mu.Unlock()
			return nil, err
		}
		done := make(chan struct{})
		st.discovering = done
		go func() {
			v, err := discover(st.url, f.client)
			st.mu.Lock()
			defer st.mu.Unlock()
			st.verifier, st.lastErr = v, err
			if err != nil {
				st.retryAt = f.now().Add(f.retry)
			}
			st.discovering = nil
			close(done)
		}()
	}
	done := st.discovering
	st.mu.Unlock()

	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-done:
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.verifier != nil {
		return st.verifier, nil
	}
	return nil, st.lastErr
}

// discover fetches the issuer's discovery document (which must name the same issuer) and
// builds a verifier on its key set.
func discover(issuer string, client *http.Client) (*gooidc.IDTokenVerifier, error) {
	ctx, cancel := context.WithTimeout(gooidc.ClientContext(context.Background(), client), discoveryTimeout)
	defer cancel()
	provider, err := gooidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", issuer, err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", issuer, err)
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("discovery of %s: no jwks_uri", issuer)
	}
	if err := validateIssuerURL(meta.JWKSURI); err != nil {
		return nil, fmt.Errorf("discovery of %s: jwks_uri: %w", issuer, err)
	}
	remote := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), client), meta.JWKSURI)
	return gooidc.NewVerifier(issuer, keySet{remote}, &gooidc.Config{
		// The audience and the token's lifetime are checked by Verify: several trusts with
		// different audiences may share an issuer, and the clock is the federation's.
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SupportedSigningAlgs: allowedAlgs,
	}), nil
}

// keySet wraps go-oidc's RemoteKeySet to tell a failure to fetch the keys (the issuer is
// unavailable) from a signature that does not verify (the token is invalid): go-oidc wraps
// the first and not the second, and the verifier then flattens both into text.
type keySet struct{ remote *gooidc.RemoteKeySet }

type fetchNoteKey struct{}

type fetchNote struct{ err error }

func (k keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if err != nil && errors.Unwrap(err) != nil {
		if n, ok := ctx.Value(fetchNoteKey{}).(*fetchNote); ok {
			n.err = err
		}
	}
	return payload, err
}

// limitClient returns a copy of client (or a default client) with a timeout (if it has none),
// a redirect policy that refuses downgrades (if it has none), and a cap on the size of
// response bodies.
func limitClient(client *http.Client) *http.Client {
	var c http.Client
	if client != nil {
		c = *client
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.ResponseHeaderTimeout = clientTimeout
		tr.MaxIdleConnsPerHost = 4
		c.Transport = tr
	}
	if c.Timeout == 0 {
		c.Timeout = clientTimeout
	}
	if c.CheckRedirect == nil {
		c.CheckRedirect = noDowngrade
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = limitTransport{base}
	return &c
}

// noDowngrade follows at most 5 redirects, and only to https (or http on loopback): an issuer
// reached over https must not be redirected to where its keys could be tampered with.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && loopback(req.URL.Hostname())) {
		return fmt.Errorf("redirect to %s refused: not https", req.URL.Redacted())
	}
	return nil
}

type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, maxResponseSize)
	return resp, nil
}

func cloneGrants(gs []Grant) []Grant {
	out := make([]Grant, len(gs))
	for i, g := range gs {
		out[i] = Grant{Repositories: g.Repositories, Actions: slices.Clone(g.Actions)}
	}
	return out
}
