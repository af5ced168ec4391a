package registry_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// TestRouteAmbiguity ports Distribution's router cases (registry/api/v2/routes_test.go): repository
// names may contain the words the API uses ("blobs", "uploads", "manifests", "tags", "list"), and a
// path is split from the right, so each request must reach the repository the test pushed to.
func TestRouteAmbiguity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pushed := map[string]digest.Digest{} // "repo:tag" -> digest
	for _, rt := range []struct{ repo, tag string }{
		{"foo", "bar"},
		{"foo/bar", "tag"},
		{"foo/bar", "tags"},
		{"foo/bar/manifests", "tags"},
		{"docker.com/foo/bar/baz", "tag"},
		{"blobs", "uploads"},
		{"foo/blobs/uploads", "latest"},
		{"tags/list", "list"},
		{"manifests", "manifests"},
		{"a/referrers", "referrers"},
		{"uploads/blobs", "blobs"},
	} {
		m := e.image(t, rt.repo, rt.repo+":"+rt.tag, oci.MediaTypeImageManifest)
		pushed[rt.repo+":"+rt.tag] = e.pushManifest(t, rt.repo, rt.tag, oci.MediaTypeImageManifest, m)
	}

	t.Run("manifests", func(t *testing.T) {
		for _, tc := range []struct{ path, want string }{
			{"/v2/foo/manifests/bar", "foo:bar"},
			{"/v2/foo/bar/manifests/tag", "foo/bar:tag"},
			{"/v2/foo/bar/manifests/tags", "foo/bar:tags"},
			{"/v2/foo/bar/manifests/manifests/tags", "foo/bar/manifests:tags"},
			{"/v2/docker.com/foo/bar/baz/manifests/tag", "docker.com/foo/bar/baz:tag"},
			{"/v2/blobs/manifests/uploads", "blobs:uploads"},
			{"/v2/foo/blobs/uploads/manifests/latest", "foo/blobs/uploads:latest"},
			{"/v2/tags/list/manifests/list", "tags/list:list"},
			{"/v2/manifests/manifests/manifests", "manifests:manifests"},
			{"/v2/a/referrers/manifests/referrers", "a/referrers:referrers"},
			{"/v2/uploads/blobs/manifests/blobs", "uploads/blobs:blobs"},
		} {
			t.Run(tc.path, func(t *testing.T) {
				t.Parallel()
				r := e.do(t, "GET", tc.path, nil)
				if r.code != http.StatusOK {
					t.Fatalf("%d %s", r.code, r.body)
				}
				if got := r.get("Docker-Content-Digest"); got != pushed[tc.want].String() {
					t.Errorf("got manifest %s, want the one of %s (%s)", got, tc.want, pushed[tc.want])
				}
			})
		}
	})

	t.Run("tags", func(t *testing.T) {
		for _, tc := range []struct {
			path, name string
			tags       []string
		}{
			{"/v2/foo/bar/tags/list", "foo/bar", []string{"tag", "tags"}},
			{"/v2/foo/bar/manifests/tags/list", "foo/bar/manifests", []string{"tags"}},
			{"/v2/docker.com/foo/bar/baz/tags/list", "docker.com/foo/bar/baz", []string{"tag"}},
			{"/v2/tags/list/tags/list", "tags/list", []string{"list"}},
			{"/v2/foo/blobs/uploads/tags/list", "foo/blobs/uploads", []string{"latest"}},
			{"/v2/manifests/tags/list", "manifests", []string{"manifests"}},
		} {
			t.Run(tc.path, func(t *testing.T) {
				t.Parallel()
				r := e.do(t, "GET", tc.path, nil)
				var got struct {
					Name string   `json:"name"`
					Tags []string `json:"tags"`
				}
				if r.code != http.StatusOK {
					t.Fatalf("%d %s", r.code, r.body)
				}
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatal(err)
				}
				if got.Name != tc.name || !slices.Equal(got.Tags, tc.tags) {
					t.Errorf("got %s %v, want %s %v", got.Name, got.Tags, tc.name, tc.tags)
				}
			})
		}
	})

	t.Run("uploads", func(t *testing.T) {
		// The repository "foo/blobs/uploads" has its own upload endpoint.
		content := []byte("a blob in foo/blobs/uploads")
		d := sha256Of(content)
		loc := e.startUpload(t, "foo/blobs/uploads")
		if !strings.HasPrefix(loc, "/v2/foo/blobs/uploads/blobs/uploads/") {
			t.Fatalf("Location %q is not under /v2/foo/blobs/uploads/blobs/uploads/", loc)
		}
		if r := e.do(t, "PUT", withDigest(loc, d), content); r.code != http.StatusCreated {
			t.Fatalf("PUT: %d %s", r.code, r.body)
		}
		if r := e.do(t, "GET", "/v2/foo/blobs/uploads/blobs/"+d.String(), nil); r.code != http.StatusOK {
			t.Errorf("GET blob of foo/blobs/uploads: %d", r.code)
		}
		for _, repo := range []string{"foo", "foo/blobs"} {
			checkError(t, e.do(t, "GET", "/v2/"+repo+"/blobs/"+d.String(), nil), http.StatusNotFound, oci.ErrBlobUnknown)
		}
	})
}

var (
	hex64   = strings.Repeat("a", 64)
	hex128  = strings.Repeat("b", 128)
	goodD   = "sha256:" + hex64
	upperD  = "sha256:" + strings.ToUpper(hex64)
	shortD  = "sha256:abcdef01234567890"
	longD   = "sha256:" + hex64 + "a"
	sha512D = "sha512:" + hex128
)

// badPaths are requests refused by the router: traversals, encoded slashes, invalid names, tags
// and digests. None of them may create anything on disk, in or out of the data directory.
var badPaths = []struct {
	name   string
	path   string
	status int
	code   oci.Code
}{
	// Path traversal (Distribution's TestRouterWithPathTraversals): no cleaning, just refusal.
	{"dotdot in name", "/v2/foo/../bar/baz/tags/list", 400, oci.ErrNameInvalid},
	{"dotdot to uploads", "/v2/foo/../../blobs/uploads/D95306FA-FAD3-4E36-8D41-CF1C93EF8286", 400, oci.ErrNameInvalid},
	{"dotdot manifest", "/v2/../../../etc/manifests/passwd", 400, oci.ErrNameInvalid},
	{"dotdot out of v2", "/v2/../../etc/passwd", 404, oci.ErrNameUnknown},
	{"dot component", "/v2/foo/./bar/manifests/latest", 400, oci.ErrNameInvalid},
	{"encoded dotdot", "/v2/foo/%2e%2e/%2e%2e/bar/manifests/latest", 400, oci.ErrNameInvalid},
	{"dotdot tag", "/v2/foo/manifests/..", 400, oci.ErrManifestInvalid},
	{"dotdot blob", "/v2/foo/blobs/..", 400, oci.ErrDigestInvalid},
	{"dotdot referrers", "/v2/foo/referrers/..", 400, oci.ErrDigestInvalid},
	{"dotdot upload id", "/v2/foo/blobs/uploads/..", 404, oci.ErrBlobUploadUnknown},
	{"encoded dotdot upload id", "/v2/foo/blobs/uploads/%2e%2e", 404, oci.ErrBlobUploadUnknown},
	// Encoded slashes.
	{"encoded slash in name", "/v2/foo%2Fbar/manifests/latest", 400, oci.ErrNameInvalid},
	{"lower-case encoded slash", "/v2/foo%2fbar/tags/list", 400, oci.ErrNameInvalid},
	{"encoded slash in tag", "/v2/foo/manifests/a%2Fb", 400, oci.ErrNameInvalid},
	{"encoded slash in upload id", "/v2/foo/blobs/uploads/..%2F..%2F..%2Fetc", 400, oci.ErrNameInvalid},
	{"encoded slash in digest", "/v2/foo/blobs/sha256:..%2F..%2Fpasswd", 400, oci.ErrNameInvalid},
	// Names.
	{"upper-case name", "/v2/Foo/manifests/latest", 400, oci.ErrNameInvalid},
	{"upper-case component", "/v2/foo/BAR/tags/list", 400, oci.ErrNameInvalid},
	{"empty component", "/v2/foo//bar/manifests/latest", 400, oci.ErrNameInvalid},
	{"empty name", "/v2//manifests/latest", 400, oci.ErrNameInvalid},
	{"no name", "/v2/manifests/latest", 400, oci.ErrNameInvalid},
	{"no name tags", "/v2/tags/list", 400, oci.ErrNameInvalid},
	{"no name blobs", "/v2/blobs/" + goodD, 400, oci.ErrNameInvalid},
	{"no name uploads", "/v2/blobs/uploads/", 400, oci.ErrNameInvalid},
	{"trailing slash in name", "/v2/foo//tags/list", 400, oci.ErrNameInvalid},
	{"name over 255", "/v2/" + strings.Repeat("a", 256) + "/tags/list", 400, oci.ErrNameInvalid},
	{"long name in components", "/v2/" + strings.Repeat("abcdefg/", 32) + "x/tags/list", 400, oci.ErrNameInvalid},
	{"trailing separator", "/v2/foo-/manifests/latest", 400, oci.ErrNameInvalid},
	{"leading separator", "/v2/-foo/manifests/latest", 400, oci.ErrNameInvalid},
	{"double dot separator", "/v2/foo..bar/manifests/latest", 400, oci.ErrNameInvalid},
	{"triple underscore", "/v2/foo___bar/manifests/latest", 400, oci.ErrNameInvalid},
	{"host and port", "/v2/localhost:8080/foo/bar/baz/manifests/tag", 400, oci.ErrNameInvalid},
	{"non-ASCII name", "/v2/foo/不bar/tags/list", 400, oci.ErrNameInvalid},
	{"non-ASCII upload id", "/v2/foo/blobs/uploads/不95306FA-FAD3-4E36-8D41-CF1C93EF8286", 404, oci.ErrBlobUploadUnknown},
	{"NUL in name", "/v2/foo%00/tags/list", 400, oci.ErrNameInvalid},
	// Tags.
	{"tag over 128", "/v2/foo/manifests/" + strings.Repeat("t", 129), 400, oci.ErrManifestInvalid},
	{"tag leading dot", "/v2/foo/manifests/.latest", 400, oci.ErrManifestInvalid},
	{"tag leading dash", "/v2/foo/manifests/-latest", 400, oci.ErrManifestInvalid},
	{"tag with plus", "/v2/foo/manifests/v1+build", 400, oci.ErrManifestInvalid},
	{"empty tag", "/v2/foo/manifests/", 400, oci.ErrManifestInvalid},
	// Digests, on each route that takes one.
	{"short digest", "/v2/foo/blobs/" + shortD, 400, oci.ErrDigestInvalid},
	{"long digest", "/v2/foo/blobs/" + longD, 400, oci.ErrDigestInvalid},
	{"upper-case hex", "/v2/foo/blobs/" + upperD, 400, oci.ErrDigestInvalid},
	{"sha512 of sha256 length", "/v2/foo/blobs/sha512:" + hex64, 400, oci.ErrDigestInvalid},
	{"unknown algorithm", "/v2/foo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, oci.ErrDigestInvalid},
	{"unsupported sha384", "/v2/foo/blobs/sha384:" + strings.Repeat("c", 96), 400, oci.ErrDigestInvalid},
	{"tarsum", "/v2/foo/bar/blobs/tarsum.dev+foo:abcdef0919234", 400, oci.ErrDigestInvalid},
	{"no algorithm", "/v2/foo/blobs/:" + hex64, 400, oci.ErrDigestInvalid},
	{"bare hex", "/v2/foo/blobs/" + hex64, 400, oci.ErrDigestInvalid},
	{"manifest short digest", "/v2/foo/bar/manifests/" + shortD, 400, oci.ErrDigestInvalid},
	{"manifest upper-case hex", "/v2/foo/manifests/" + upperD, 400, oci.ErrDigestInvalid},
	{"manifest unknown algorithm", "/v2/foo/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", 400, oci.ErrDigestInvalid},
	{"referrers short digest", "/v2/foo/referrers/" + shortD, 400, oci.ErrDigestInvalid},
	{"referrers upper-case hex", "/v2/foo/referrers/" + upperD, 400, oci.ErrDigestInvalid},
	{"referrers tag", "/v2/foo/referrers/latest", 400, oci.ErrDigestInvalid},
	// Upload ids the registry never issued (Distribution's uuid cases).
	{"uuid", "/v2/foo/bar/blobs/uploads/D95306FA-FAD3-4E36-8D41-CF1C93EF8286", 404, oci.ErrBlobUploadUnknown},
	{"base64 id", "/v2/foo/bar/blobs/uploads/RDk1MzA2RkEtRkFEMy00RTM2LThENDEtQ0YxQzkzRUY4Mjg2IA==", 404, oci.ErrBlobUploadUnknown},
	{"junk id", "/v2/foo/bar/blobs/uploads/totalandcompletejunk++$$-==", 404, oci.ErrBlobUploadUnknown},
	// Not endpoints at all.
	{"not v2", "/v1/foo/tags/list", 404, ""},
	{"v2 prefix only", "/v2foo/tags/list", 404, ""},
	{"unknown endpoint", "/v2/foo/bar", 404, ""},
	{"tags without list", "/v2/foo/tags/", 404, ""},
	{"tags list slash", "/v2/foo/tags/list/", 404, ""},
	{"upload id with slash", "/v2/foo/blobs/uploads/abc/def", 404, ""},
	{"catalog slash", "/v2/_catalog/", 404, ""},
}

func TestRouteRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range badPaths {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, "GET", tc.path, nil), tc.status, tc.code)
		})
	}
}

// TestRouteLimits: the longest valid name and tag, and the shortest odd-looking valid ones, reach
// their handlers (which then answer "unknown").
func TestRouteLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		path   string
		status int
		code   oci.Code
	}{
		{"name of 255", "/v2/" + strings.Repeat("a", 255) + "/manifests/latest", 404, oci.ErrManifestUnknown},
		{"name of 255 in components", "/v2/" + strings.Repeat("abcdefg/", 31) + "abcdefg/tags/list", 404, oci.ErrNameUnknown},
		{"separators", "/v2/a.b_c__d-e---f/g/manifests/latest", 404, oci.ErrManifestUnknown},
		{"tag of 128", "/v2/foo/manifests/" + strings.Repeat("t", 128), 404, oci.ErrManifestUnknown},
		{"tag leading underscore", "/v2/foo/manifests/_latest", 404, oci.ErrManifestUnknown},
		{"tag with dots and dashes", "/v2/foo/manifests/V1.2-rc.3_x", 404, oci.ErrManifestUnknown},
		{"sha256 blob", "/v2/foo/blobs/" + goodD, 404, oci.ErrBlobUnknown},
		{"sha512 blob", "/v2/foo/blobs/" + sha512D, 404, oci.ErrBlobUnknown},
		{"sha512 manifest", "/v2/foo/manifests/" + sha512D, 404, oci.ErrManifestUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, "GET", tc.path, nil), tc.status, tc.code)
		})
	}
}

// TestRouteRefusalsTouchNothing sends every refused path with every method and a body, then checks
// that nothing was created anywhere: not outside the data directory and not inside it either.
func TestRouteRefusalsTouchNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := files(t, e.root)
	for _, tc := range badPaths {
		for _, method := range []string{"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"} {
			for _, q := range []string{"", "?digest=" + goodD} {
				r := e.do(t, method, tc.path+q, []byte("payload"), "Content-Type", oci.MediaTypeImageManifest)
				if r.code < 400 || r.code >= 500 {
					t.Errorf("%s %s: %d, want a refusal", method, tc.path+q, r.code)
				}
			}
		}
	}
	// SQLite's WAL and shared-memory files exist from the start; their names are all we compare.
	if after := files(t, e.root); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
	}
}
