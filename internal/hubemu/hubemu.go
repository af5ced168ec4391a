// Package hubemu is a Docker Hub emulator for tests and benchmarks: berth's own registry (plain,
// in-process, data in a temporary directory) behind a front that reproduces what Docker Hub
// documents about itself, plus failure modes on demand. It is test support code, never part of the
// berth binary. Everything listens on 127.0.0.1.
//
// What it follows, and where each behaviour is documented:
//
//   - Bearer token auth, per the registry token authentication spec
//     (https://distribution.github.io/distribution/spec/auth/token/): the registry answers 401 with
//     WWW-Authenticate: Bearer realm=...,service="registry.docker.io"[,scope=...][,error=...]; the
//     token service (AuthURL) hands out tokens per scope, anonymously or with Basic credentials, as
//     {"token","access_token","expires_in","issued_at"}. See auth.go.
//   - What counts as a pull, and the rate-limit headers, per
//     https://docs.docker.com/docker-hub/usage/pulls/: a GET of a manifest is a pull, a HEAD ("version
//     check") is not, blobs are not; GET and HEAD of manifests carry ratelimit-limit,
//     ratelimit-remaining and docker-ratelimit-source; no header means no limit. See quota.go.
//   - Limits per source, per https://docs.docker.com/docker-hub/usage/: anonymous pulls are limited
//     per IPv4 address or IPv6 /64, authenticated pulls per account, over a 6-hour window.
//   - Checking the limit without spending it, per https://docs.docker.com/docker-hub/download-rate-limit/:
//     a token for repository:ratelimitpreview/test:pull, then HEAD
//     /v2/ratelimitpreview/test/manifests/latest. Start seeds that image.
//
// Not from those pages: a token asked for a repository that does not exist carries no access, so
// the registry answers 401 rather than 404 (what Docker Hub does: "pull access denied ... may
// require 'docker login'"); with RedirectBlobs, blob GETs are sent to a CDN by 307, as Docker Hub
// does. Anything else under /v2/ (blobs, manifests, tags, referrers) is passed to the backend
// registry and counted (Counts). Faults (SetFault) and a bandwidth limit shared by all blob bodies
// (SetThrottle) can be changed at any time. Content is seeded with the Push helpers, which write to
// the backend directly: not counted, no auth, no quota.
//
// Usage:
//
//	hub, err := hubemu.Start(hubemu.Options{Limit: 100})
//	...
//	defer hub.Close()
//	img, err := hub.PushImage("library/nginx", "1.27", layer)
//	// point the client under test at hub.RegistryURL(); then look at hub.Counts()
//	hub.SetFault(hubemu.Fault{Kind: hubemu.Down, On: hubemu.Manifests})
//	hub.ExhaustQuota()
package hubemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage/fs"
)

// Service is the service name Docker Hub's registry announces in its challenge and its token
// service expects.
const Service = "registry.docker.io"

// Options configure a Hub. The zero value is an unlimited hub with Docker Hub's token lifetime.
type Options struct {
	// Limit is the number of manifest GETs allowed per source IP (IPv6: per /64) per Window for
	// anonymous callers. 0 means unlimited, and then no rate-limit headers are sent.
	Limit int
	// AuthenticatedLimit is the same for callers whose token was issued for valid Basic
	// credentials; it is counted per user, not per IP. 0 means unlimited, without headers.
	AuthenticatedLimit int
	// Window is the rate-limit window (default 6 h, Docker Hub's). The window slides: each pull
	// stops counting Window after it was made.
	Window time.Duration
	// TokenTTL is how long a token is valid (default 300 s, Docker Hub's).
	TokenTTL time.Duration
	// Users are the username -> password pairs the token service accepts as Basic credentials.
	Users map[string]string
	// HeadLimitedAtZero makes manifest HEADs answer 429 too once the quota is 0, as has been seen
	// on Docker Hub (DESIGN.md §2); by default a HEAD always passes.
	HeadLimitedAtZero bool
	// RedirectBlobs answers blob GETs with 307 to a separate server (CDNURL) that serves the bytes
	// without auth from a signed, expiring URL, as Docker Hub does with its CDN.
	RedirectBlobs bool
	// RealmOnRegistry serves the token service on the registry's own host:port (RegistryURL()/token)
	// instead of a second server. Docker Hub has two hosts (auth.docker.io, registry-1.docker.io),
	// but clients that refuse a realm on a private or loopback address unless it is the registry's
	// own host:port (go-containerregistry, hence crane, v0.22) need this here.
	RealmOnRegistry bool
}

// Hub is a running emulator. Its methods are safe for concurrent use.
type Hub struct {
	opts    Options
	dir     string
	meta    *sqlite.Store
	backend http.Handler
	reg     *httptest.Server
	auth    *httptest.Server
	cdn     *httptest.Server // nil unless RedirectBlobs
	signKey []byte
	quit    chan struct{} // closed by Close: sleeping handlers return
	once    sync.Once

	tokens tokenStore
	quota  quota
	faults faults
	link   link
	counts counter

	mu    sync.Mutex
	repos map[string]bool // repositories that exist (were pushed to)
}

// Start starts a hub: the registry front and the token service (unless RealmOnRegistry), and the
// blob CDN with RedirectBlobs, each an httptest server on 127.0.0.1, over a backend in a temporary directory
// that Close removes.
func Start(opts Options) (*Hub, error) {
	if opts.Limit < 0 || opts.AuthenticatedLimit < 0 || opts.Window < 0 || opts.TokenTTL < 0 {
		return nil, errors.New("hubemu: negative option")
	}
	if opts.Window == 0 {
		opts.Window = 6 * time.Hour
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = 300 * time.Second
	}
	dir, err := os.MkdirTemp("", "hubemu-")
	if err != nil {
		return nil, fmt.Errorf("hubemu: %w", err)
	}
	h := &Hub{opts: opts, dir: dir, quit: make(chan struct{}), repos: map[string]bool{},
		signKey: []byte(randomHex(32))}
	blobs, err := fs.New(filepath.Join(dir, "blobs"))
	if err == nil {
		h.meta, err = sqlite.Open(context.Background(), filepath.Join(dir, "meta.db"))
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("hubemu: backend: %w", err)
	}
	h.backend = registry.New(blobs, h.meta, slog.New(slog.DiscardHandler))
	h.tokens.init()
	h.quota.init()
	h.counts.reset()
	h.reg = httptest.NewServer(http.HandlerFunc(h.serveRegistry))
	if !opts.RealmOnRegistry {
		h.auth = httptest.NewServer(http.HandlerFunc(h.serveToken))
	}
	if opts.RedirectBlobs {
		h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	}
	// The documented way to check the limit needs this image (download-rate-limit page).
	if _, err := h.PushImage("ratelimitpreview/test", "latest", []byte("ratelimitpreview")); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Close stops the servers (cutting any request in progress) and removes the backend's data.
func (h *Hub) Close() {
	h.once.Do(func() {
		close(h.quit)
		for _, s := range []*httptest.Server{h.reg, h.auth, h.cdn} {
			if s != nil {
				s.CloseClientConnections()
				s.Close()
			}
		}
		h.meta.Close()
		os.RemoveAll(h.dir)
	})
}

// RegistryURL is the registry's base URL, http://127.0.0.1:PORT (no /v2/).
func (h *Hub) RegistryURL() string { return h.reg.URL }

// Host is the registry's host:port, for image references (HOST/library/nginx:latest).
func (h *Hub) Host() string { return h.reg.Listener.Addr().String() }

// AuthURL is the token realm, http://127.0.0.1:PORT2/token (with RealmOnRegistry,
// RegistryURL()/token).
func (h *Hub) AuthURL() string {
	if h.auth == nil {
		return h.reg.URL + "/token"
	}
	return h.auth.URL + "/token"
}

// CDNURL is the base URL blob GETs are redirected to, or "" without RedirectBlobs.
func (h *Hub) CDNURL() string {
	if h.cdn == nil {
		return ""
	}
	return h.cdn.URL
}

// sleep waits for d, or until the request is gone or the hub closes; it reports whether the whole
// d passed. Callers that get false abort the handler (panic(http.ErrAbortHandler)), which makes
// net/http drop the connection instead of answering.
func (h *Hub) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-h.quit:
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
