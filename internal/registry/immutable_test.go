package registry_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/oci"
)

var teamRules = config.TagRules{
	{Repositories: "team/*", Mode: config.ImmutableWithExclusion, Filters: []string{"latest", "dev-*"}},
	{Repositories: "frozen", Mode: config.Immutable},
}

// TestImmutableTags: an immutable tag does not move to another manifest (400 TAG_INVALID with a
// message naming the rule), re-pushing the manifest it names succeeds, and the tags the rule
// excludes, and repositories no rule matches, move.
func TestImmutableTags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.reg.UseTagRules(teamRules.Immutable)
	const mt = oci.MediaTypeImageManifest
	one, two := e.image(t, "team/app", "one", mt), e.image(t, "team/app", "two", mt)
	d1 := e.pushManifest(t, "team/app", "v1", mt, one)

	r := e.putManifest(t, "team/app", "v1", mt, two)
	eb := checkError(t, r, http.StatusBadRequest, oci.ErrTagInvalid)
	want := fmt.Sprintf("tag v1 of team/app is immutable (rule team/* IMMUTABLE_WITH_EXCLUSION): it points at %s; push a new tag", d1)
	if len(eb.Errors) > 0 && eb.Errors[0].Message != want {
		t.Errorf("message %q\nwant    %q", eb.Errors[0].Message, want)
	}
	if len(eb.Errors) > 0 && !strings.Contains(string(eb.Errors[0].Detail), `"digest":"`+d1.String()+`"`) {
		t.Errorf("detail %s does not name the current digest", eb.Errors[0].Detail)
	}
	e.checkManifest(t, "team/app", "v1", mt, one, d1)
	// The refused manifest was not stored either.
	if r := e.do(t, "HEAD", "/v2/team/app/manifests/"+sha256Of(two).String(), nil); r.code != http.StatusNotFound {
		t.Errorf("HEAD of the refused manifest: %d, want 404", r.code)
	}

	// The same manifest again: nothing moves, so it succeeds (ECR refuses even this).
	e.pushManifest(t, "team/app", "v1", mt, one)
	// Excluded tags move.
	for _, tag := range []string{"latest", "dev-42"} {
		e.pushManifest(t, "team/app", tag, mt, one)
		d2 := e.pushManifest(t, "team/app", tag, mt, two)
		e.checkManifest(t, "team/app", tag, mt, two, d2)
	}
	// A push by digest with ?tag= refuses as a whole: v2 is not set either.
	r = e.do(t, "PUT", "/v2/team/app/manifests/"+sha256Of(two).String()+"?tag=v2&tag=v1", two, "Content-Type", mt)
	checkError(t, r, http.StatusBadRequest, oci.ErrTagInvalid)
	if r := e.do(t, "HEAD", "/v2/team/app/manifests/v2", nil); r.code != http.StatusNotFound {
		t.Errorf("HEAD v2 after a refused push by digest: %d, want 404", r.code)
	}
	// A deleted tag may be pushed again, to anything.
	if r := e.do(t, "DELETE", "/v2/team/app/manifests/v1", nil); r.code != http.StatusAccepted {
		t.Fatalf("DELETE v1: %d %s", r.code, r.body)
	}
	e.checkManifest(t, "team/app", "v1", mt, two, e.pushManifest(t, "team/app", "v1", mt, two))

	// IMMUTABLE: every tag; the message names that rule.
	f1, f2 := e.image(t, "frozen", "one", mt), e.image(t, "frozen", "two", mt)
	e.pushManifest(t, "frozen", "latest", mt, f1)
	eb = checkError(t, e.putManifest(t, "frozen", "latest", mt, f2), http.StatusBadRequest, oci.ErrTagInvalid)
	if len(eb.Errors) > 0 && !strings.Contains(eb.Errors[0].Message, "(rule frozen IMMUTABLE)") {
		t.Errorf("message %q does not name the rule frozen IMMUTABLE", eb.Errors[0].Message)
	}
	// No rule: MUTABLE.
	o1, o2 := e.image(t, "other", "one", mt), e.image(t, "other", "two", mt)
	e.pushManifest(t, "other", "v1", mt, o1)
	e.checkManifest(t, "other", "v1", mt, o2, e.pushManifest(t, "other", "v1", mt, o2))
}

// TestImmutableTagRace: of concurrent pushes of a new immutable tag to different manifests, one
// succeeds and the others get TAG_INVALID; the tag names the one that succeeded.
func TestImmutableTagRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.reg.UseTagRules(teamRules.Immutable)
	const n, rounds = 8, 5
	const mt = oci.MediaTypeImageManifest
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = e.image(t, "team/app", fmt.Sprint("m", i), mt)
	}
	for round := range rounds {
		tag := fmt.Sprint("v", round)
		codes := make([]int, n)
		var ready, done sync.WaitGroup
		ready.Add(n)
		start := make(chan struct{})
		for i := range n {
			done.Go(func() {
				req, err := http.NewRequest("PUT", e.url+"/v2/team/app/manifests/"+tag, strings.NewReader(string(bodies[i])))
				if err != nil {
					t.Error(err)
					ready.Done()
					return
				}
				req.Header.Set("Content-Type", mt)
				ready.Done()
				<-start
				r := e.send(t, req)
				codes[i] = r.code
				if r.code != http.StatusCreated {
					checkError(t, r, http.StatusBadRequest, oci.ErrTagInvalid)
				}
			})
		}
		ready.Wait()
		close(start)
		done.Wait()
		var won []int
		for i, c := range codes {
			if c == http.StatusCreated {
				won = append(won, i)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d pushes set immutable tag %s (%v), want 1", round, len(won), tag, codes)
		}
		e.checkManifest(t, "team/app", tag, mt, bodies[won[0]], digest.FromBytes(bodies[won[0]]))
	}
}
