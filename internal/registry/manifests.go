package registry

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

var noModTime time.Time

// getManifest serves GET and HEAD /v2/<name>/manifests/<reference> (spec: "Pulling manifests").
func (rg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	var m *metadata.Manifest
	var err error
	if rt.cached {
		m, err = rg.cache.Manifest(r.Context(), rt.name, rt.ref)
	} else {
		m, err = rg.meta.GetManifest(r.Context(), rt.name, rt.ref)
	}
	if err != nil {
		if rt.mirrored && r.Method == http.MethodHead && upstreamFailed(err) && rg.authz == nil {
			// Without authentication anyone may be pushing a new repository and asking whether
			// its manifest is there yet: the upstream's failure must not stop the push. The
			// answer is what a repository of berth's own would give. (With authentication,
			// callers that may push read only what is cached: ServeHTTP.)
			return manifestErr(metadata.ErrNotFound, rt.ref)
		}
		return manifestErr(err, rt.ref)
	}
	if !acceptable(r.Header.Values("Accept"), m.MediaType) {
		return oci.Errorf(oci.ErrManifestUnknown, "manifest is %s, which the request's Accept header does not list", m.MediaType).
			WithDetail(map[string]string{"mediaType": m.MediaType})
	}
	// The keys are written in their canonical form, and the values share one array: Set would
	// canonicalize each key and allocate each value, a third of the registry's own work here.
	h := w.Header()
	v := make([]string, 4)
	v[0], v[1], v[2], v[3] = m.MediaType, m.Digest.String(), `"`+m.Digest.String()+`"`, strconv.Itoa(len(m.Content))
	h["Content-Type"], h["Docker-Content-Digest"], h["Etag"], h["Content-Length"] = v[0:1:1], v[1:2:2], v[2:3:3], v[3:4:4]
	if r.Method == http.MethodGet {
		rg.countPull(rt.name, m.Digest) // a GET answered 304 is a pull too: the client uses it
	}
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, m.Digest.String()) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(m.Content)
	}
	return nil
}

// acceptable reports whether a manifest of mediaType may answer a request with these Accept
// headers. Clients that name no manifest media type (or */*) take anything.
func acceptable(accept []string, mediaType string) bool {
	named := false
	for _, line := range accept {
		for part := range strings.SplitSeq(line, ",") {
			t, _, _ := strings.Cut(part, ";")
			t = strings.TrimSpace(t)
			switch {
			case t == mediaType || t == "*/*":
				return true
			case isManifestType(t):
				named = true
			}
		}
	}
	return !named
}

func isManifestType(t string) bool {
	switch t {
	case oci.MediaTypeImageManifest, oci.MediaTypeImageIndex, oci.MediaTypeDockerManifest,
		oci.MediaTypeDockerList, oci.MediaTypeDockerSchema1, oci.MediaTypeDockerSchema1S:
		return true
	}
	return false
}

// putManifest serves PUT /v2/<name>/manifests/<reference> (spec: "Pushing manifests").
func (rg *Registry) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if r.ContentLength > oci.MaxManifestSize {
		return tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(rg.body(w, r, -1), oci.MaxManifestSize+1))
	if err != nil {
		return err
	}
	if len(body) > oci.MaxManifestSize {
		return tooLarge()
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	pm, err := oci.ParseManifest(ct, body)
	if err != nil {
		return err
	}
	d := digest.SHA256.FromBytes(body)
	var tags []string
	if rt.dgst != "" {
		if got := rt.dgst.Algorithm().FromBytes(body); got != rt.dgst {
			return oci.Errorf(oci.ErrDigestInvalid, "manifest digest is %s, not %s", got, rt.dgst)
		}
		d = rt.dgst
		// Spec 1.1.1: a push by digest may name tags with ?tag= (the only way to tag a manifest
		// whose canonical digest is not sha256).
		tags = r.URL.Query()["tag"]
		for _, t := range tags {
			if !oci.ValidTag(t) {
				return oci.Errorf(oci.ErrManifestInvalid, "invalid tag %q", t).WithDetail(map[string]string{"tag": t})
			}
		}
	} else {
		tags = []string{rt.ref}
	}
	nm := &metadata.NewManifest{Manifest: metadata.Manifest{
		Digest: d, MediaType: pm.MediaType, ArtifactType: pm.ArtifactType,
		Subject: pm.Subject, Annotations: pm.Annotations, Content: body,
	}}
	for _, b := range pm.Blobs {
		if b.Foreign() {
			continue
		}
		if b.Digest == oci.EmptyJSONDigest {
			// Artifacts name it as their config, and some clients never push it.
			nm.Provided = []metadata.BlobRef{{Digest: oci.EmptyJSONDigest, Size: int64(len(oci.EmptyJSON))}}
		}
		nm.Blobs = append(nm.Blobs, b.Digest)
	}
	for _, c := range pm.Children {
		nm.Children = append(nm.Children, c.Digest)
	}
	var rules map[string]string // immutable tag -> its rule, for the message
	if rg.immutable != nil && !rt.cached {
		for _, t := range tags {
			if rule, ok := rg.immutable(rt.name, t); ok {
				if rules == nil {
					rules = map[string]string{}
				}
				rules[t] = rule
				nm.Immutable = append(nm.Immutable, t)
			}
		}
	}
	// What the tags named before, for the events of the tags this push moves. The store does
	// not say, so it is read first: a push racing this one to the same tag may make the event
	// name a previous digest that the tag held only between the two.
	var previous []oci.Digest
	if rg.publish != nil {
		previous = rg.tagTargets(ctx, rt.name, tags)
	}
	// The store checks the immutable tags in the transaction that writes them: a check here,
	// before it, would let two pushes of a new tag to two manifests both through.
	err = rg.content.PutManifest(ctx, rt.name, nm, tags...)
	var moved *metadata.TagImmutableError
	switch {
	case errors.As(err, &moved):
		return oci.Errorf(oci.ErrTagInvalid, "tag %s of %s is immutable (rule %s): it points at %s; push a new tag",
			moved.Tag, rt.name, rules[moved.Tag], moved.Current).
			WithDetail(map[string]string{"tag": moved.Tag, "rule": rules[moved.Tag], "digest": moved.Current.String()})
	case errors.Is(err, metadata.ErrBlobUnknown):
		return oci.Errorf(oci.ErrManifestBlobUnknown, "manifest references a blob unknown to the repository: %v", err)
	case errors.Is(err, metadata.ErrManifestUnknown):
		return oci.Errorf(oci.ErrManifestUnknown, "index references a manifest unknown to the repository: %v", err).
			WithStatus(http.StatusBadRequest)
	case err != nil:
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+rt.name+"/manifests/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	if pm.Subject != "" {
		h.Set("OCI-Subject", pm.Subject.String())
	}
	if rt.dgst != "" {
		for _, t := range tags {
			h.Add("OCI-Tag", t)
		}
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	rg.audit(r, "push", "repository", rt.name, "digest", d.String(), "tags", tags, "media_type", pm.MediaType)
	if rg.publish != nil {
		data := events.Data{Repository: rt.name, Digest: d, MediaType: pm.MediaType, Size: int64(len(body)),
			Actor: auth.PrincipalFrom(ctx).String()}
		if len(tags) == 0 {
			rg.publish(events.New(events.ManifestPushed, data))
		}
		// One event per tag: a push by digest may name several (?tag=).
		for _, t := range tags {
			data.Tag = t
			rg.publish(events.New(events.ManifestPushed, data))
		}
		for i, t := range tags {
			if previous[i] != "" && previous[i] != d {
				data.Tag, data.Previous = t, previous[i]
				rg.publish(events.New(events.TagMoved, data))
			}
		}
	}
	return nil
}

// tagTargets returns the digest each tag of repo names now, "" for a tag that names none (or
// that could not be read: an event is not worth failing a push for).
func (rg *Registry) tagTargets(ctx context.Context, repo string, tags []string) []oci.Digest {
	out := make([]oci.Digest, len(tags))
	for i, t := range tags {
		if m, err := rg.meta.GetManifest(ctx, repo, t); err == nil {
			out[i] = m.Digest
		}
	}
	return out
}

func tooLarge() error {
	return oci.Errorf(oci.ErrManifestInvalid, "manifest is larger than the %d MiB limit", oci.MaxManifestSize>>20).
		WithStatus(http.StatusRequestEntityTooLarge)
}

// deleteManifest serves DELETE /v2/<name>/manifests/<reference> (spec: "Deleting tags" and
// "Deleting manifests"): by digest it deletes the manifest and its tags, by tag only the tag.
func (rg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	var err error
	var tagged oci.Digest // what the deleted tag named, for its event
	if rt.dgst != "" {
		err = rg.meta.DeleteManifest(r.Context(), rt.name, rt.dgst)
	} else {
		if rg.publish != nil {
			tagged = rg.tagTargets(r.Context(), rt.name, []string{rt.ref})[0]
		}
		err = rg.meta.DeleteTag(r.Context(), rt.name, rt.ref)
	}
	if err != nil {
		return manifestErr(err, rt.ref)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	if rt.dgst != "" {
		rg.audit(r, "delete manifest", "repository", rt.name, "digest", rt.dgst.String())
	} else {
		rg.audit(r, "delete tag", "repository", rt.name, "tag", rt.ref)
	}
	if rg.publish != nil {
		data := events.Data{Repository: rt.name, Digest: rt.dgst, Actor: auth.PrincipalFrom(r.Context()).String()}
		if rt.dgst != "" {
			rg.publish(events.New(events.ManifestDeleted, data))
		} else {
			data.Tag, data.Digest = rt.ref, tagged
			rg.publish(events.New(events.TagDeleted, data))
		}
	}
	return nil
}

// upstreamFailed reports whether err says that a pull-through upstream could not answer.
func upstreamFailed(err error) bool {
	e := oci.AsError(err)
	return e != nil && (e.Code == oci.ErrUnavailable || e.Code == oci.ErrTooManyRequests)
}

func manifestErr(err error, ref string) error {
	if errors.Is(err, metadata.ErrNotFound) || errors.Is(err, metadata.ErrRepoUnknown) {
		return oci.Errorf(oci.ErrManifestUnknown, "manifest unknown to registry").WithDetail(map[string]string{"reference": ref})
	}
	if errors.Is(err, metadata.ErrReferenced) {
		// An index that lists it would no longer pull: it goes first.
		return oci.Errorf(oci.ErrDenied, "cannot delete a manifest that an index of the repository lists (delete the index first): %v", err).
			WithStatus(http.StatusConflict).WithDetail(map[string]string{"reference": ref})
	}
	return err
}
