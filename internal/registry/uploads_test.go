package registry_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// checkBlob asserts that repo serves d with content.
func (e *env) checkBlob(t *testing.T, repo string, d digest.Digest, content []byte) {
	t.Helper()
	r := e.do(t, "GET", "/v2/"+repo+"/blobs/"+d.String(), nil)
	if r.code != http.StatusOK || string(r.body) != string(content) {
		t.Fatalf("GET blob %s in %s: %d %q, want 200 %q", d, repo, r.code, r.body, content)
	}
	checkHeaders(t, r, map[string]string{"Docker-Content-Digest": d.String()})
}

// checkCreated asserts a 201 for blob d in repo.
func checkCreated(t *testing.T, r resp, repo string, d digest.Digest) {
	t.Helper()
	if r.code != http.StatusCreated {
		t.Fatalf("%d %s, want 201", r.code, r.body)
	}
	checkHeaders(t, r, map[string]string{
		"Location":              "/v2/" + repo + "/blobs/" + d.String(),
		"Docker-Content-Digest": d.String(),
		"Content-Length":        "0",
	})
}

// checkAccepted asserts an upload session response (202 or 204) with its Location, id and Range.
func checkAccepted(t *testing.T, r resp, status int, repo, rng string) {
	t.Helper()
	if r.code != status {
		t.Fatalf("%d %s, want %d", r.code, r.body, status)
	}
	id := r.get("Docker-Upload-UUID")
	if id == "" {
		t.Error("no Docker-Upload-UUID")
	}
	length := "0"
	if status == http.StatusNoContent {
		length = "" // RFC 9110: a 204 has no Content-Length
	}
	checkHeaders(t, r, map[string]string{
		"Location":       "/v2/" + repo + "/blobs/uploads/" + id,
		"Range":          rng,
		"Content-Length": length,
	})
}

func TestMonolithicPost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("monolithic blob")
	sha512 := digest.SHA512.FromBytes(content)
	for _, tc := range []struct {
		name    string
		content []byte
		digest  string
		status  int
		code    oci.Code
	}{
		{"sha256", content, sha256Of(content).String(), 201, ""},
		{"sha512", content, sha512.String(), 201, ""},
		{"empty blob", []byte{}, sha256Of(nil).String(), 201, ""},
		{"large blob", []byte(strings.Repeat("0123456789", 100_000)), sha256Of([]byte(strings.Repeat("0123456789", 100_000))).String(), 201, ""},
		{"wrong digest", content, sha256Of([]byte("other")).String(), 400, oci.ErrDigestInvalid},
		{"wrong sha512", content, digest.SHA512.FromBytes([]byte("other")).String(), 400, oci.ErrDigestInvalid},
		{"malformed digest", content, "sha256:abc", 400, oci.ErrDigestInvalid},
		{"unsupported algorithm", content, "md5:d41d8cd98f00b204e9800998ecf8427e", 400, oci.ErrDigestInvalid},
		{"upper-case digest", content, strings.ToUpper(sha256Of(content).String()), 400, oci.ErrDigestInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := "mono/" + strings.ReplaceAll(tc.name, " ", "-")
			r := e.do(t, "POST", "/v2/"+repo+"/blobs/uploads/?digest="+tc.digest, tc.content,
				"Content-Type", "application/octet-stream")
			if tc.status == http.StatusCreated {
				d := digest.Digest(tc.digest)
				checkCreated(t, r, repo, d)
				e.checkBlob(t, repo, d, tc.content)
				return
			}
			checkError(t, r, tc.status, tc.code)
			// Nothing is stored under the claimed digest nor the real one.
			for _, d := range []string{tc.digest, sha256Of(tc.content).String()} {
				if oci.IsDigest(d) && digest.Digest(d).Validate() == nil {
					checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/blobs/"+d, nil), http.StatusNotFound, oci.ErrBlobUnknown)
				}
			}
		})
	}
}

func TestPostPut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		content []byte
		d       digest.Digest
	}{
		{"sha256", []byte("post then put"), sha256Of([]byte("post then put"))},
		{"sha512", []byte("post then put"), digest.SHA512.FromBytes([]byte("post then put"))},
		{"empty blob", nil, sha256Of(nil)},
		{"empty sha512", nil, digest.SHA512.FromBytes(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := "postput/" + strings.ReplaceAll(tc.name, " ", "-")
			r := e.do(t, "POST", "/v2/"+repo+"/blobs/uploads/", nil)
			checkAccepted(t, r, http.StatusAccepted, repo, "0-0")
			loc := r.get("Location")
			checkCreated(t, e.do(t, "PUT", withDigest(loc, tc.d), tc.content,
				"Content-Type", "application/octet-stream"), repo, tc.d)
			e.checkBlob(t, repo, tc.d, tc.content)
			// The session is over.
			checkError(t, e.do(t, "GET", loc, nil), http.StatusNotFound, oci.ErrBlobUploadUnknown)
			checkError(t, e.do(t, "PUT", withDigest(loc, tc.d), tc.content), http.StatusNotFound, oci.ErrBlobUploadUnknown)
		})
	}
}

func TestChunkedUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			chunkedUpload(t, e, "chunked/"+string(alg), alg)
		})
	}
}

func chunkedUpload(t *testing.T, e *env, repo string, alg digest.Algorithm) {
	content := []byte("0123456789abcdefghij") // 20 bytes, in chunks of 8, 8, 2 and 2
	d := alg.FromBytes(content)
	loc := e.startUpload(t, repo)

	steps := []struct {
		name         string
		method       string
		body         string
		contentRange string
		status       int
		code         oci.Code
		rng          string // the Range the registry reports afterwards
	}{
		{"first chunk", "PATCH", "01234567", "0-7", 202, "", "0-7"},
		{"status", "GET", "", "", 204, "", "0-7"},
		{"chunk from the start again", "PATCH", "01234567", "0-7", 416, oci.ErrBlobUploadInvalid, "0-7"},
		{"chunk past the end", "PATCH", "89abcdef", "9-16", 416, oci.ErrBlobUploadInvalid, "0-7"},
		{"overlapping chunk", "PATCH", "789abcde", "7-14", 416, oci.ErrBlobUploadInvalid, "0-7"},
		{"length does not match range", "PATCH", "89ab", "8-15", 400, oci.ErrSizeInvalid, "0-7"},
		{"second chunk", "PATCH", "89abcdef", "8-15", 202, "", "0-15"},
		{"status again", "GET", "", "", 204, "", "0-15"},
		{"with bytes unit and size", "PATCH", "gh", "bytes 16-17/*", 202, "", "0-17"},
		{"end at the largest int64", "PATCH", "xy", "18-9223372036854775807", 416, oci.ErrBlobUploadInvalid, "0-17"},
		{"empty PATCH changes nothing", "PATCH", "", "", 202, "", "0-17"},
	}
	for _, s := range steps {
		var body []byte
		if s.body != "" {
			body = []byte(s.body)
		}
		var hdr []string
		if s.contentRange != "" {
			hdr = []string{"Content-Range", s.contentRange, "Content-Type", "application/octet-stream"}
		}
		r := e.do(t, s.method, loc, body, hdr...)
		if s.code != "" {
			checkError(t, r, s.status, s.code)
			if s.status == http.StatusRequestedRangeNotSatisfiable {
				checkHeaders(t, r, map[string]string{"Range": s.rng, "Location": loc})
			}
		} else {
			checkAccepted(t, r, s.status, repo, s.rng)
			if r.get("Location") != loc {
				t.Errorf("%s: Location moved from %s to %s", s.name, loc, r.get("Location"))
			}
		}
		if t.Failed() {
			t.Fatalf("step %q failed", s.name)
		}
	}
	// The last chunk comes with the PUT.
	checkCreated(t, e.do(t, "PUT", withDigest(loc, d), []byte("ij"), "Content-Range", "18-19"), repo, d)
	e.checkBlob(t, repo, d, content)
}

// TestContentRangeOverflow: a chunk whose Content-Range ends at the largest int64 has a length
// that overflows to a negative number, which skipped the check that the body is as long as the
// range says: a 2-byte body declared as 2^63 bytes was taken.
func TestContentRangeOverflow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	loc := e.startUpload(t, "overflow/range")
	for _, cr := range []string{"0-9223372036854775807", "bytes 0-9223372036854775807/*"} {
		req, _ := http.NewRequest(http.MethodPatch, e.url+loc, io.MultiReader(strings.NewReader("xy")))
		req.ContentLength = -1 // chunked: no Content-Length to compare with
		req.Header.Set("Content-Range", cr)
		req.Header.Set("Content-Type", "application/octet-stream")
		checkError(t, e.send(t, req), http.StatusRequestedRangeNotSatisfiable, oci.ErrBlobUploadInvalid)
	}
	// Nothing was taken.
	if r := e.do(t, http.MethodGet, loc, nil); r.code != http.StatusNoContent || r.get("Range") != "0-0" {
		t.Errorf("upload status: %d Range %q, want 204 0-0 (empty)", r.code, r.get("Range"))
	}
	// A declared length that does fit in an int64 but not in the body is caught too.
	req, _ := http.NewRequest(http.MethodPatch, e.url+loc, io.MultiReader(strings.NewReader("xy")))
	req.ContentLength = -1
	req.Header.Set("Content-Range", "0-9223372036854775806")
	checkError(t, e.send(t, req), http.StatusBadRequest, oci.ErrSizeInvalid)
}

// TestStreamedUpload: PATCH without Content-Range and with chunked transfer encoding.
func TestStreamedUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte(strings.Repeat("streamed ", 50_000))
	d := sha256Of(content)
	loc := e.startUpload(t, "streamed")
	req, err := http.NewRequest("PATCH", e.url+loc, io.MultiReader(strings.NewReader(string(content))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	r := e.send(t, req)
	checkAccepted(t, r, http.StatusAccepted, "streamed", "0-449999")
	checkCreated(t, e.do(t, "PUT", withDigest(loc, d), nil), "streamed", d)
	e.checkBlob(t, "streamed", d, content)
}

// TestUploadStartWithoutSlash: POST /v2/<name>/blobs/uploads (no trailing slash) also starts one.
func TestUploadStartWithoutSlash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(t, "POST", "/v2/noslash/blobs/uploads", nil)
	checkAccepted(t, r, http.StatusAccepted, "noslash", "0-0")
	d := sha256Of([]byte("x"))
	checkCreated(t, e.do(t, "POST", "/v2/noslash/blobs/uploads?digest="+d.String(), []byte("x")), "noslash", d)
}

func TestUploadPutErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("some content")
	for _, tc := range []struct {
		name    string
		query   string
		status  int
		code    oci.Code
		survive bool // the session is still usable afterwards
	}{
		{"no digest", "", 400, oci.ErrDigestInvalid, true},
		{"malformed digest", "?digest=sha256:abc", 400, oci.ErrDigestInvalid, true},
		{"unknown algorithm", "?digest=md5:d41d8cd98f00b204e9800998ecf8427e", 400, oci.ErrDigestInvalid, true},
		{"wrong digest", "?digest=" + sha256Of([]byte("other")).String(), 400, oci.ErrDigestInvalid, false},
		{"wrong sha512", "?digest=" + digest.SHA512.FromBytes([]byte("other")).String(), 400, oci.ErrDigestInvalid, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := "puterr/" + strings.ReplaceAll(tc.name, " ", "-")
			loc := e.startUpload(t, repo)
			checkAccepted(t, e.do(t, "PATCH", loc, content), http.StatusAccepted, repo, "0-11")
			checkError(t, e.do(t, "PUT", loc+tc.query, nil), tc.status, tc.code)
			checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/blobs/"+sha256Of([]byte("other")).String(), nil),
				http.StatusNotFound, oci.ErrBlobUnknown)
			checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/blobs/"+sha256Of(content).String(), nil),
				http.StatusNotFound, oci.ErrBlobUnknown)
			if tc.survive {
				checkAccepted(t, e.do(t, "GET", loc, nil), http.StatusNoContent, repo, "0-11")
				d := sha256Of(content)
				checkCreated(t, e.do(t, "PUT", withDigest(loc, d), nil), repo, d)
			} else {
				checkError(t, e.do(t, "GET", loc, nil), http.StatusNotFound, oci.ErrBlobUploadUnknown)
			}
		})
	}
}

func TestUploadCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	loc := e.startUpload(t, "cancel")
	checkAccepted(t, e.do(t, "PATCH", loc, []byte("abandoned")), http.StatusAccepted, "cancel", "0-8")
	r := e.do(t, "DELETE", loc, nil)
	if r.code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.code, r.body)
	}
	d := sha256Of([]byte("abandoned"))
	for _, tc := range []struct {
		method, path string
	}{
		{"GET", loc},
		{"PATCH", loc},
		{"PUT", withDigest(loc, d)},
		{"DELETE", loc},
	} {
		checkError(t, e.do(t, tc.method, tc.path, []byte("abandoned")), http.StatusNotFound, oci.ErrBlobUploadUnknown)
	}
	checkError(t, e.do(t, "GET", "/v2/cancel/blobs/"+d.String(), nil), http.StatusNotFound, oci.ErrBlobUnknown)
	if left := e.uploadsLeft(t); len(left) != 0 {
		t.Errorf("uploads left on disk: %v", left)
	}
}

// TestUploadOtherRepository: an upload id is only valid under the repository that started it.
func TestUploadOtherRepository(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("mine")
	d := sha256Of(content)
	loc := e.startUpload(t, "owner")
	id := strings.TrimPrefix(loc, "/v2/owner/blobs/uploads/")
	for _, repo := range []string{"thief", "owner/sub", "own"} {
		other := "/v2/" + repo + "/blobs/uploads/" + id
		for _, tc := range []struct{ method, path string }{
			{"GET", other},
			{"PATCH", other},
			{"PUT", withDigest(other, d)},
			{"DELETE", other},
		} {
			t.Run(tc.method+" "+repo, func(t *testing.T) {
				checkError(t, e.do(t, tc.method, tc.path, content), http.StatusNotFound, oci.ErrBlobUploadUnknown)
			})
		}
	}
	// The owner's session is untouched.
	checkAccepted(t, e.do(t, "GET", loc, nil), http.StatusNoContent, "owner", "0-0")
	checkCreated(t, e.do(t, "PUT", withDigest(loc, d), content), "owner", d)
	checkError(t, e.do(t, "GET", "/v2/thief/blobs/"+d.String(), nil), http.StatusNotFound, oci.ErrBlobUnknown)
}

func TestUploadGarbageIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startUpload(t, "repo") // so that there is a session to confuse them with
	d := sha256Of([]byte("x")).String()
	for _, id := range []string{
		"garbage",
		"00000000000000000000000000000000",
		"0123456789ABCDEF0123456789ABCDEF",
		"D95306FA-FAD3-4E36-8D41-CF1C93EF8286",
		"RDk1MzA2RkEtRkFEMy00RTM2LThENDEtQ0YxQzkzRUY4Mjg2IA_-==",
		"%2e%2e",
		"data",
		"put-123",
		"' OR '1'='1",
		strings.Repeat("f", 1000),
	} {
		for _, method := range []string{"GET", "PATCH", "PUT", "DELETE"} {
			t.Run(method+" "+id[:min(len(id), 40)], func(t *testing.T) {
				t.Parallel()
				path := "/v2/repo/blobs/uploads/" + strings.ReplaceAll(id, " ", "%20")
				if method == "PUT" {
					path += "?digest=" + d
				}
				checkError(t, e.do(t, method, path, []byte("x")), http.StatusNotFound, oci.ErrBlobUploadUnknown)
			})
		}
	}
}

func TestMount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("shared layer")
	d := e.pushBlob(t, "src", content)
	e.pushBlob(t, "other", []byte("unrelated"))

	t.Run("mounted", func(t *testing.T) {
		t.Parallel()
		r := e.do(t, "POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from=src", nil)
		checkCreated(t, r, "dst", d)
		e.checkBlob(t, "dst", d, content)
		e.checkBlob(t, "src", d, content)
	})
	// Every mount the registry cannot do falls back to an upload session, which then works.
	for _, tc := range []struct{ name, query string }{
		{"from lacks the blob", "?mount=" + d.String() + "&from=other"},
		{"from unknown", "?mount=" + d.String() + "&from=nowhere"},
		{"from invalid", "?mount=" + d.String() + "&from=SRC"},
		{"no from", "?mount=" + d.String()},
		{"unknown digest", "?mount=" + goodD + "&from=src"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			repo := "fallback/" + strings.ReplaceAll(tc.name, " ", "-")
			r := e.do(t, "POST", "/v2/"+repo+"/blobs/uploads/"+tc.query, nil)
			checkAccepted(t, r, http.StatusAccepted, repo, "0-0")
			if r.get("Docker-Content-Digest") != "" {
				t.Errorf("fallback carries Docker-Content-Digest %q", r.get("Docker-Content-Digest"))
			}
			checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil), http.StatusNotFound, oci.ErrBlobUnknown)
			checkCreated(t, e.do(t, "PUT", withDigest(r.get("Location"), d), content), repo, d)
		})
	}
	t.Run("invalid digest", func(t *testing.T) {
		t.Parallel()
		checkError(t, e.do(t, "POST", "/v2/dst2/blobs/uploads/?mount=sha256:abc&from=src", nil),
			http.StatusBadRequest, oci.ErrDigestInvalid)
	})
}

// TestUploadLeavesNothing: after successful, failed and cancelled uploads of every kind, the
// upload area of the blob store is empty.
func TestUploadLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("x")
	d := sha256Of(content)
	wrong := sha256Of([]byte("y"))
	checkCreated(t, e.do(t, "POST", "/v2/r/blobs/uploads/?digest="+d.String(), content), "r", d)
	checkError(t, e.do(t, "POST", "/v2/r/blobs/uploads/?digest="+wrong.String(), content), http.StatusBadRequest, oci.ErrDigestInvalid)
	checkCreated(t, e.do(t, "POST", "/v2/r/blobs/uploads/?digest="+d.String(), content), "r", d) // already there
	loc := e.startUpload(t, "r")
	checkError(t, e.do(t, "PUT", withDigest(loc, wrong), content), http.StatusBadRequest, oci.ErrDigestInvalid)
	loc = e.startUpload(t, "r")
	checkCreated(t, e.do(t, "PUT", withDigest(loc, d), content), "r", d)
	loc = e.startUpload(t, "r")
	if r := e.do(t, "DELETE", loc, nil); r.code != http.StatusNoContent {
		t.Errorf("DELETE of the upload: %d %s, want 204", r.code, r.body)
	}
	if left := e.uploadsLeft(t); len(left) != 0 {
		t.Errorf("uploads left on disk: %v", left)
	}
}
