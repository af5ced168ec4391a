package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth/berth/internal/oci"
)

// The defaults of UpstreamConfig's zero timeouts, and the bounds of what berth reads from an upstream.
const (
	defaultDialTimeout   = 10 * time.Second
	defaultHeaderTimeout = 30 * time.Second
	defaultStallTimeout  = 30 * time.Second

	maxRedirects  = 10
	maxErrorBody  = 64 << 10
	maxTokenBody  = 1 << 20
	maxTagsBody   = 8 << 20
	maxTagPages   = 100
	upstreamAgent = "berth"
)

var _ Source = (*Upstream)(nil)

// clientState is the part of an Upstream that client.go keeps besides the declared fields.
type clientState struct {
	base      *url.URL         // the registry's base URL, without a trailing slash
	now       func() time.Time // time.Now; tests replace it
	challenge authChallenge    // the registry's last auth challenge (under mu); scheme "" until one came
	inflight  map[string]*tokenCall
	pruneAt   int // the size of the token cache at which expired tokens are dropped (under mu)
}

// tokenCall is a token request in flight that every request for the same scope waits for, so that
// N concurrent requests cost one token request.
type tokenCall struct {
	waiters int // under mu (tests read it)
	done    chan struct{}
	tok     token
	err     error
}

// errStalled is the cause with which a body's context is cancelled when no byte came for StallTimeout.
var errStalled = errors.New("upstream body stalled")

// errRedirects is returned by the redirect policy after maxRedirects hops.
var errRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

// NewUpstream returns a client of the registry at cfg.URL, which must be an http or https URL with
// no path beyond "/", no query and no credentials. Zero timeouts take the defaults (10 s dial and TLS
// handshake, 30 s response headers, 30 s body stall).
func NewUpstream(cfg UpstreamConfig, log *slog.Logger) (*Upstream, error) {
	base, err := parseBaseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.DialTimeout < 0 || cfg.HeaderTimeout < 0 || cfg.StallTimeout < 0 {
		return nil, fmt.Errorf("upstream %s: timeouts must not be negative", cfg.URL)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = defaultHeaderTimeout
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = defaultStallTimeout
	}
	if cfg.Name == "" {
		cfg.Name = base.Host
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := cfg.Transport
	if tr == nil {
		dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
		tr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   cfg.DialTimeout,
			ResponseHeaderTimeout: cfg.HeaderTimeout,
			ExpectContinueTimeout: time.Second,
			// Byte-exact bodies and lengths: digests and Content-Length are about what was sent.
			DisableCompression: true,
		}
	}
	return &Upstream{
		cfg:    cfg,
		client: &http.Client{Transport: tr, CheckRedirect: checkRedirect},
		log:    log.With("upstream", cfg.Name),
		tokens: map[string]token{},
		st:     clientState{base: base, now: time.Now, inflight: map[string]*tokenCall{}},
	}, nil
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %v", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("upstream URL %q: scheme must be http or https", s)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("upstream URL %q: no host", s)
	case u.Path != "" && u.Path != "/":
		return nil, fmt.Errorf("upstream URL %q: must have no path (berth adds /v2/)", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("upstream URL %q: must have no query or fragment", s)
	case u.User != nil:
		return nil, fmt.Errorf("upstream URL %q: put credentials in username and password, not the URL", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// checkRedirect follows up to maxRedirects redirects and sends the Authorization header only to the
// scheme and host (with port) of the first request. Go's client itself forwards it to any host with
// the same name or a subdomain, whatever the port or scheme (an http:// object store on the registry's
// host would receive the registry token); object storage must never see the registry's credentials.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return errRedirects
	}
	if first := via[0].URL; req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		req.Header.Del("Authorization")
	}
	return nil
}

// CloseIdleConnections closes the connections kept alive to the upstream (for shutdown and tests).
func (u *Upstream) CloseIdleConnections() { u.client.CloseIdleConnections() }

// Name is the upstream's name (UpstreamConfig.Name, or the URL's host).
func (u *Upstream) Name() string { return u.cfg.Name }

// Quota returns the rate-limit state the upstream reported last.
func (u *Upstream) Quota() Quota {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.quota
}

// Stats returns a copy of the request counters.
func (u *Upstream) Stats() UpstreamStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats
	s.Errors = maps.Clone(u.stats.Errors)
	if s.Errors == nil {
		s.Errors = map[ErrorKind]int64{}
	}
	s.Responses = make(map[string]map[int]int64, len(u.stats.Responses))
	for k, m := range u.stats.Responses {
		s.Responses[k] = maps.Clone(m)
	}
	return s
}

// requestKind names the kind of request counted in counter (a field of u.stats), for Responses.
func (u *Upstream) requestKind(counter *int64) string {
	switch counter {
	case &u.stats.ManifestGets:
		return "manifest_get"
	case &u.stats.ManifestHeads:
		return "manifest_head"
	case &u.stats.BlobGets:
		return "blob_get"
	case &u.stats.BlobHeads:
		return "blob_head"
	case &u.stats.TokenRequests:
		return "token"
	}
	return "tags"
}

// answered counts an answer (status 0: none) to a request of the kind counter counts.
func (u *Upstream) answered(counter *int64, status int) {
	kind := u.requestKind(counter)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stats.Responses == nil {
		u.stats.Responses = map[string]map[int]int64{}
	}
	m := u.stats.Responses[kind]
	if m == nil {
		m = map[int]int64{}
		u.stats.Responses[kind] = m
	}
	m[status]++
}

func (u *Upstream) add(counter *int64, n int64) {
	u.mu.Lock()
	*counter += n
	u.mu.Unlock()
}

// failed counts err by kind when it is an upstream failure (not the caller's cancellation) and
// returns it.
func (u *Upstream) failed(err error) error {
	var e *Error
	if errors.As(err, &e) {
		u.mu.Lock()
		if u.stats.Errors == nil {
			u.stats.Errors = map[ErrorKind]int64{}
		}
		u.stats.Errors[e.Kind]++
		u.mu.Unlock()
		u.log.Debug("upstream failure", "kind", e.Kind, "status", e.Status, "err", err)
	}
	return err
}

// HeadManifest asks the upstream what ref names (HEAD /v2/<repo>/manifests/<ref>), which does not
// count as a pull on Docker Hub. The digest comes from Docker-Content-Digest (a response without
// one for a tag is KindInvalid); Size is -1 when the upstream sent no Content-Length. A failed HEAD
// is never retried as a GET.
func (u *Upstream) HeadManifest(ctx context.Context, repo, ref string) (_ Descriptor, err error) {
	defer func() { err = u.failed(err) }()
	want, err := checkManifestRef(repo, ref)
	if err != nil {
		return Descriptor{}, err
	}
	resp, err := u.send(ctx, http.MethodHead, repo, "/v2/"+repo+"/manifests/"+ref, ManifestAccept, &u.stats.ManifestHeads)
	if err != nil {
		return Descriptor{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, u.statusError(resp)
	}
	d := Descriptor{MediaType: contentMediaType(resp.Header.Get("Content-Type")), Size: resp.ContentLength}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		got, err := oci.ParseDigest(strings.TrimSpace(h))
		if err != nil {
			return Descriptor{}, &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: "bad Docker-Content-Digest: " + h}
		}
		d.Digest = got
	}
	switch {
	case want != "" && d.Digest == "":
		d.Digest = want
	case want != "" && d.Digest != want:
		return Descriptor{}, &Error{Kind: KindInvalid, Status: resp.StatusCode,
			Message: fmt.Sprintf("asked for %s, upstream answered %s", want, d.Digest)}
	case d.Digest == "":
		return Descriptor{}, &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: "manifest HEAD without Docker-Content-Digest"}
	}
	return d, nil
}

// GetManifest fetches a manifest (a pull on Docker Hub). The body is at most oci.MaxManifestSize
// bytes and matches the digest ref names, or the Docker-Content-Digest the upstream sent for a tag;
// otherwise the error is KindInvalid. mt is the Content-Type without parameters, or the
// body's own mediaType when the Content-Type is missing or generic.
func (u *Upstream) GetManifest(ctx context.Context, repo, ref string) (body []byte, mt string, err error) {
	defer func() { err = u.failed(err) }()
	want, err := checkManifestRef(repo, ref)
	if err != nil {
		return nil, "", err
	}
	resp, err := u.send(ctx, http.MethodGet, repo, "/v2/"+repo+"/manifests/"+ref, ManifestAccept, &u.stats.ManifestGets)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", u.statusError(resp)
	}
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, "", &Error{Kind: KindInvalid, Status: resp.StatusCode,
			Message: fmt.Sprintf("manifest of %d bytes is larger than %d", resp.ContentLength, oci.MaxManifestSize)}
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, "", err
	}
	if len(body) > oci.MaxManifestSize {
		return nil, "", &Error{Kind: KindInvalid, Status: resp.StatusCode,
			Message: fmt.Sprintf("manifest is larger than %d bytes", oci.MaxManifestSize)}
	}
	mt = contentMediaType(resp.Header.Get("Content-Type"))
	check := want
	// A signed schema 1 manifest's digest leaves out its signatures: the cache refuses it anyway,
	// with a better message than a digest mismatch.
	if check == "" && mt != oci.MediaTypeDockerSchema1S {
		if h := strings.TrimSpace(resp.Header.Get("Docker-Content-Digest")); h != "" {
			check, _ = oci.ParseDigest(h) // an unusable header is no reason to refuse the manifest
		}
	}
	if check != "" {
		if got := check.Algorithm().FromBytes(body); got != check {
			return nil, "", &Error{Kind: KindInvalid, Status: resp.StatusCode,
				Message: fmt.Sprintf("manifest content is %s, not %s", got, check)}
		}
	}
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		var m struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &m) == nil && m.MediaType != "" {
			mt = m.MediaType
		}
	}
	return body, mt, nil
}

// HeadBlob returns a blob's size from HEAD /v2/<repo>/blobs/<d>, or -1 when the upstream sent no
// Content-Length.
func (u *Upstream) HeadBlob(ctx context.Context, repo string, d oci.Digest) (_ int64, err error) {
	defer func() { err = u.failed(err) }()
	if err := checkBlobRef(repo, d); err != nil {
		return 0, err
	}
	resp, err := u.send(ctx, http.MethodHead, repo, "/v2/"+repo+"/blobs/"+string(d), "", &u.stats.BlobHeads)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, u.statusError(resp)
	}
	return resp.ContentLength, nil
}

// GetBlob starts downloading a blob, following redirects to object storage (which never receives
// the registry's Authorization header). The body counts BlobBytes as it is read and fails with a
// KindTimeout *Error when no byte arrives for StallTimeout, with KindInvalid when the connection ends
// before Content-Length bytes; the caller verifies the digest and must Close the body. size is -1
// when the upstream sent no Content-Length.
func (u *Upstream) GetBlob(ctx context.Context, repo string, d oci.Digest) (_ io.ReadCloser, _ int64, err error) {
	defer func() { err = u.failed(err) }()
	if err := checkBlobRef(repo, d); err != nil {
		return nil, 0, err
	}
	resp, err := u.send(ctx, http.MethodGet, repo, "/v2/"+repo+"/blobs/"+string(d), "", &u.stats.BlobGets)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, u.statusError(resp)
	}
	if h := strings.TrimSpace(resp.Header.Get("Docker-Content-Digest")); h != "" && h != string(d) {
		if got, err := oci.ParseDigest(h); err == nil && got.Algorithm() == d.Algorithm() {
			resp.Body.Close()
			return nil, 0, &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: fmt.Sprintf("asked for blob %s, upstream sent %s", d, got)}
		}
	}
	b := resp.Body.(*upstreamBody)
	b.blob = true
	return b, resp.ContentLength, nil
}

// Tags lists a repository's tags (GET /v2/<repo>/tags/list), following Link rel="next" pages on the
// same registry, at most maxTagPages of them.
func (u *Upstream) Tags(ctx context.Context, repo string) (tags []string, err error) {
	defer func() { err = u.failed(err) }()
	if !oci.ValidName(repo) {
		return nil, oci.Errorf(oci.ErrNameInvalid, "invalid repository name %q", repo)
	}
	next := "/v2/" + repo + "/tags/list"
	seen := map[string]bool{}
	tags = []string{}
	for page := 0; next != ""; page++ {
		if page == maxTagPages || seen[next] {
			return nil, &Error{Kind: KindInvalid, Message: fmt.Sprintf("tag list of %s does not end after %d pages", repo, page)}
		}
		seen[next] = true
		resp, err := u.send(ctx, http.MethodGet, repo, next, "application/json", nil)
		if err != nil {
			return nil, err
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		err = func() error {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return u.statusError(resp)
			}
			b, err := io.ReadAll(io.LimitReader(resp.Body, maxTagsBody+1))
			if err != nil {
				return err
			}
			if len(b) > maxTagsBody {
				return &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: fmt.Sprintf("tag list page larger than %d bytes", maxTagsBody)}
			}
			if err := json.Unmarshal(b, &list); err != nil {
				return &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: "tag list is not valid JSON", Err: err}
			}
			next, err = u.nextPage(resp)
			return err
		}()
		if err != nil {
			return nil, err
		}
		tags = append(tags, list.Tags...)
	}
	return tags, nil
}

// nextPage returns the path and query of the Link rel="next" page, "" for the last page; a link to
// another registry is KindInvalid (it would receive the token).
func (u *Upstream) nextPage(resp *http.Response) (string, error) {
	link := linkNext(resp.Header.Values("Link"))
	if link == "" {
		return "", nil
	}
	next, err := resp.Request.URL.Parse(link)
	if err != nil || next.Scheme != u.st.base.Scheme || next.Host != u.st.base.Host {
		return "", &Error{Kind: KindInvalid, Status: resp.StatusCode, Message: fmt.Sprintf("bad Link to the next tag page: %q", link)}
	}
	return next.RequestURI(), nil
}

// linkNext finds the target of rel="next" in Link header values (RFC 8288).
func linkNext(values []string) string {
	for _, v := range values {
		for {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				break
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			target, rest := v[1:end], v[end+1:]
			params := rest
			if i := strings.IndexByte(rest, ','); i >= 0 {
				params, rest = rest[:i], rest[i:]
			} else {
				rest = ""
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(p, "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
			v = rest
		}
	}
	return ""
}

// checkManifestRef validates a repository name and a manifest reference (they become a URL path)
// and returns the reference's digest, or "" for a tag. The error is an *oci.Error: a caller's
// mistake, not an upstream failure.
func checkManifestRef(repo, ref string) (oci.Digest, error) {
	if !oci.ValidName(repo) {
		return "", oci.Errorf(oci.ErrNameInvalid, "invalid repository name %q", repo)
	}
	if oci.IsDigest(ref) {
		return oci.ParseDigest(ref)
	}
	if !oci.ValidTag(ref) {
		return "", oci.Errorf(oci.ErrManifestInvalid, "invalid tag %q", ref)
	}
	return "", nil
}

func checkBlobRef(repo string, d oci.Digest) error {
	if !oci.ValidName(repo) {
		return oci.Errorf(oci.ErrNameInvalid, "invalid repository name %q", repo)
	}
	_, err := oci.ParseDigest(string(d))
	return err
}

// contentMediaType is a Content-Type without its parameters.
func contentMediaType(ct string) string {
	if ct == "" {
		return ""
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// send makes one request to the registry for repo, with the credentials its last challenge asked
// for. A 401 from the registry with a challenge is answered once: by fetching a token (or using
// Basic credentials) and sending the request again. Every request sent is counted in counter. The
// response may have any status; its body is an *upstreamBody.
func (u *Upstream) send(ctx context.Context, method, repo, path, accept string, counter *int64) (*http.Response, error) {
	target := u.st.base.String() + path
	scope := "repository:" + repo + ":pull"
	u.mu.Lock()
	ch := u.st.challenge
	u.mu.Unlock()
	authz, cached, err := u.authorize(ctx, ch, scope)
	if err != nil {
		return nil, err
	}
	resp, err := u.do(ctx, method, target, accept, authz, counter)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !u.fromRegistry(resp) {
		return resp, err
	}
	next, ok := pickChallenge(resp.Header.Values("Www-Authenticate"))
	if !ok {
		return resp, nil
	}
	switch {
	case authz == "": // the first request to the registry: learn how it authenticates
	case cached && next.scheme == "bearer": // a cached token was refused: revoked or expired early
		u.mu.Lock()
		if t, ok := u.tokens[scope]; ok && "Bearer "+t.value == authz {
			delete(u.tokens, scope)
		}
		u.mu.Unlock()
	default: // credentials obtained just now were refused: KindAuth
		return resp, nil
	}
	drainBody(resp)
	u.mu.Lock()
	u.st.challenge = authChallenge{scheme: next.scheme, params: next.params}
	u.mu.Unlock()
	if s := next.params["scope"]; next.scheme == "bearer" && s != "" {
		scope = s
	}
	authz, _, err = u.authorize(ctx, next, scope)
	if err != nil {
		return nil, err
	}
	if authz == "" {
		return nil, &Error{Kind: KindAuth, Status: http.StatusUnauthorized, Message: "unsupported auth challenge " + next.scheme}
	}
	return u.do(ctx, method, target, accept, authz, counter)
}

// fromRegistry reports whether resp came from the registry itself, not from a host it redirected to.
func (u *Upstream) fromRegistry(resp *http.Response) bool {
	return resp.Request.URL.Scheme == u.st.base.Scheme && resp.Request.URL.Host == u.st.base.Host
}

// drainBody reads a little of a body so that its connection can be reused, and closes it.
func drainBody(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
}

// do sends one request. Its body is wrapped in an *upstreamBody (the stall timeout); the rate-limit
// headers of the response, and of the redirects that led to it, are recorded. A failure is an
// *Error, or the caller's context error when ctx ended.
func (u *Upstream) do(ctx context.Context, method, target, accept, authz string, counter *int64) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, method, target, nil)
	if err != nil {
		cancel(nil)
		return nil, &Error{Kind: KindInvalid, Message: "bad request URL", Err: err}
	}
	req.Header.Set("User-Agent", upstreamAgent)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if counter != nil {
		u.add(counter, 1)
	}
	start := time.Now()
	resp, err := u.client.Do(req)
	if resp != nil {
		u.answered(counter, resp.StatusCode)
	} else {
		u.answered(counter, 0)
	}
	if err != nil {
		cancel(nil)
		u.log.Debug("upstream request failed", "method", method, "path", req.URL.Path, "err", err)
		return nil, upstreamTransportError(ctx, err)
	}
	u.log.Debug("upstream request", "method", method, "path", req.URL.Path, "status", resp.StatusCode,
		"duration", time.Since(start))
	var chain []http.Header
	for r := resp; r != nil; r = r.Request.Response {
		chain = append(chain, r.Header)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		u.recordQuota(chain[i])
	}
	b := &upstreamBody{u: u, rc: resp.Body, caller: ctx, rctx: rctx, cancel: cancel, stall: u.cfg.StallTimeout}
	b.timer = time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	b.timer.Stop()
	resp.Body = b
	return resp, nil
}

// upstreamTransportError classifies a failure to get a response: the caller's context error when
// the caller gave up, KindTimeout for the client's own timeouts, KindNetwork otherwise.
func upstreamTransportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, errRedirects) {
		return &Error{Kind: KindUnavailable, Message: "redirect loop", Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: KindTimeout, Err: err}
	}
	return &Error{Kind: KindNetwork, Err: err}
}

// upstreamBody is a response body that fails with KindTimeout when a Read waits StallTimeout for
// a byte. The clock runs only inside Read, so a slow reader is never taken for a stalled upstream.
type upstreamBody struct {
	u      *Upstream
	rc     io.ReadCloser
	caller context.Context // the caller's context: its end is not an upstream failure
	rctx   context.Context // the request's context, cancelled with errStalled on a stall
	cancel context.CancelCauseFunc
	stall  time.Duration
	timer  *time.Timer
	blob   bool  // count BlobBytes and errors (the body the caller of GetBlob reads)
	err    error // sticky
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.timer.Reset(b.stall)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if n > 0 && b.blob {
		b.u.add(&b.u.stats.BlobBytes, int64(n))
	}
	if err != nil && err != io.EOF {
		err = b.classify(err)
		if b.blob {
			b.u.failed(err)
		}
		b.err = err
	}
	return n, err
}

func (b *upstreamBody) classify(err error) error {
	if context.Cause(b.rctx) == errStalled {
		return &Error{Kind: KindTimeout, Message: fmt.Sprintf("no data for %s", b.stall), Err: err}
	}
	if b.caller.Err() != nil {
		return b.caller.Err()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Kind: KindInvalid, Message: "body truncated", Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Kind: KindTimeout, Err: err}
	}
	return &Error{Kind: KindNetwork, Err: err}
}

func (b *upstreamBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// statusError turns an unsuccessful response into an *Error, with the message of an OCI error body:
// 404 and 410 are KindNotFound, 429 KindRateLimited (RetryAfter from Retry-After, else from the
// rate-limit window), 401 and 403 KindAuth, 5xx KindUnavailable, anything else KindInvalid.
func (u *Upstream) statusError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound || s == http.StatusGone:
		e.Kind = KindNotFound
	case s == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
		// Without Retry-After, an exhausted pull quota frees up within its window (this response's
		// headers are recorded already); a bare 429 with quota left is the abuse limit: no hint.
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), u.st.now()); ok {
			e.RetryAfter = d
		} else if q := u.Quota(); q.Known && q.Remaining == 0 {
			e.RetryAfter = q.Window
		}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		e.Kind = KindAuth
	case s >= 500:
		e.Kind = KindUnavailable
	default:
		e.Kind = KindInvalid
	}
	if resp.Request.Method != http.MethodHead {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e.Message = upstreamErrorMessage(b)
	}
	if e.Message == "" && e.Kind == KindAuth {
		if c, ok := pickChallenge(resp.Header.Values("Www-Authenticate")); ok && c.params["error"] != "" {
			e.Message = c.params["error"]
		}
	}
	return e
}

// upstreamErrorMessage reads an OCI error body ({"errors":[{"code","message"}]}), or a token
// endpoint's {"details":...} or OAuth2 {"error","error_description"}; "" when b is none of them.
func upstreamErrorMessage(b []byte) string {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
		Details     string `json:"details"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if len(b) == 0 || json.Unmarshal(b, &body) != nil {
		return ""
	}
	var msgs []string
	for _, e := range body.Errors {
		switch {
		case e.Message != "":
			msgs = append(msgs, e.Message)
		case e.Code != "":
			msgs = append(msgs, e.Code)
		}
	}
	switch {
	case len(msgs) > 0:
		return strings.Join(msgs, "; ")
	case body.Details != "":
		return body.Details
	case body.Description != "":
		return body.Description
	}
	return body.Error
}
