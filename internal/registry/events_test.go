package registry_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/oci"
)

// collect makes the registry publish into a list that the returned function reads.
func (e *env) collect() func() []events.Event {
	var mu sync.Mutex
	var got []events.Event
	e.reg.UseEvents(func(ev events.Event) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev)
	})
	return func() []events.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestEvents: pushes, a tag move (and a push to the same tag that moves nothing), a push by
// digest with tags, a tag delete and a manifest delete each publish what happened.
func TestEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := e.collect()
	const repo = "team/app"
	first := e.image(t, repo, "first", oci.MediaTypeImageManifest)
	second := e.image(t, repo, "second", oci.MediaTypeImageManifest)
	d1, d2 := sha256Of(first), sha256Of(second)
	e.pushManifest(t, repo, "v1", oci.MediaTypeImageManifest, first)
	e.pushManifest(t, repo, "v1", oci.MediaTypeImageManifest, first) // the same: no move
	e.pushManifest(t, repo, "v1", oci.MediaTypeImageManifest, second)
	if r := e.putManifest(t, repo, d1.String()+"?tag=a&tag=v1", oci.MediaTypeImageManifest, first); r.code != 201 {
		t.Fatalf("push by digest: %d %s", r.code, r.body)
	}
	if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/a", nil); r.code != 202 {
		t.Fatalf("delete tag: %d %s", r.code, r.body)
	}
	if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+d2.String(), nil); r.code != 202 {
		t.Fatalf("delete manifest: %d %s", r.code, r.body)
	}
	type ev struct {
		typ, tag       string
		dgst, previous digest.Digest
	}
	want := []ev{
		{events.ManifestPushed, "v1", d1, ""},
		{events.ManifestPushed, "v1", d1, ""},
		{events.ManifestPushed, "v1", d2, ""},
		{events.TagMoved, "v1", d2, d1},
		{events.ManifestPushed, "a", d1, ""},
		{events.ManifestPushed, "v1", d1, ""},
		{events.TagMoved, "v1", d1, d2},
		{events.TagDeleted, "a", d1, ""},
		{events.ManifestDeleted, "", d2, ""},
	}
	var have []ev
	for _, x := range got() {
		have = append(have, ev{x.Type, x.Data.Tag, x.Data.Digest, x.Data.Previous})
		if x.Subject != repo || x.Data.Repository != repo || x.Data.Actor != "anonymous" {
			t.Errorf("event %+v: want subject and repository %s, actor anonymous", x, repo)
		}
		if x.Type == events.ManifestPushed && (x.Data.MediaType != oci.MediaTypeImageManifest || x.Data.Size != int64(len(first))) {
			t.Errorf("push event %+v: want the media type and size", x)
		}
	}
	if !slices.Equal(have, want) {
		t.Errorf("events:\n got %v\nwant %v", have, want)
	}
}
