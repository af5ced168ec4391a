package registry_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/berth/berth/internal/oci"
)

type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

type catalog struct {
	Repositories []string `json:"repositories"`
}

// decodeList checks a 200 JSON list response and decodes it into v, strictly.
func decodeList(t *testing.T, r resp, v any) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	checkHeaders(t, r, map[string]string{
		"Content-Type":   "application/json",
		"Content-Length": strconv.Itoa(len(r.body)),
	})
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
}

var linkRE = regexp.MustCompile(`^<(/v2/[^>]+)>; rel="next"$`)

// followLinks GETs path and then every Link rel="next", returning each page.
func (e *env) followLinks(t *testing.T, path string, page func(r resp) []string) [][]string {
	t.Helper()
	var pages [][]string
	for path != "" && len(pages) < 100 {
		r := e.do(t, "GET", path, nil)
		pages = append(pages, page(r))
		path = ""
		if l := r.get("Link"); l != "" {
			m := linkRE.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("Link %q is not of the form </v2/...>; rel=\"next\"", l)
			}
			path = m[1]
		}
	}
	return pages
}

func TestTagsList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "tagged/repo"
	body := e.image(t, repo, "tags", oci.MediaTypeImageManifest)
	// Pushed out of order; listed in lexical (byte) order.
	for _, tag := range []string{"v2", "latest", "V1", "a", "v10", "_x", "1.0", "v1.0-rc"} {
		e.pushManifest(t, repo, tag, oci.MediaTypeImageManifest, body)
	}
	all := []string{"1.0", "V1", "_x", "a", "latest", "v1.0-rc", "v10", "v2"}
	// A repository with blobs only has an empty tag list.
	e.pushBlob(t, "untagged", []byte("just a blob"))

	const base = "/v2/" + repo + "/tags/list"
	for _, tc := range []struct {
		name  string
		query string
		tags  []string
		link  string
	}{
		{"all", "", all, ""},
		{"first page", "?n=3", all[:3], `</v2/tagged/repo/tags/list?last=_x&n=3>; rel="next"`},
		{"second page", "?n=3&last=_x", all[3:6], `</v2/tagged/repo/tags/list?last=v1.0-rc&n=3>; rel="next"`},
		{"last page", "?n=3&last=v1.0-rc", all[6:], ""},
		{"exactly all", "?n=8", all, ""},
		{"more than all", "?n=1000", all, ""},
		{"n=1", "?n=1", all[:1], `</v2/tagged/repo/tags/list?last=1.0&n=1>; rel="next"`},
		{"n=0", "?n=0", []string{}, ""},
		{"last only", "?last=latest", all[5:], ""},
		{"last not a tag", "?last=b", all[4:], ""},
		{"last after all", "?last=zzz", []string{}, ""},
		{"last before all", "?last=0", all, ""},
		{"n=2 from last not a tag", "?last=W&n=2", all[2:4], `</v2/tagged/repo/tags/list?last=a&n=2>; rel="next"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.do(t, "GET", base+tc.query, nil)
			var tl tagList
			decodeList(t, r, &tl)
			if tl.Name != repo || tl.Tags == nil || !slices.Equal(tl.Tags, tc.tags) {
				t.Errorf("got %s %q, want %s %q", tl.Name, tl.Tags, repo, tc.tags)
			}
			checkHeaders(t, r, map[string]string{"Link": tc.link})
		})
	}

	t.Run("following Links", func(t *testing.T) {
		t.Parallel()
		for n := 1; n <= 9; n++ {
			pages := e.followLinks(t, base+"?n="+strconv.Itoa(n), func(r resp) []string {
				var tl tagList
				decodeList(t, r, &tl)
				if len(tl.Tags) > n {
					t.Errorf("n=%d: page of %d", n, len(tl.Tags))
				}
				return tl.Tags
			})
			if got := slices.Concat(pages...); !slices.Equal(got, all) {
				t.Errorf("n=%d: pages %q", n, pages)
			}
		}
	})

	t.Run("untagged", func(t *testing.T) {
		t.Parallel()
		var tl tagList
		decodeList(t, e.do(t, "GET", "/v2/untagged/tags/list", nil), &tl)
		if tl.Name != "untagged" || tl.Tags == nil || len(tl.Tags) != 0 {
			t.Errorf("got %s %q, want untagged []", tl.Name, tl.Tags)
		}
	})

	for _, tc := range []struct {
		name, path string
		status     int
		code       oci.Code
	}{
		{"n not a number", base + "?n=x", 400, oci.ErrPaginationInvalid},
		{"n negative", base + "?n=-1", 400, oci.ErrPaginationInvalid},
		{"n fraction", base + "?n=1.5", 400, oci.ErrPaginationInvalid},
		{"n empty is all", base + "?n=", 200, ""},
		{"unknown repository", "/v2/nowhere/tags/list", 404, oci.ErrNameUnknown},
		{"unknown repository paginated", "/v2/nowhere/tags/list?n=1", 404, oci.ErrNameUnknown},
		{"parent of a repository", "/v2/tagged/tags/list", 404, oci.ErrNameUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.do(t, "GET", tc.path, nil)
			if tc.status == http.StatusOK {
				var tl tagList
				decodeList(t, r, &tl)
				return
			}
			checkError(t, r, tc.status, tc.code)
		})
	}
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	var c catalog
	decodeList(t, e.do(t, "GET", "/v2/_catalog", nil), &c)
	if c.Repositories == nil || len(c.Repositories) != 0 {
		t.Errorf("empty registry: %q, want []", c.Repositories)
	}

	// Repositories come to exist with a blob or a manifest, not with an upload session.
	for _, repo := range []string{"b", "a/x", "c", "a", "a-b", "0"} {
		e.pushBlob(t, repo, []byte("blob of "+repo))
	}
	e.pushManifest(t, "m", "latest", oci.MediaTypeImageManifest, e.image(t, "m", "m", oci.MediaTypeImageManifest))
	e.startUpload(t, "uploading")
	all := []string{"0", "a", "a-b", "a/x", "b", "c", "m"}

	for _, tc := range []struct {
		name  string
		query string
		repos []string
		link  string
	}{
		{"all", "", all, ""},
		{"first page", "?n=2", all[:2], `</v2/_catalog?last=a&n=2>; rel="next"`},
		{"second page", "?n=2&last=a", all[2:4], `</v2/_catalog?last=a%2Fx&n=2>; rel="next"`},
		{"after a slash", "?n=2&last=a/x", all[4:6], `</v2/_catalog?last=c&n=2>; rel="next"`},
		{"last page", "?n=2&last=c", all[6:], ""},
		{"n=0", "?n=0", []string{}, ""},
		{"exactly all", "?n=7", all, ""},
		{"last after all", "?last=z", []string{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.do(t, "GET", "/v2/_catalog"+tc.query, nil)
			var c catalog
			decodeList(t, r, &c)
			if c.Repositories == nil || !slices.Equal(c.Repositories, tc.repos) {
				t.Errorf("got %q, want %q", c.Repositories, tc.repos)
			}
			checkHeaders(t, r, map[string]string{"Link": tc.link})
		})
	}

	t.Run("following Links", func(t *testing.T) {
		t.Parallel()
		for n := 1; n <= 8; n++ {
			pages := e.followLinks(t, "/v2/_catalog?n="+strconv.Itoa(n), func(r resp) []string {
				var c catalog
				decodeList(t, r, &c)
				return c.Repositories
			})
			if got := slices.Concat(pages...); !slices.Equal(got, all) {
				t.Errorf("n=%d: pages %q", n, pages)
			}
		}
	})

	for _, q := range []string{"?n=x", "?n=-2"} {
		t.Run("bad "+q, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, "GET", "/v2/_catalog"+q, nil), http.StatusBadRequest, oci.ErrPaginationInvalid)
		})
	}
}
