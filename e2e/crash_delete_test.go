package e2e

// The crash test's delete worker: it pushes blobs and manifests into a repository no other worker
// touches, and deletes tags, manifests and blobs there, one request at a time, so that it knows
// exactly what the repository holds after every acknowledged request. After a kill, the one request
// it had in flight (if any) may have been done or not: the verifier reads the whole repository
// back and requires it to be the state before that request or the state after it, nothing in
// between ("half-deleted"). Deleting a blob that other repositories hold (the shared contents)
// must not take it from them: the main verifier checks every blob acknowledged there.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/oci"
	blobfs "github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/sealed"
)

const crashDelRepo = "crash/deletes"

var crashDelTags = []string{"a", "b", "c"}

// crashDelState is what the delete worker's repository holds.
type crashDelState struct {
	blobs     map[string]bool   // linked blobs
	manifests map[string]bool   // manifests by digest
	tags      map[string]string // tag -> manifest digest
}

func newCrashDelState() crashDelState {
	return crashDelState{blobs: map[string]bool{}, manifests: map[string]bool{}, tags: map[string]string{}}
}

func (s crashDelState) clone() crashDelState {
	return crashDelState{blobs: maps.Clone(s.blobs), manifests: maps.Clone(s.manifests), tags: maps.Clone(s.tags)}
}

func (s crashDelState) equal(o crashDelState) bool {
	return maps.Equal(s.blobs, o.blobs) && maps.Equal(s.manifests, o.manifests) && maps.Equal(s.tags, o.tags)
}

func (s crashDelState) String() string {
	var tags []string
	for t, d := range s.tags {
		tags = append(tags, t+"="+crashShort(d))
	}
	slices.Sort(tags)
	short := func(m map[string]bool) []string {
		var out []string
		for d := range m {
			out = append(out, crashShort(d))
		}
		slices.Sort(out)
		return out
	}
	return fmt.Sprintf("blobs %v, manifests %v, tags %v", short(s.blobs), short(s.manifests), tags)
}

func crashShort(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

// crashDeletes is the delete worker's ledger. Only the worker touches it during a round, and only
// the verifier between rounds.
type crashDeletes struct {
	state     crashDelState
	pending   *crashDelOp         // the request in flight when the worker stopped
	blobs     map[string][]byte   // every blob ever pushed to the repository
	manifests map[string][]byte   // every manifest ever pushed to it
	refs      map[string][]string // manifest -> the blobs it references
	stats     map[string]int      // acknowledged requests by kind
	// After the kills: in-flight requests found done, and found not done.
	inFlightDone, inFlightNotDone int
}

// crashDelOp is a request of the delete worker and the state it leads to.
type crashDelOp struct {
	what string
	post crashDelState
}

func newCrashDeletes() *crashDeletes {
	return &crashDeletes{state: newCrashDelState(), blobs: map[string][]byte{}, manifests: map[string][]byte{},
		refs: map[string][]string{}, stats: map[string]int{}}
}

func (d *crashDeletes) summary() string {
	var parts []string
	for k, n := range d.stats {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	slices.Sort(parts)
	return fmt.Sprintf("acknowledged %s; requests in flight at a kill: %d found done, %d found not done",
		strings.Join(parts, ", "), d.inFlightDone, d.inFlightNotDone)
}

// referenced reports whether a manifest in s references blob b.
func (d *crashDeletes) referenced(s crashDelState, b string) bool {
	for m := range s.manifests {
		if slices.Contains(d.refs[m], b) {
			return true
		}
	}
	return false
}

func crashPick[V any](rng *rand.Rand, m map[string]V, keep func(string) bool) (string, bool) {
	var keys []string
	for k := range m {
		if keep == nil || keep(k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "", false
	}
	slices.Sort(keys) // map order would make BERTH_CRASH_SEED replay something else
	return keys[rng.IntN(len(keys))], true
}

// deleteStep does one request of the delete worker.
func (r *crashRun) deleteStep(rng *rand.Rand) bool {
	del := r.led.del
	st := del.state
	r.led.mu.Lock()
	r.led.repos[crashDelRepo] = true
	r.led.mu.Unlock()
	unreferenced := func(b string) bool { return !del.referenced(st, b) }
	switch n := rng.IntN(20); {
	case len(st.blobs) < 3 || n < 5:
		return r.delPushBlob(rng)
	case n < 10:
		return r.delPushManifest(rng)
	case n < 12:
		// A manifest deleted earlier comes back, by digest, when its blobs are still there.
		if m, ok := crashPick(rng, del.manifests, func(m string) bool {
			return !st.manifests[m] && !slices.ContainsFunc(del.refs[m], func(b string) bool { return !st.blobs[b] })
		}); ok {
			post := st.clone()
			post.manifests[m] = true
			return r.delDo("manifest pushed again", http.MethodPut, "/manifests/"+m, del.manifests[m], http.StatusCreated, "", post)
		}
		return r.delPushManifest(rng)
	case n < 14:
		if tag, ok := crashPick(rng, st.tags, nil); ok {
			post := st.clone()
			delete(post.tags, tag)
			return r.delDo("tag deleted", http.MethodDelete, "/manifests/"+tag, nil, http.StatusAccepted, "", post)
		}
	case n < 16:
		// Mostly a tagged one: its tags must go with it, in the same step.
		tagged := func(m string) bool { return slices.Contains(slices.Collect(maps.Values(st.tags)), m) }
		m, ok := crashPick(rng, st.manifests, tagged)
		if !ok || rng.IntN(3) == 0 {
			m, ok = crashPick(rng, st.manifests, nil)
		}
		if ok {
			post := st.clone()
			delete(post.manifests, m)
			for tag, d := range post.tags {
				if d == m {
					delete(post.tags, tag)
				}
			}
			return r.delDo("manifest deleted (with its tags)", http.MethodDelete, "/manifests/"+m, nil, http.StatusAccepted, "", post)
		}
	case n < 18:
		if b, ok := crashPick(rng, st.blobs, unreferenced); ok {
			post := st.clone()
			delete(post.blobs, b)
			return r.delDo("blob deleted", http.MethodDelete, "/blobs/"+b, nil, http.StatusAccepted, "", post)
		}
	default:
		// Deleting again what is gone: 404 with the right code, and nothing changes.
		if m, ok := crashPick(rng, del.manifests, func(m string) bool { return !st.manifests[m] }); ok && rng.IntN(2) == 0 {
			return r.delDo("deleted manifest deleted again (404)", http.MethodDelete, "/manifests/"+m, nil, http.StatusNotFound, "MANIFEST_UNKNOWN", st.clone())
		}
		if b, ok := crashPick(rng, del.blobs, func(b string) bool { return !st.blobs[b] }); ok {
			return r.delDo("deleted blob deleted again (404)", http.MethodDelete, "/blobs/"+b, nil, http.StatusNotFound, "BLOB_UNKNOWN", st.clone())
		}
	}
	return r.delPushBlob(rng)
}

// delPushBlob pushes a new blob, one of the contents other repositories share, or a blob deleted
// earlier.
func (r *crashRun) delPushBlob(rng *rand.Rand) bool {
	del := r.led.del
	kind := "blob pushed"
	var content []byte
	if b, ok := crashPick(rng, del.blobs, func(b string) bool { return !del.state.blobs[b] }); ok && rng.IntN(4) == 0 {
		content, kind = del.blobs[b], "deleted blob pushed again"
	} else if rng.IntN(5) == 0 {
		content, kind = r.common[rng.IntN(len(r.common))], "shared blob pushed"
	} else {
		content = crashRandBytes(rng, 1<<10+rng.IntN(63<<10))
	}
	d := crashDigest(content)
	del.blobs[d] = content
	post := del.state.clone()
	post.blobs[d] = true
	return r.delDo(kind, http.MethodPost, "/blobs/uploads/?digest="+d, content, http.StatusCreated, "", post)
}

// delPushManifest pushes a manifest of linked blobs, by tag, by digest, or by digest with two tags.
func (r *crashRun) delPushManifest(rng *rand.Rand) bool {
	del := r.led.del
	st := del.state
	linked := slices.Sorted(maps.Keys(st.blobs))
	if len(linked) == 0 {
		return r.delPushBlob(rng)
	}
	refs := []string{}
	for _, i := range rng.Perm(len(linked))[:min(len(linked), 1+rng.IntN(3))] {
		refs = append(refs, linked[i])
	}
	m := crashManifest{SchemaVersion: 2, MediaType: crashManifestType,
		Config: crashDesc{crashConfigType, refs[0], int64(len(del.blobs[refs[0]]))}, Layers: []crashDesc{},
		Annotations: map[string]string{"org.example.crash": fmt.Sprintf("round %d, delete worker %d", r.round, r.led.next())}}
	for _, b := range refs[1:] {
		m.Layers = append(m.Layers, crashDesc{crashLayerType, b, int64(len(del.blobs[b]))})
	}
	body, err := json.Marshal(m)
	if err != nil {
		r.t.Error(err)
		return false
	}
	d := crashDigest(body)
	del.manifests[d], del.refs[d] = body, refs
	post := st.clone()
	post.manifests[d] = true
	path := "/manifests/"
	switch p := rng.Perm(len(crashDelTags)); rng.IntN(4) {
	case 0, 1:
		path += crashDelTags[p[0]]
		post.tags[crashDelTags[p[0]]] = d
	case 2:
		path += d
	case 3:
		path += d + "?tag=" + crashDelTags[p[0]] + "&tag=" + crashDelTags[p[1]]
		post.tags[crashDelTags[p[0]]], post.tags[crashDelTags[p[1]]] = d, d
	}
	return r.delDo("manifest pushed", http.MethodPut, path, body, http.StatusCreated, "", post)
}

// delDo sends one request of the delete worker, which leads to post once acknowledged with want
// (and an error document with code, if given).
func (r *crashRun) delDo(kind, method, path string, body []byte, want int, code string, post crashDelState) bool {
	del := r.led.del
	what := fmt.Sprintf("delete worker: %s: %s /v2/%s%s", kind, method, crashDelRepo, path)
	del.pending = &crashDelOp{what: what, post: post}
	var rd io.Reader
	var hdr []string
	if body != nil {
		rd = bytes.NewReader(body)
		ct := "application/octet-stream"
		if strings.HasPrefix(path, "/manifests/") {
			ct = crashManifestType
		}
		hdr = []string{"Content-Type", ct}
	}
	resp, rb, err := crashDo(r.client, method, r.url("/v2/"+crashDelRepo+path), rd, int64(len(body)), hdr...)
	if err != nil {
		return r.broken(what, err)
	}
	if !r.expect(what, resp, rb, want) {
		return false
	}
	if code != "" && crashErrorCode(rb) != code {
		r.t.Errorf("round %d: %s: error code %q, want %s", r.round, what, crashErrorCode(rb), code)
		return false
	}
	del.state, del.pending = post, nil
	del.stats[kind]++
	return true
}

// deletes reads the delete worker's repository back and checks it against the ledger: it must be
// the state the acknowledged requests left, or, when a request was in flight at the kill, the
// state that request leads to; every blob and manifest there whole, HEAD agreeing with GET, and
// the tag list agreeing with the tags.
func (v *crashVerifier) deletes() {
	del := v.led.del
	if len(del.blobs) == 0 {
		return
	}
	got := newCrashDelState()
	repo := "/v2/" + crashDelRepo
	for _, d := range slices.Sorted(maps.Keys(del.blobs)) {
		head, _ := v.get(http.MethodHead, repo+"/blobs/"+d)
		resp, body := v.get(http.MethodGet, repo+"/blobs/"+d)
		switch {
		case head.StatusCode != resp.StatusCode:
			v.fail("HALF-DELETED blob %s@%s: HEAD %d, GET %d", crashDelRepo, d, head.StatusCode, resp.StatusCode)
		case resp.StatusCode == http.StatusOK:
			if !bytes.Equal(body, del.blobs[d]) || head.Header.Get("Content-Length") != strconv.Itoa(len(del.blobs[d])) {
				v.fail("CORRUPT blob %s@%s: %d bytes served (HEAD says %s), pushed %d", crashDelRepo, d, len(body), head.Header.Get("Content-Length"), len(del.blobs[d]))
			}
			got.blobs[d] = true
		case resp.StatusCode != http.StatusNotFound || crashErrorCode(body) != "BLOB_UNKNOWN":
			v.fail("blob %s@%s: GET %d %s, want 200 or 404 BLOB_UNKNOWN", crashDelRepo, d, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	for _, d := range slices.Sorted(maps.Keys(del.manifests)) {
		head, _ := v.get(http.MethodHead, repo+"/manifests/"+d, "Accept", crashManifestType)
		resp, body := v.get(http.MethodGet, repo+"/manifests/"+d, "Accept", crashManifestType)
		switch {
		case head.StatusCode != resp.StatusCode:
			v.fail("HALF-DELETED manifest %s@%s: HEAD %d, GET %d", crashDelRepo, d, head.StatusCode, resp.StatusCode)
		case resp.StatusCode == http.StatusOK:
			if !bytes.Equal(body, del.manifests[d]) {
				v.fail("CORRUPT manifest %s@%s: %d bytes served, pushed %d", crashDelRepo, d, len(body), len(del.manifests[d]))
			}
			got.manifests[d] = true
		case resp.StatusCode != http.StatusNotFound || crashErrorCode(body) != "MANIFEST_UNKNOWN":
			v.fail("manifest %s@%s: GET %d %s, want 200 or 404 MANIFEST_UNKNOWN", crashDelRepo, d, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	resp, body := v.get(http.MethodGet, repo+"/tags/list")
	var tl struct {
		Tags []string `json:"tags"`
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && crashErrorCode(body) == "NAME_UNKNOWN":
		// Only before anything of the repository was ever stored: a kill during its first push.
		if len(got.blobs)+len(got.manifests) > 0 {
			v.fail("tag list of %s: 404 NAME_UNKNOWN, yet it holds %s", crashDelRepo, got)
		}
	case resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tl) != nil:
		v.fail("tag list of %s: %d %s", crashDelRepo, resp.StatusCode, body)
	}
	for _, tag := range crashDelTags {
		resp, body := v.get(http.MethodGet, repo+"/manifests/"+tag, "Accept", crashManifestType)
		listed := slices.Contains(tl.Tags, tag)
		switch {
		case resp.StatusCode == http.StatusOK && listed:
			got.tags[tag] = crashDigest(body)
		case resp.StatusCode == http.StatusNotFound && !listed && crashErrorCode(body) == "MANIFEST_UNKNOWN":
		default:
			v.fail("HALF-DELETED tag %s:%s: listed %v, GET %d %s", crashDelRepo, tag, listed, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	for tag, d := range got.tags {
		if !got.manifests[d] {
			v.fail("DANGLING tag %s:%s: resolves to %s, which GET by digest does not serve", crashDelRepo, tag, d)
		}
	}
	switch {
	case got.equal(del.state):
		if del.pending != nil {
			del.inFlightNotDone++
		}
	case del.pending != nil && got.equal(del.pending.post):
		del.inFlightDone++
		del.state = del.pending.post
	default:
		pending := "none"
		if del.pending != nil {
			pending = del.pending.what + " (leading to " + del.pending.post.String() + ")"
		}
		v.fail("%s is neither as acknowledged nor as the request in flight would leave it:\n  found:        %s\n  acknowledged: %s\n  in flight:    %s",
			crashDelRepo, got, del.state, pending)
		del.state = got // judge the next round from what is there
	}
	del.pending = nil
}

// decrypter returns a function that opens a blob file of an encrypted data directory through the
// store's own reader, which verifies every segment and the digest the file is named after.
func (v *crashVerifier) decrypter() func(path, dgst string) (io.ReadCloser, error) {
	keys, err := crypt.LoadKeyring(v.keyFile, nil)
	if err != nil {
		v.t.Fatal(err)
	}
	back, err := blobfs.New(v.data)
	if err != nil {
		v.t.Fatal(err)
	}
	store, _, err := sealed.Open(context.Background(), back, keys)
	if err != nil {
		v.t.Fatal(err)
	}
	return func(_, dgst string) (io.ReadCloser, error) {
		d, err := oci.ParseDigest(dgst)
		if err != nil {
			return nil, err
		}
		rd, _, err := store.Open(context.Background(), d)
		return rd, err
	}
}
