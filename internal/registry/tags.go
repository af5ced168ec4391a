package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// maxPage bounds a page of tags or repositories; a client asking for more gets a Link to the rest.
const maxPage = 10000

// tags serves GET /v2/<name>/tags/list (spec: "Listing tags") with n and last.
func (rg *Registry) tags(w http.ResponseWriter, r *http.Request, rt route) error {
	p, err := pageOf(r)
	if err != nil {
		return err
	}
	list := rg.meta.Tags
	if rt.cached {
		list = rg.cache.Tags
	}
	tags, more, err := list(r.Context(), rt.name, p)
	if err != nil {
		return err
	}
	if more && len(tags) > 0 {
		setNextLink(w, "/v2/"+rt.name+"/tags/list", p.N, tags[len(tags)-1])
	}
	return writeJSON(w, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, tags})
}

// catalog serves GET /v2/_catalog with n and last.
func (rg *Registry) catalog(w http.ResponseWriter, r *http.Request, _ route) error {
	p, err := pageOf(r)
	if err != nil {
		return err
	}
	names, more, err := rg.repositories(r, p)
	if err != nil {
		return err
	}
	if more && len(names) > 0 {
		setNextLink(w, "/v2/_catalog", p.N, names[len(names)-1])
	}
	return writeJSON(w, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{names})
}

// repositories is a page of the repositories the caller may pull from.
func (rg *Registry) repositories(r *http.Request, p metadata.Page) ([]string, bool, error) {
	ctx := r.Context()
	if rg.authz == nil {
		return rg.meta.Repositories(ctx, p)
	}
	caller := auth.PrincipalFrom(ctx)
	var out []string
	for {
		names, more, err := rg.meta.Repositories(ctx, metadata.Page{Last: p.Last, N: max(p.N, 100)})
		if err != nil {
			return nil, false, err
		}
		for i, n := range names {
			if !rg.authz.CanList(ctx, caller, n) {
				continue
			}
			if len(out) == p.N {
				return out, true, nil
			}
			out = append(out, n)
			if len(out) == p.N && i == len(names)-1 && !more {
				return out, false, nil
			}
		}
		if !more || len(names) == 0 {
			return out, false, nil
		}
		p.Last = names[len(names)-1]
	}
}

// pageOf reads n and last; without n a page is as large as maxPage.
func pageOf(r *http.Request) (metadata.Page, error) {
	q := r.URL.Query()
	p := metadata.Page{Last: q.Get("last"), N: maxPage}
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, oci.Errorf(oci.ErrPaginationInvalid, "n must be a non-negative integer, not %q", s)
		}
		p.N = min(n, maxPage)
	}
	return p, nil
}

func setNextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(body)
	return err
}
