package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// getBlob serves GET and HEAD /v2/<name>/blobs/<digest> (spec: "Pulling blobs"), with Range.
func (rg *Registry) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if _, err := rg.meta.BlobSize(ctx, rt.name, rt.dgst); err != nil {
		if rt.cached && errors.Is(err, metadata.ErrNotFound) {
			return rg.cache.ServeBlob(w, r, rt.name, rt.dgst)
		}
		return blobErr(err, rt.dgst)
	}
	if rd, ok := rg.blobs.(storage.Redirector); ok && rg.redirect > 0 && r.Method == http.MethodGet {
		// The bytes go from the bucket to the client (spec: a registry may redirect a blob GET).
		u, err := rd.RedirectURL(ctx, rt.dgst, rg.redirect)
		if err != nil {
			return err
		}
		w.Header().Set("Docker-Content-Digest", rt.dgst.String())
		http.Redirect(w, r, u, http.StatusTemporaryRedirect)
		return nil
	}
	f, size, err := rg.blobs.Open(ctx, rt.dgst)
	if err != nil {
		return blobErr(err, rt.dgst)
	}
	defer f.Close()
	h := w.Header()
	h.Set("Docker-Content-Digest", rt.dgst.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+rt.dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	if rg := r.Header.Get("Range"); rg != "" && !satisfiable(rg, size) {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		return oci.Errorf(oci.ErrRangeNotSatisfiable, "range %q not satisfiable for a blob of %d bytes", rg, size)
	}
	// ServeContent does Range and conditional requests; given an *os.File it sends with sendfile.
	http.ServeContent(w, r, "", noModTime, f)
	return nil
}

// satisfiable reports whether a Range header is well formed and asks for at least one byte of a
// blob of size bytes (RFC 9110 section 14.1.2). ServeContent handles the rest.
func satisfiable(header string, size int64) bool {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		return false
	}
	// Every part must be well formed (else ServeContent answers a plain-text 416), and one
	// must overlap the blob.
	some := false
	for _, part := range strings.Split(spec, ",") {
		first, last, ok := strings.Cut(strings.TrimSpace(part), "-")
		if !ok {
			return false
		}
		switch {
		case first == "": // suffix: the last N bytes
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return false
			}
			if n > 0 && size > 0 {
				some = true
			}
		default:
			start, err := strconv.ParseInt(first, 10, 64)
			if err != nil || start < 0 {
				return false
			}
			if last != "" {
				end, err := strconv.ParseInt(last, 10, 64)
				if err != nil || end < start {
					return false
				}
			}
			if start < size {
				some = true
			}
		}
	}
	return some
}

// deleteBlob serves DELETE /v2/<name>/blobs/<digest> (spec: "Deleting blobs"): the blob is no longer
// visible in the repository; its bytes stay for other repositories and for garbage collection.
func (rg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := rg.meta.UnlinkBlob(r.Context(), rt.name, rt.dgst); err != nil {
		return blobErr(err, rt.dgst)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	rg.audit(r, "delete blob", "repository", rt.name, "digest", rt.dgst.String())
	return nil
}

func blobErr(err error, d oci.Digest) error {
	if errors.Is(err, metadata.ErrNotFound) || errors.Is(err, storage.ErrNotFound) {
		return oci.Errorf(oci.ErrBlobUnknown, "blob unknown to registry").WithDetail(map[string]string{"digest": d.String()})
	}
	return err
}
