package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"syscall"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// writeError answers err as an OCI error document. Errors from lower layers that are not already
// *oci.Error are mapped here, so that handlers can return them as they come; anything unknown is
// ours: logged, and answered 500 without internals.
func (rg *Registry) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := oci.AsError(err)
	if e == nil {
		switch {
		case errors.Is(err, metadata.ErrRepoUnknown):
			e = oci.Errorf(oci.ErrNameUnknown, "repository name not known to registry")
		case errors.Is(err, storage.ErrUploadUnknown):
			e = oci.Errorf(oci.ErrBlobUploadUnknown, "upload unknown to registry")
		case errors.Is(err, storage.ErrDigestMismatch):
			e = oci.Errorf(oci.ErrDigestInvalid, "provided digest did not match uploaded content")
		case errors.Is(err, errBlobTooLarge):
			e = oci.Errorf(oci.ErrSizeInvalid, "blob exceeds the registry's maximum blob size of %d bytes", rg.maxBlob).
				WithStatus(http.StatusRequestEntityTooLarge)
		case errors.Is(err, os.ErrDeadlineExceeded):
			e = oci.Errorf(oci.ErrBlobUploadInvalid, "the request body stalled").WithStatus(http.StatusRequestTimeout)
		case errors.As(err, new(*bodyError)):
			// The client broke its body off (what it sent of a chunk stays in the upload).
			rg.log.Debug("request body broke off", "method", r.Method, "path", r.URL.Path, "err", err)
			e = oci.Errorf(oci.ErrBlobUploadInvalid, "the request body ended before it was complete")
		case isQuota(err):
			e = oci.Errorf(oci.ErrDenied, "%s", err.Error())
		case errors.Is(err, storage.ErrInsufficientSpace):
			// The operator's floor, not a full disk: pulls go on, pushes wait for space.
			rg.log.Warn("a push was refused below the free-space floor", "method", r.Method, "path", r.URL.Path, "err", err)
			e = oci.Errorf(oci.ErrInsufficientStorage, "the registry is low on disk space (below its min_free_space): pushes are refused until space is freed; pulls go on")
		case diskFull(err):
			// Not the client's fault, nor a bug: the operator must free space. Whatever failed
			// to be written was not made visible (temporary files go, transactions roll back).
			rg.log.Error("disk full: a write was refused", "method", r.Method, "path", r.URL.Path, "err", err)
			e = oci.Errorf(oci.ErrInsufficientStorage, "the registry's disk is full: nothing was stored; try again once space is freed")
		case errors.Is(err, metadata.ErrUnavailable) || errors.Is(err, storage.ErrUnavailable):
			// A backend is down: say so, and that trying again is right; /readyz says it too, so
			// that a load balancer sends the next requests to a replica that reaches it.
			rg.log.Error("a backend is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
			what := "metadata database"
			if errors.Is(err, storage.ErrUnavailable) {
				what = "blob storage"
			}
			e = oci.Errorf(oci.ErrUnavailable, "the registry's %s is unavailable: nothing was changed; try again", what).
				WithHeader("Retry-After", "5")
		case errors.Is(err, context.Canceled) || errors.Is(err, errResponseStarted):
			return // the client went away, or the response is already on its way
		default:
			rg.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
			e = oci.Errorf(oci.ErrInternal, "internal server error")
		}
	}
	if sw, ok := w.(*statusWriter); ok && sw.written() {
		rg.log.Warn("error after response started", "method", r.Method, "path", r.URL.Path, "err", err)
		return
	}
	body, _ := json.Marshal(struct {
		Errors []*oci.Error `json:"errors"`
	}{[]*oci.Error{e}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	// An error must not carry the blob's validator or caching headers (getBlob sets them before a 416).
	h.Del("ETag")
	h.Del("Cache-Control")
	for k, v := range e.Header {
		h[k] = v
	}
	w.WriteHeader(e.HTTPStatus())
	w.Write(body)
}

// diskFull reports whether err is a write that the disk has no room for: the blob store's
// ENOSPC (or EDQUOT, a quota), or the metadata store's ErrFull.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, metadata.ErrFull)
}
