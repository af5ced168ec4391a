// Package registry serves the OCI Distribution Specification v1.1 HTTP API (/v2/) on top of a
// blob store and a metadata store.
package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Registry is the /v2/ API as an http.Handler.
type Registry struct {
	blobs storage.BlobStore
	meta  metadata.Store
	log   *slog.Logger
	cache Cache
	// bodyIdle bounds how long a request body may stall (DefaultBodyIdleTimeout when 0).
	bodyIdle time.Duration
}

// Cache is a pull-through cache of upstream registries (package proxy implements it). The
// registry asks it which repositories it serves, and for their manifests, missing blobs and tags.
type Cache interface {
	// Route reports whether repository name, with the ns query parameter of containerd mirror
	// requests, is cached, and names the local repository that holds it; read says the request
	// only reads.
	Route(ctx context.Context, name, ns string, read bool) (local string, ok bool)
	// Manifest returns the manifest a tag or digest names, revalidating or fetching it.
	Manifest(ctx context.Context, local, ref string) (*metadata.Manifest, error)
	// ServeBlob answers GET or HEAD of a blob the local repository does not hold yet.
	ServeBlob(w http.ResponseWriter, r *http.Request, local string, d oci.Digest) error
	// Tags lists the repository's tags.
	Tags(ctx context.Context, local string, p metadata.Page) ([]string, bool, error)
}

// UseCache makes the registry serve the repositories c routes from c. Writes to them are refused.
func (rg *Registry) UseCache(c Cache) { rg.cache = c }

// New returns a registry serving blobs and meta.
func New(blobs storage.BlobStore, meta metadata.Store, log *slog.Logger) *Registry {
	return &Registry{blobs: blobs, meta: meta, log: log}
}

// handler is the shape of every endpoint: it writes a success itself and returns failures, which
// writeError turns into responses in one place.
type handler func(w http.ResponseWriter, r *http.Request, rt route) error

// ServeHTTP implements http.Handler.
func (rg *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rt, err := parseRoute(r)
	if err == nil && rg.cache != nil && rt.name != "" {
		if local, ok := rg.cache.Route(r.Context(), rt.name, r.URL.Query().Get("ns"), mirrorable(r.Method, rt.kind)); ok {
			rt.name, rt.cached = local, true
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
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(s.ResponseWriter, r)
	}
	s.n += n
	return n, err
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
