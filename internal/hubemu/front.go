package hubemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// kind is what a registry path addresses.
type kind int

const (
	kindOther kind = iota
	kindBase
	kindCatalog
	kindTags
	kindManifest
	kindBlob
	kindReferrers
	kindUpload
)

// route is a registry request as the front sees it.
type route struct {
	kind  kind
	repo  string
	ref   string // tag or digest
	write bool   // not GET or HEAD
}

// parseRoute splits a /v2/ path from the right, as a repository name has any number of slashes.
// The backend validates names, tags and digests; the front only needs to know what is addressed.
func parseRoute(r *http.Request) route {
	rt := route{write: r.Method != http.MethodGet && r.Method != http.MethodHead}
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		rt.kind = kindBase
		return rt
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return rt
	}
	if rest == "_catalog" {
		rt.kind = kindCatalog
		return rt
	}
	seg := strings.Split(rest, "/")
	n := len(seg)
	at := func(i int) string { // i-th segment from the right, 1-based
		if i > n {
			return "\x00"
		}
		return seg[n-i]
	}
	end := 0
	switch {
	case at(2) == "tags" && at(1) == "list":
		rt.kind, end = kindTags, n-2
	case at(3) == "blobs" && at(2) == "uploads":
		rt.kind, end = kindUpload, n-3
	case at(2) == "blobs" && at(1) == "uploads":
		rt.kind, end = kindUpload, n-2
	case at(2) == "manifests":
		rt.kind, rt.ref, end = kindManifest, at(1), n-2
	case at(2) == "blobs":
		rt.kind, rt.ref, end = kindBlob, at(1), n-2
	case at(2) == "referrers":
		rt.kind, rt.ref, end = kindReferrers, at(1), n-2
	}
	if end < 1 {
		return route{write: rt.write}
	}
	rt.repo = strings.Join(seg[:end], "/")
	return rt
}

// target is the fault target a route belongs to.
func (rt route) target() Target {
	switch rt.kind {
	case kindManifest:
		return Manifests
	case kindBlob:
		return Blobs
	}
	return OtherPaths
}

// serveRegistry is the registry front: faults, then auth, then quota, then the backend.
func (h *Hub) serveRegistry(w http.ResponseWriter, r *http.Request) {
	if h.auth == nil && r.URL.Path == "/token" {
		h.serveToken(w, r)
		return
	}
	rt := parseRoute(r)
	redirect := h.cdn != nil && rt.kind == kindBlob && r.Method == http.MethodGet
	counted := false
	count := func() { h.countKind(rt, r.Method); counted = true }
	if _, done := h.applyFault(w, r, rt.target(), rt.repo, requestStage, count); done {
		return
	}
	g := h.authorize(w, r, rt)
	if g == nil {
		return // 401, counted as Unauthorized
	}
	if !counted {
		count()
	}
	if rt.kind == kindManifest && !rt.write && !h.checkQuota(w, r, g) {
		return
	}
	if redirect {
		h.redirectBlob(w, r, rt)
		return
	}
	var bodyFault *Fault
	if !rt.write && r.Method == http.MethodGet {
		bodyFault, _ = h.applyFault(w, r, rt.target(), rt.repo, bodyStage, nil)
	}
	bw := &bodyWriter{ResponseWriter: w, h: h, ctx: r.Context(), fault: bodyFault, blob: rt.kind == kindBlob}
	h.backend.ServeHTTP(bw, r)
}

func (h *Hub) countKind(rt route, method string) {
	h.counts.add(func(c *Counts) {
		var rc *RepoCounts
		if rt.repo != "" {
			v := c.Repos[rt.repo]
			rc = &v
			defer func() { c.Repos[rt.repo] = *rc }()
		} else {
			rc = &RepoCounts{}
		}
		get, head := method == http.MethodGet, method == http.MethodHead
		switch {
		case rt.kind == kindManifest && get:
			c.ManifestGet++
			rc.ManifestGet++
		case rt.kind == kindManifest && head:
			c.ManifestHead++
			rc.ManifestHead++
		case rt.kind == kindBlob && get:
			c.BlobGet++
			rc.BlobGet++
		case rt.kind == kindBlob && head:
			c.BlobHead++
			rc.BlobHead++
		case rt.kind == kindTags && get:
			c.TagList++
			rc.TagList++
		case rt.kind == kindBase:
			c.Base++
		default:
			c.Other++
			rc.Other++
		}
	})
}

// Blob redirects, as Docker Hub sends blob GETs to its CDN (a 307 to a signed, expiring URL on
// another host, which needs no Authorization). Used with Options.RedirectBlobs.

const cdnURLLifetime = 20 * time.Minute

func (h *Hub) sign(repo, dgst, expires string) string {
	m := hmac.New(sha256.New, h.signKey)
	fmt.Fprintf(m, "%s\n%s\n%s", repo, dgst, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// redirectBlob answers a blob GET with 307 to the CDN, if the backend has the blob.
func (h *Hub) redirectBlob(w http.ResponseWriter, r *http.Request, rt route) {
	// Ask the backend first (a HEAD), so that a missing blob is a 404 here, as on Docker Hub.
	head := r.Clone(r.Context())
	head.Method = http.MethodHead
	sw := &statusOnly{header: http.Header{}}
	h.backend.ServeHTTP(sw, head)
	if sw.status != http.StatusOK {
		h.backend.ServeHTTP(w, r) // the backend's error, with its body
		return
	}
	exp := strconv.FormatInt(time.Now().Add(cdnURLLifetime).Unix(), 10)
	q := url.Values{"expires": {exp}, "sig": {h.sign(rt.repo, rt.ref, exp)}}
	loc := h.cdn.URL + "/cdn/" + rt.repo + "/blobs/" + rt.ref + "?" + q.Encode()
	w.Header().Set("Location", loc)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// serveCDN serves a redirected blob from its signed URL, without auth. Body faults and the
// throttle act here, where the bytes are.
func (h *Hub) serveCDN(w http.ResponseWriter, r *http.Request) {
	h.counts.add(func(c *Counts) { c.CDNGet++ })
	rest, _ := strings.CutPrefix(r.URL.Path, "/cdn/")
	i := strings.LastIndex(rest, "/blobs/")
	q := r.URL.Query()
	exp, _ := strconv.ParseInt(q.Get("expires"), 10, 64)
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || i < 1 {
		http.NotFound(w, r)
		return
	}
	repo, dgst := rest[:i], rest[i+len("/blobs/"):]
	if time.Now().Unix() > exp || !hmac.Equal([]byte(q.Get("sig")), []byte(h.sign(repo, dgst, q.Get("expires")))) {
		http.Error(w, "Forbidden: invalid or expired signature", http.StatusForbidden)
		return
	}
	var bodyFault *Fault
	if r.Method == http.MethodGet {
		bodyFault, _ = h.applyFault(w, r, Blobs, repo, bodyStage, nil)
	}
	br := r.Clone(r.Context())
	br.URL = &url.URL{Path: "/v2/" + repo + "/blobs/" + dgst}
	br.RequestURI = br.URL.Path
	br.Header.Del("Authorization")
	h.backend.ServeHTTP(&bodyWriter{ResponseWriter: w, h: h, ctx: r.Context(), fault: bodyFault, blob: true}, br)
}

// statusOnly is a ResponseWriter that keeps only the status.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusOnly) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}
