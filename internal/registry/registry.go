// Package registry serves the OCI Distribution Specification v1.1 HTTP API (/v2/) on top of a
// blob store and a metadata store.
package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/content"
	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Registry is the /v2/ API as an http.Handler.
type Registry struct {
	blobs    blobReader
	meta     catalog
	content  *content.Store // every write that makes a blob visible
	log      *slog.Logger
	cache    Cache
	authz    Authorizer
	auditLog *slog.Logger
	// bodyIdle bounds how long a request body may stall (DefaultBodyIdleTimeout when 0).
	bodyIdle time.Duration
	// maxBlob bounds an uploaded blob's size (0: no bound).
	maxBlob int64
	// minFree is the free space, in bytes, that pushes leave on the blob store's filesystem
	// (0: none): below it, new uploads and chunks are refused while pulls go on.
	minFree int64
	// quotas bound the storage of repositories (SetQuotas).
	quotas []Quota
	// pulls counts manifest pulls when they are tracked (TrackPulls).
	pulls *pullCounter
	// redirect, when positive, is how long the URLs that blob GETs are redirected to last.
	redirect time.Duration
	// immutable says which tags may not move (UseTagRules); nil: every tag may.
	immutable TagRules
	// publish tells webhooks of pushes and deletes (UseEvents); nil: nobody is told.
	publish func(events.Event)
}

// UseEvents makes the registry publish an event for every manifest push, tag move, manifest
// delete and tag delete (nil: none, and no work done for them). publish must not block.
func (rg *Registry) UseEvents(publish func(events.Event)) { rg.publish = publish }

// TagRules reports whether tag of repository repo may not move to another manifest and, if so,
// names the rule that says so (config.TagRules.Immutable implements it).
type TagRules func(repo, tag string) (rule string, immutable bool)

// UseTagRules makes pushes refuse to move the tags that rules say are immutable (TAG_INVALID).
// Cached repositories are exempt: they follow their upstream, and pushes to them are refused.
func (rg *Registry) UseTagRules(rules TagRules) { rg.immutable = rules }

// Cache is a pull-through cache of upstream registries (package proxy implements it). The
// registry asks it which repositories it serves, and for their manifests, missing blobs and tags.
type Cache interface {
	// Route reports whether repository name, with the ns query parameter of containerd mirror
	// requests, is served by the cache, and names the local repository that holds it; read says
	// the request only reads (only reads may reach the root mirror). mirror marks a root mirror
	// route, which the registry takes only when name is not a repository of its own (ownRead).
	Route(name, ns string, read bool) (local string, mirror, ok bool)
	// Manifest returns the manifest a tag or digest names, revalidating or fetching it.
	Manifest(ctx context.Context, local, ref string) (*metadata.Manifest, error)
	// ServeBlob answers GET or HEAD of a blob the local repository does not hold yet.
	ServeBlob(w http.ResponseWriter, r *http.Request, local string, d oci.Digest) error
	// Tags lists the repository's tags.
	Tags(ctx context.Context, local string, p metadata.Page) ([]string, bool, error)
	// Served tells what a GET of the local repository sent: a manifest (manifest), or n bytes
	// of a blob. The cache counts what it saved the upstream from it.
	Served(local string, manifest bool, n int64)
}

// Authorizer decides what the caller of a request may do (package auth implements it). A
// registry without one is open to everyone (berth serve --dev).
type Authorizer interface {
	// Authorize returns the caller of r and what it may do on the repository, which the client
	// named visible and which is stored as local, if that includes need (0: any caller with
	// credentials); else the error to answer with.
	Authorize(r *http.Request, visible, local string, need auth.Actions) (*auth.Principal, auth.Actions, error)
	// CanList reports whether p may see repository name in the catalog.
	CanList(ctx context.Context, p *auth.Principal, name string) bool
	// Can reports whether p may do need on repository name.
	Can(ctx context.Context, p *auth.Principal, name string, need auth.Actions) bool
	// MayPush reports whether the caller of r may push to repository name.
	MayPush(r *http.Request, name string) bool
	// ClientAddr is the address r came from (behind trusted proxies, the client's).
	ClientAddr(r *http.Request) string
}

// UseAuth makes the registry ask a for every request.
func (rg *Registry) UseAuth(a Authorizer) { rg.authz = a }

// UseAudit makes the registry write one line per push and delete to l.
func (rg *Registry) UseAudit(l *slog.Logger) { rg.auditLog = l }

// UseCache makes the registry serve the repositories c routes from c. Writes to them are refused.
func (rg *Registry) UseCache(c Cache) { rg.cache = c }

// RedirectBlobs makes blob GETs answer with a 307 to a URL valid for ttl at which the store serves
// the bytes itself, when the store can (storage.Redirector); 0 turns it off.
func (rg *Registry) RedirectBlobs(ttl time.Duration) { rg.redirect = ttl }

// blobReader is the blob store as the handlers use it: they read blobs and run upload sessions,
// and leave every write that makes a blob visible to content.
type blobReader interface {
	Stat(ctx context.Context, d oci.Digest) (int64, error)
	Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error)
	NewUpload(ctx context.Context) (storage.Upload, error)
	ResumeUpload(ctx context.Context, id string) (storage.Upload, error)
}

// catalog is the metadata store as the handlers use it: no blob links or manifests that provide
// blobs, which are content's.
type catalog interface {
	BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error)
	UnlinkBlob(ctx context.Context, repo string, d oci.Digest) error
	GetManifest(ctx context.Context, repo, reference string) (*metadata.Manifest, error)
	DeleteManifest(ctx context.Context, repo string, d oci.Digest) error
	DeleteTag(ctx context.Context, repo, tag string) error
	Tags(ctx context.Context, repo string, p metadata.Page) ([]string, bool, error)
	Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error)
	Referrers(ctx context.Context, repo string, d oci.Digest, artifactType string) ([]oci.Descriptor, error)
	CreateUpload(ctx context.Context, repo, id string) error
	UploadRepo(ctx context.Context, id string) (string, error)
	DeleteUpload(ctx context.Context, id string) error
	Usage(ctx context.Context, pattern string, d oci.Digest) (int64, bool, error)
}

// New returns a registry serving blobs and meta.
func New(blobs storage.BlobStore, meta metadata.Store, log *slog.Logger) *Registry {
	return &Registry{blobs: blobs, meta: meta, content: content.New(blobs, meta), log: log}
}

// handler is the shape of every endpoint: it writes a success itself and returns failures, which
// writeError turns into responses in one place.
type handler func(w http.ResponseWriter, r *http.Request, rt route) error

// ServeHTTP implements http.Handler.
func (rg *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	w.Header()["Docker-Distribution-Api-Version"] = []string{"registry/2.0"} // canonical key: Set's work done once
	rt, err := parseRoute(r)
	visible := rt.name
	if err == nil && rg.cache != nil && rt.name != "" {
		var ns string
		if r.URL.RawQuery != "" { // most requests have none: no map to parse it into
			ns = r.URL.Query().Get("ns")
		}
		if local, mirror, ok := rg.cache.Route(rt.name, ns, mirrorable(r.Method, rt.kind)); ok && (!mirror || !rg.ownRead(r, rt.name)) {
			rt.name, rt.cached, rt.mirrored = local, true, mirror
			// A caller that may push a repository of the name may be pushing a new one: its
			// client asks for the manifest first, and neither waiting for the mirror's upstream
			// nor its failure may stop the push. Such callers read only what the mirror has
			// cached (their own repositories they read at the root anyway).
			rt.cacheOnly = mirror && rg.authz != nil && rg.authz.MayPush(r, visible)
		}
	}
	if err == nil && rg.authz != nil {
		var p *auth.Principal
		var may auth.Actions
		if p, may, err = rg.authz.Authorize(r, visible, rt.name, needs(r.Method, rt.kind)); err == nil {
			ctx := auth.WithPrincipal(r.Context(), p)
			if rt.cached && (!may.Has(auth.Fetch) || rt.cacheOnly) {
				ctx = auth.CacheOnly(ctx)
			}
			r = r.WithContext(ctx)
		}
	}
	if err == nil {
		h := rg.dispatch(r.Method, rt.kind)
		if h != nil && rt.cached && !readOnly(r.Method, rt.kind) {
			h = refuseCached
		}
		if h == nil {
			w.Header().Set("Allow", rg.allowed(rt.kind))
			err = oci.Errorf(oci.ErrUnsupported, "%s is not supported on %s", r.Method, r.URL.Path)
		} else {
			err = h(w, r, rt)
		}
	}
	if err != nil {
		rg.writeError(w, r, err)
	} else if rt.cached && r.Method == http.MethodGet && (rt.kind == kindManifest || rt.kind == kindBlob) {
		rg.cache.Served(rt.name, rt.kind == kindManifest, sw.n)
	}
	if rg.log.Enabled(r.Context(), slog.LevelDebug) {
		rg.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.code(),
			"bytes", sw.n, "duration", time.Since(start))
	}
}

// dispatch is the route table: which handler serves which method on which kind of path.
func (rg *Registry) dispatch(method string, k kind) handler {
	type key struct {
		m string
		k kind
	}
	switch (key{method, k}) {
	case key{http.MethodGet, kindBase}, key{http.MethodHead, kindBase}:
		return rg.base
	case key{http.MethodGet, kindCatalog}:
		return rg.catalog
	case key{http.MethodGet, kindTags}:
		return rg.tags
	case key{http.MethodGet, kindManifest}, key{http.MethodHead, kindManifest}:
		return rg.getManifest
	case key{http.MethodPut, kindManifest}:
		return rg.putManifest
	case key{http.MethodDelete, kindManifest}:
		return rg.deleteManifest
	case key{http.MethodGet, kindBlob}, key{http.MethodHead, kindBlob}:
		return rg.getBlob
	case key{http.MethodDelete, kindBlob}:
		return rg.deleteBlob
	case key{http.MethodPost, kindUploadStart}:
		return rg.startUpload
	case key{http.MethodGet, kindUpload}:
		return rg.uploadStatus
	case key{http.MethodPatch, kindUpload}:
		return rg.patchUpload
	case key{http.MethodPut, kindUpload}:
		return rg.finishUpload
	case key{http.MethodDelete, kindUpload}:
		return rg.cancelUpload
	case key{http.MethodGet, kindReferrers}:
		return rg.referrers
	}
	return nil
}

// ownRead reports whether a read of name, which the root mirror could serve, is one of berth's
// own repository: name exists here and the caller may pull it. Whether it exists is looked at
// only for a caller that may pull it: for everyone else a private repository and a name nobody
// uses go the same way, to the mirror, so that refusals do not tell them apart.
func (rg *Registry) ownRead(r *http.Request, name string) bool {
	if rg.authz != nil {
		if _, _, err := rg.authz.Authorize(r, name, name, auth.Pull); err != nil {
			return false
		}
	}
	_, _, err := rg.meta.Tags(r.Context(), name, metadata.Page{N: 0})
	return !errors.Is(err, metadata.ErrRepoUnknown)
}

// audit records a change made by the caller of r, with the address it came from (behind trusted
// proxies the client's; X-Forwarded-For from anyone else is the client's to write, so it is not
// recorded as if it meant something).
func (rg *Registry) audit(r *http.Request, event string, args ...any) {
	if rg.auditLog == nil {
		return
	}
	addr := r.RemoteAddr
	if rg.authz != nil {
		addr = rg.authz.ClientAddr(r)
	}
	args = append(args, "subject", auth.PrincipalFrom(r.Context()).String(), "addr", addr)
	rg.auditLog.Info(event, args...)
}

// may reports whether the caller of r may do need on repository name.
func (rg *Registry) may(r *http.Request, name string, need auth.Actions) bool {
	return rg.authz == nil || rg.authz.Can(r.Context(), auth.PrincipalFrom(r.Context()), name, need)
}

// needs is what a caller must be allowed to do on the repository for a request: pull to read,
// push to upload, delete to delete, and nothing but credentials for the base and catalog
// endpoints (the catalog shows only what the caller may pull).
func needs(method string, k kind) auth.Actions {
	switch {
	case k == kindBase || k == kindCatalog:
		return 0
	case method == http.MethodDelete && (k == kindManifest || k == kindBlob):
		return auth.Delete
	case readOnly(method, k):
		return auth.Pull
	}
	return auth.Push
}

// readOnly reports whether a request only reads, which is all a cached repository allows.
func readOnly(method string, k kind) bool {
	return (method == http.MethodGet || method == http.MethodHead) && k != kindUpload
}

// mirrorable reports whether a request may reach the root mirror: reads, except blob HEADs. A
// HEAD of a blob at the root is a push asking whether a new repository has a blob yet; answered
// from the mirror, the client skips uploading what the upstream has and its manifest PUT to the
// new (local) repository fails with MANIFEST_BLOB_UNKNOWN. Pulls GET blobs.
func mirrorable(method string, k kind) bool {
	return readOnly(method, k) && !(method == http.MethodHead && k == kindBlob)
}

func refuseCached(_ http.ResponseWriter, r *http.Request, rt route) error {
	return oci.Errorf(oci.ErrUnsupported, "repository %s is a pull-through cache: %s is not allowed", rt.name, r.Method)
}

// allowed lists the methods the route table serves on a kind of path, for the Allow header.
func (rg *Registry) allowed(k kind) string {
	var ms []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if rg.dispatch(m, k) != nil {
			ms = append(ms, m)
		}
	}
	return strings.Join(ms, ", ")
}

func (rg *Registry) base(w http.ResponseWriter, _ *http.Request, _ route) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("{}"))
	return err
}

// statusWriter records the status and size of a response for the log. It passes ReadFrom through
// so that net/http can still send files with sendfile.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.n += int64(n)
	return n, err
}

func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok && isFile(r) {
		n, err = rf.ReadFrom(r) // sendfile
	} else {
		// Anything else (a decrypting reader) goes out in large writes: net/http would copy it
		// 32 KiB at a time, a write system call each.
		bp := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(writerOnly{s.ResponseWriter}, r, *bp)
		copyBufs.Put(bp)
	}
	s.n += n
	return n, err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// writerOnly hides a writer's ReadFrom, so that io.CopyBuffer uses the buffer it is given.
type writerOnly struct{ io.Writer }

// isFile reports whether r is a file, or a part of one, which the kernel can send by itself.
func isFile(r io.Reader) bool {
	if lr, ok := r.(*io.LimitedReader); ok {
		r = lr.R
	}
	_, ok := r.(*os.File)
	return ok
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush passes a flush through, for responses that stream (pull-through fills).
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// written reports whether a response has started, after which no error can be sent.
func (s *statusWriter) written() bool { return s.status != 0 }

var errResponseStarted = errors.New("response already started")
