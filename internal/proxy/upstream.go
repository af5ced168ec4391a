// Package proxy is berth's pull-through cache: rules that map a repository prefix to an upstream
// registry, a client for upstream registries (Docker token auth, rate-limit headers, timeouts), and
// the cache semantics of DESIGN.md §4 (immutable digests, tag revalidation by HEAD, stale-if-error,
// coalescing, quota awareness).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/berth/berth/internal/oci"
)

// UpstreamConfig says how to reach one upstream registry.
type UpstreamConfig struct {
	// Name identifies the upstream in stats and logs (the rule's prefix, e.g. "docker-hub").
	Name string
	// URL is the registry's base URL, e.g. https://registry-1.docker.io (no /v2/).
	URL string
	// Username and Password, if set, are sent as Basic credentials to the token endpoint (or to
	// the registry itself when it asks for Basic). A token without a username is sent as the
	// password of user "<token>", as Docker clients do.
	Username, Password string
	// DialTimeout bounds connecting; HeaderTimeout bounds waiting for response headers;
	// StallTimeout bounds a body that stops delivering bytes. Zero means a default
	// (10 s, 30 s, 30 s).
	DialTimeout, HeaderTimeout, StallTimeout time.Duration
	// Transport, if set, replaces the default transport (tests).
	Transport http.RoundTripper
}

// Descriptor is what a manifest HEAD tells.
type Descriptor struct {
	MediaType string
	Digest    oci.Digest
	Size      int64
}

// Quota is the last rate-limit state an upstream reported (ratelimit-limit, ratelimit-remaining
// with ";w=", docker-ratelimit-source). Known is false while no response carried the headers.
type Quota struct {
	Known     bool          `json:"known"`
	Limit     int           `json:"limit"`
	Remaining int           `json:"remaining"`
	Window    time.Duration `json:"window"`
	Source    string        `json:"source,omitempty"`
	Seen      time.Time     `json:"seen"`
}

// ErrorKind classifies an upstream failure; the cache decides by kind whether to serve stale.
type ErrorKind string

// The kinds of upstream failure.
const (
	KindNotFound    ErrorKind = "not_found"    // 404: the upstream does not have it
	KindRateLimited ErrorKind = "rate_limited" // 429
	KindUnavailable ErrorKind = "unavailable"  // 5xx
	KindNetwork     ErrorKind = "network"      // connect or transfer failure
	KindTimeout     ErrorKind = "timeout"      // connect, header or stall timeout
	KindAuth        ErrorKind = "auth"         // token endpoint failed, or 401/403 after auth
	KindInvalid     ErrorKind = "invalid"      // a body that is truncated, corrupt or malformed
)

// Error is an upstream failure.
type Error struct {
	Kind       ErrorKind
	Status     int           // HTTP status, when there was a response
	RetryAfter time.Duration // from Retry-After (or the rate-limit window), when rate limited
	Message    string        // the upstream's error message, when it sent one
	Err        error         // the cause, for network errors
}

func (e *Error) Error() string {
	s := fmt.Sprintf("upstream %s", e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of an upstream error, or "" if err is not one.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// UpstreamStats counts what berth asked of an upstream.
type UpstreamStats struct {
	ManifestGets  int64               `json:"manifest_gets"`
	ManifestHeads int64               `json:"manifest_heads"`
	BlobGets      int64               `json:"blob_gets"`
	BlobHeads     int64               `json:"blob_heads"`
	BlobBytes     int64               `json:"blob_bytes"`
	TokenRequests int64               `json:"token_requests"`
	Errors        map[ErrorKind]int64 `json:"errors"`
	// Responses counts the upstream's answers by request kind (manifest_get, manifest_head,
	// blob_get, blob_head, token, tags) and HTTP status; 0 is no answer (a network failure).
	Responses map[string]map[int]int64 `json:"responses"`
}

// PullsCharged are the manifest GETs the upstream answered with success: what Docker Hub counts
// as pulls.
func (s UpstreamStats) PullsCharged() int64 {
	var n int64
	for code, c := range s.Responses["manifest_get"] {
		if code >= 200 && code < 300 {
			n += c
		}
	}
	return n
}

// Upstream is a client of one upstream registry. It is safe for concurrent use. It caches bearer
// tokens per scope until they expire and records the rate-limit headers of every response.
type Upstream struct {
	cfg    UpstreamConfig
	client *http.Client
	log    *slog.Logger

	mu     sync.Mutex
	quota  Quota
	stats  UpstreamStats
	tokens map[string]token // scope -> token
	st     clientState      // client.go: base URL, clock, auth challenge and token requests in flight
}

type token struct {
	value   string
	expires time.Time
}

// ManifestAccept is the Accept header sent for manifests: every type berth can store.
const ManifestAccept = oci.MediaTypeImageIndex + ", " + oci.MediaTypeImageManifest + ", " +
	oci.MediaTypeDockerList + ", " + oci.MediaTypeDockerManifest

// Source is what the cache asks of an upstream; *Upstream implements it. Each method counts itself
// in the stats, records rate-limit headers, and returns *Error for upstream failures. repo is the
// name on the upstream (for Docker Hub with "library/" already added).
type Source interface {
	HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) (body []byte, mediaType string, err error)
	HeadBlob(ctx context.Context, repo string, d oci.Digest) (int64, error)
	GetBlob(ctx context.Context, repo string, d oci.Digest) (io.ReadCloser, int64, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	Quota() Quota
	Stats() UpstreamStats
	Name() string
}
