package registry

import (
	"net/http"
	"strings"

	"github.com/berth/berth/internal/oci"
)

// kind is what a /v2/ path addresses.
type kind int

const (
	kindBase        kind = iota + 1 // /v2/
	kindCatalog                     // /v2/_catalog
	kindTags                        // /v2/<name>/tags/list
	kindManifest                    // /v2/<name>/manifests/<reference>
	kindBlob                        // /v2/<name>/blobs/<digest>
	kindUploadStart                 // /v2/<name>/blobs/uploads/
	kindUpload                      // /v2/<name>/blobs/uploads/<id>
	kindReferrers                   // /v2/<name>/referrers/<digest>
)

// route is a parsed and validated /v2/ path.
type route struct {
	kind kind
	name string     // repository
	ref  string     // tag, digest or upload id, as the kind says
	dgst oci.Digest // the digest, when ref is one
	// cached marks a repository of the pull-through cache; name is then the local repository.
	cached bool
	// mirrored marks a read of the root mirror: the client named a repository at the root.
	mirrored bool
	// cacheOnly: the caller may read only what the cache holds (see ServeHTTP).
	cacheOnly bool
}

// parseRoute splits a path from the right, since a repository name has any number of slashes,
// and validates every part against the spec grammar before anything else sees it. Encoded
// slashes are refused outright, so no part can smuggle a path separator.
func parseRoute(r *http.Request) (route, error) {
	if strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
		return route{}, oci.Errorf(oci.ErrNameInvalid, "encoded slashes are not allowed in paths")
	}
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		return route{kind: kindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, oci.Errorf(oci.ErrNameUnknown, "no such endpoint %q", p)
	}
	if rest == "_catalog" {
		return route{kind: kindCatalog}, nil
	}
	seg := strings.Split(rest, "/")
	n := len(seg)
	at := func(i int) string { // segment i from the right, 1-based
		if i > n {
			return "\x00"
		}
		return seg[n-i]
	}
	var rt route
	var nameEnd int // segments that belong to the name
	switch {
	case at(2) == "tags" && at(1) == "list":
		rt.kind, nameEnd = kindTags, n-2
	case at(3) == "blobs" && at(2) == "uploads" && at(1) == "":
		rt.kind, nameEnd = kindUploadStart, n-3
	case at(2) == "blobs" && at(1) == "uploads":
		rt.kind, nameEnd = kindUploadStart, n-2
	case at(3) == "blobs" && at(2) == "uploads":
		rt.kind, rt.ref, nameEnd = kindUpload, at(1), n-3
	case at(2) == "manifests":
		rt.kind, rt.ref, nameEnd = kindManifest, at(1), n-2
	case at(2) == "blobs":
		rt.kind, rt.ref, nameEnd = kindBlob, at(1), n-2
	case at(2) == "referrers":
		rt.kind, rt.ref, nameEnd = kindReferrers, at(1), n-2
	default:
		return route{}, oci.Errorf(oci.ErrNameUnknown, "no such endpoint %q", p)
	}
	if nameEnd < 1 {
		return route{}, oci.Errorf(oci.ErrNameInvalid, "missing repository name in %q", p)
	}
	// The name is the segments before the kind's, joined by their slashes: a prefix of rest.
	end := nameEnd - 1
	for _, sg := range seg[:nameEnd] {
		end += len(sg)
	}
	rt.name = rest[:end]
	if !oci.ValidName(rt.name) {
		return route{}, oci.Errorf(oci.ErrNameInvalid, "invalid repository name %q", rt.name).
			WithDetail(map[string]string{"name": rt.name})
	}
	switch rt.kind {
	case kindBlob, kindReferrers:
		d, err := oci.ParseDigest(rt.ref)
		if err != nil {
			return route{}, err
		}
		rt.dgst = d
	case kindManifest:
		if oci.IsDigest(rt.ref) {
			d, err := oci.ParseDigest(rt.ref)
			if err != nil {
				return route{}, err
			}
			rt.dgst = d
		} else if !oci.ValidTag(rt.ref) {
			return route{}, oci.Errorf(oci.ErrManifestInvalid, "invalid tag %q", rt.ref).
				WithDetail(map[string]string{"tag": rt.ref})
		}
	case kindUpload:
		if rt.ref == "" {
			return route{}, oci.Errorf(oci.ErrBlobUploadUnknown, "missing upload id")
		}
	}
	return rt, nil
}
