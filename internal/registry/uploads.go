package registry

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// startUpload serves POST /v2/<name>/blobs/uploads/ (spec: "Pushing blobs"): a cross-repository
// mount, a monolithic upload with ?digest=, or a new upload session.
func (rg *Registry) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		d, err := oci.ParseDigest(mount)
		if err != nil {
			return err
		}
		// Mounting reads the source repository: the caller must be allowed to pull from it, and a
		// caller who may not gets the same new session as for a blob that is not there.
		if from := q.Get("from"); oci.ValidName(from) && rg.may(r, from, auth.Pull) {
			if size, err := rg.meta.BlobSize(ctx, from, d); err == nil {
				if err := rg.checkQuota(ctx, rt.name, size, d); err != nil {
					return err
				}
			}
			if mounted, err := rg.content.Mount(ctx, rt.name, from, d); err != nil {
				return err
			} else if mounted {
				return blobCreated(w, rt.name, d)
			}
		}
		// Not mountable: fall back to a new upload session, as the spec says.
	} else if ds := q.Get("digest"); ds != "" {
		d, err := oci.ParseDigest(ds)
		if err != nil {
			return err
		}
		if err := storage.CheckFree(rg.blobs, max(r.ContentLength, 0), rg.minFree); err != nil {
			return err
		}
		if err := rg.checkQuota(ctx, rt.name, max(r.ContentLength, 0), d); err != nil {
			return err
		}
		room, err := rg.room(r, 0)
		if err != nil {
			return err
		}
		if _, err := rg.content.Put(ctx, rt.name, d, rg.body(w, r, room)); err != nil {
			return uploadErr(err)
		}
		return blobCreated(w, rt.name, d)
	}
	if err := storage.CheckFree(rg.blobs, 0, rg.minFree); err != nil {
		return err
	}
	if err := rg.checkQuota(ctx, rt.name, 0, ""); err != nil {
		return err
	}
	u, err := rg.blobs.NewUpload(ctx)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := rg.meta.CreateUpload(ctx, rt.name, u.ID()); err != nil {
		u.Cancel(ctx)
		return err
	}
	return uploadAccepted(w, rt.name, u, http.StatusAccepted)
}

// openUpload resumes the session rt addresses, which must belong to rt's repository.
func (rg *Registry) openUpload(r *http.Request, rt route) (storage.Upload, error) {
	repo, err := rg.meta.UploadRepo(r.Context(), rt.ref)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && repo != rt.name) {
		return nil, oci.Errorf(oci.ErrBlobUploadUnknown, "upload unknown to registry").
			WithDetail(map[string]string{"uuid": rt.ref})
	}
	if err != nil {
		return nil, err
	}
	u, err := rg.blobs.ResumeUpload(r.Context(), rt.ref)
	if errors.Is(err, storage.ErrUploadUnknown) {
		return nil, oci.Errorf(oci.ErrBlobUploadUnknown, "upload unknown to registry").
			WithDetail(map[string]string{"uuid": rt.ref})
	}
	return u, err
}

// uploadStatus serves GET /v2/<name>/blobs/uploads/<id>: how much the registry has.
func (rg *Registry) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := rg.openUpload(r, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	return uploadAccepted(w, rt.name, u, http.StatusNoContent)
}

// patchUpload serves PATCH /v2/<name>/blobs/uploads/<id>: one chunk, or the whole blob streamed.
func (rg *Registry) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := rg.openUpload(r, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := rg.appendChunk(w, r, rt, u); err != nil {
		return err
	}
	return uploadAccepted(w, rt.name, u, http.StatusAccepted)
}

// finishUpload serves PUT /v2/<name>/blobs/uploads/<id>?digest=: an optional last chunk, then the
// content is verified against the digest and becomes the blob.
func (rg *Registry) finishUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	d, err := oci.ParseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		return err
	}
	u, err := rg.openUpload(r, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := rg.appendChunk(w, r, rt, u); err != nil {
		return err
	}
	// The whole blob, whose digest is known now: one already counted under a quota is free there.
	if err := rg.checkQuota(ctx, rt.name, u.Size(), d); err != nil {
		return err
	}
	if _, err := rg.content.Commit(ctx, rt.name, u, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			rg.meta.DeleteUpload(ctx, rt.ref)
		}
		return uploadErr(err)
	}
	if err := rg.meta.DeleteUpload(ctx, rt.ref); err != nil {
		return err
	}
	return blobCreated(w, rt.name, d)
}

// cancelUpload serves DELETE /v2/<name>/blobs/uploads/<id>.
func (rg *Registry) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := rg.openUpload(r, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := u.Cancel(r.Context()); err != nil {
		return err
	}
	if err := rg.meta.DeleteUpload(r.Context(), rt.ref); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// appendChunk appends the request body to u. With Content-Range, the chunk must start where the
// upload ends (else 416 with the current Range) and be as long as it says.
func (rg *Registry) appendChunk(w http.ResponseWriter, r *http.Request, rt route, u storage.Upload) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" && r.ContentLength == 0 {
		return nil
	}
	want, at := int64(-1), int64(-1)
	if cr != "" {
		start, end, ok := parseContentRange(cr)
		if !ok {
			setUploadHeaders(w, rt.name, u)
			return oci.Errorf(oci.ErrBlobUploadInvalid, "malformed Content-Range %q (want start-end)", cr).
				WithStatus(http.StatusRequestedRangeNotSatisfiable)
		}
		want, at = end-start+1, start
		if r.ContentLength >= 0 && r.ContentLength != want {
			return oci.Errorf(oci.ErrSizeInvalid, "Content-Length %d does not match Content-Range %q", r.ContentLength, cr)
		}
	}
	room, err := rg.room(r, u.Size())
	if err != nil {
		return err
	}
	if want > 0 && room >= 0 && want > room {
		return errBlobTooLarge // Content-Range says it will not fit
	}
	if err := storage.CheckFree(rg.blobs, max(want, r.ContentLength, 0), rg.minFree); err != nil {
		return err
	}
	if err := rg.checkQuota(r.Context(), rt.name, u.Size()+max(want, r.ContentLength, 0), ""); err != nil {
		return err
	}
	n, err := u.AppendAt(r.Context(), rg.body(w, r, room), at)
	if errors.Is(err, storage.ErrOffset) {
		setUploadHeaders(w, rt.name, u)
		return oci.Errorf(oci.ErrBlobUploadInvalid, "chunk starts at %d but the upload has %d bytes", at, u.Size()).
			WithStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	if err != nil {
		return err
	}
	if want >= 0 && n != want {
		return oci.Errorf(oci.ErrSizeInvalid, "chunk has %d bytes, Content-Range says %d", n, want)
	}
	return nil
}

// parseContentRange parses "start-end" (what the spec and Docker send), also with a "bytes " prefix
// and a "/size" suffix.
func parseContentRange(s string) (start, end int64, ok bool) {
	s = strings.TrimPrefix(s, "bytes ")
	s, _, _ = strings.Cut(s, "/")
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	// end < MaxInt64, so that the length end-start+1 cannot overflow.
	if err1 != nil || err2 != nil || start < 0 || end < start || end == math.MaxInt64 {
		return 0, 0, false
	}
	return start, end, true
}

func setUploadHeaders(w http.ResponseWriter, name string, u storage.Upload) {
	h := w.Header()
	h.Set("Location", "/v2/"+name+"/blobs/uploads/"+u.ID())
	h.Set("Docker-Upload-UUID", u.ID())
	end := u.Size() - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
}

func uploadAccepted(w http.ResponseWriter, name string, u storage.Upload, status int) error {
	setUploadHeaders(w, name, u)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
	return nil
}

func blobCreated(w http.ResponseWriter, name string, d oci.Digest) error {
	h := w.Header()
	h.Set("Location", "/v2/"+name+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func uploadErr(err error) error {
	if errors.Is(err, storage.ErrDigestMismatch) {
		return oci.Errorf(oci.ErrDigestInvalid, "provided digest did not match uploaded content")
	}
	return err
}
