package registry_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/berth/berth/internal/oci"
)

func TestBlobGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("hello, world") // 12 bytes
	d := e.pushBlob(t, "repo", content)
	empty := e.pushBlob(t, "repo", nil)
	path := "/v2/repo/blobs/" + d.String()

	for _, tc := range []struct {
		name         string
		method       string
		path         string
		rng          string
		status       int
		body         string
		contentRange string
	}{
		{"GET", "GET", path, "", 200, "hello, world", ""},
		{"HEAD", "HEAD", path, "", 200, "", ""},
		{"first bytes", "GET", path, "bytes=0-4", 206, "hello", "bytes 0-4/12"},
		{"middle", "GET", path, "bytes=7-10", 206, "worl", "bytes 7-10/12"},
		{"open end", "GET", path, "bytes=7-", 206, "world", "bytes 7-11/12"},
		{"end past size", "GET", path, "bytes=7-100", 206, "world", "bytes 7-11/12"},
		{"last byte", "GET", path, "bytes=11-11", 206, "d", "bytes 11-11/12"},
		{"suffix", "GET", path, "bytes=-5", 206, "world", "bytes 7-11/12"},
		{"suffix larger than blob", "GET", path, "bytes=-100", 206, "hello, world", "bytes 0-11/12"},
		{"HEAD range", "HEAD", path, "bytes=0-4", 206, "", "bytes 0-4/12"},
		{"empty blob", "GET", "/v2/repo/blobs/" + empty.String(), "", 200, "", ""},
		{"HEAD empty blob", "HEAD", "/v2/repo/blobs/" + empty.String(), "", 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hdr []string
			if tc.rng != "" {
				hdr = []string{"Range", tc.rng}
			}
			r := e.do(t, tc.method, tc.path, nil, hdr...)
			if r.code != tc.status || string(r.body) != tc.body {
				t.Fatalf("%d %q, want %d %q", r.code, r.body, tc.status, tc.body)
			}
			size := len(tc.body)
			if tc.method == "HEAD" && tc.path == path {
				size = len(content)
				if tc.contentRange != "" {
					size = 5
				}
			}
			want := map[string]string{
				"Content-Length":        strconv.Itoa(size),
				"Content-Range":         tc.contentRange,
				"Content-Type":          "application/octet-stream",
				"Docker-Content-Digest": strings.TrimPrefix(tc.path, "/v2/repo/blobs/"),
			}
			checkHeaders(t, r, want)
		})
	}

	t.Run("multiple ranges", func(t *testing.T) {
		t.Parallel()
		r := e.do(t, "GET", path, nil, "Range", "bytes=0-1,7-8")
		if r.code != http.StatusPartialContent {
			t.Fatalf("%d %s", r.code, r.body)
		}
		if ct := r.get("Content-Type"); !strings.HasPrefix(ct, "multipart/byteranges") {
			t.Errorf("Content-Type %q, want multipart/byteranges", ct)
		}
		for _, part := range []string{"Content-Range: bytes 0-1/12\r\n", "\r\n\r\nhe\r\n", "Content-Range: bytes 7-8/12\r\n", "\r\n\r\nwo\r\n"} {
			if !strings.Contains(string(r.body), part) {
				t.Errorf("body %q lacks %q", r.body, part)
			}
		}
	})

	t.Run("If-None-Match", func(t *testing.T) {
		t.Parallel()
		r := e.do(t, "GET", path, nil, "If-None-Match", `"`+d.String()+`"`)
		if r.code != http.StatusNotModified || len(r.body) != 0 {
			t.Errorf("%d %q, want 304", r.code, r.body)
		}
	})
}

// TestBlobRangeNotSatisfiable: 416 with Content-Range "bytes */size" and an OCI error body, which
// must not carry the blob's caching headers.
func TestBlobRangeNotSatisfiable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.pushBlob(t, "repo", []byte("hello, world"))
	empty := e.pushBlob(t, "repo", nil)
	for _, tc := range []struct {
		name, digest, rng, contentRange string
	}{
		{"start at size", d.String(), "bytes=12-", "bytes */12"},
		{"start past size", d.String(), "bytes=20-30", "bytes */12"},
		{"zero suffix", d.String(), "bytes=-0", "bytes */12"},
		{"end before start", d.String(), "bytes=5-2", "bytes */12"},
		{"not a number", d.String(), "bytes=a-b", "bytes */12"},
		{"no dash", d.String(), "bytes=5", "bytes */12"},
		{"all parts past size", d.String(), "bytes=12-13,20-", "bytes */12"},
		{"one part malformed", d.String(), "bytes=0-1,x", "bytes */12"},
		{"empty blob", empty.String(), "bytes=0-", "bytes */0"},
		{"empty blob suffix", empty.String(), "bytes=-1", "bytes */0"},
	} {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				t.Parallel()
				r := e.do(t, method, "/v2/repo/blobs/"+tc.digest, nil, "Range", tc.rng)
				checkError(t, r, http.StatusRequestedRangeNotSatisfiable, "")
				checkHeaders(t, r, map[string]string{"Content-Range": tc.contentRange, "ETag": "", "Cache-Control": ""})
			})
		}
	}
}

func TestBlobUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.pushBlob(t, "a", []byte("only in a"))
	e.pushBlob(t, "b", []byte("something else in b"))
	for _, tc := range []struct{ name, method, path string }{
		{"other repository GET", "GET", "/v2/b/blobs/" + d.String()},
		{"other repository HEAD", "HEAD", "/v2/b/blobs/" + d.String()},
		{"other repository DELETE", "DELETE", "/v2/b/blobs/" + d.String()},
		{"other repository with range", "GET", "/v2/b/blobs/" + d.String()},
		{"unknown repository", "GET", "/v2/c/blobs/" + d.String()},
		{"unknown repository DELETE", "DELETE", "/v2/c/blobs/" + d.String()},
		{"prefix repository", "GET", "/v2/a/a/blobs/" + d.String()},
		{"unknown digest", "GET", "/v2/a/blobs/" + goodD},
		{"unknown sha512", "HEAD", "/v2/a/blobs/" + sha512D},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, tc.method, tc.path, nil, "Range", "bytes=0-1"), http.StatusNotFound, oci.ErrBlobUnknown)
		})
	}
	if r := e.do(t, "GET", "/v2/a/blobs/"+d.String(), nil); r.code != http.StatusOK {
		t.Errorf("blob of a: %d", r.code)
	}
}

func TestBlobDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	content := []byte("to be deleted")
	d := e.pushBlob(t, "a", content)
	e.pushBlob(t, "b", content)
	path := "/v2/a/blobs/" + d.String()

	r := e.do(t, "DELETE", path, nil)
	if r.code != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", r.code, r.body)
	}
	checkHeaders(t, r, map[string]string{"Content-Length": "0"})
	checkError(t, e.do(t, "GET", path, nil), http.StatusNotFound, oci.ErrBlobUnknown)
	checkError(t, e.do(t, "HEAD", path, nil), http.StatusNotFound, oci.ErrBlobUnknown)
	checkError(t, e.do(t, "DELETE", path, nil), http.StatusNotFound, oci.ErrBlobUnknown)
	// The same content stays visible in the repository that still links it.
	if r := e.do(t, "GET", "/v2/b/blobs/"+d.String(), nil); r.code != http.StatusOK || string(r.body) != string(content) {
		t.Errorf("blob of b after deleting it from a: %d %q", r.code, r.body)
	}
	// And pushing it again makes it visible again.
	e.pushBlob(t, "a", content)
	if r := e.do(t, "GET", path, nil); r.code != http.StatusOK {
		t.Errorf("blob pushed again: %d", r.code)
	}
}
