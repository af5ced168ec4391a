package metadatatest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// immutableTags: a push that would move an immutable tag to another manifest fails whole, one
// that points it at the manifest it names succeeds, and tags not listed as immutable move.
func (s suite) immutableTags(t *testing.T) {
	st := s.open(t)
	link(t, st, "repo", dg("config"), 6)
	m1 := image(t, st, "repo", "m1", "config")
	m1.Immutable = []string{"v1"}
	putManifest(t, st, "repo", m1, "v1", "latest")
	// Again, the same manifest: nothing moves.
	putManifest(t, st, "repo", m1, "v1", "latest")

	m2 := image(t, st, "repo", "m2", "config")
	m2.Immutable = []string{"v1"}
	m2.Provided = []metadata.BlobRef{{Digest: oci.EmptyJSONDigest, Size: 2}}
	err := st.PutManifest(ctx, "repo", m2, "other", "v1", "latest")
	var ie *metadata.TagImmutableError
	if !errors.Is(err, metadata.ErrTagImmutable) || !errors.As(err, &ie) {
		t.Fatalf("PutManifest moving immutable v1 = %v; want a TagImmutableError", err)
	}
	if ie.Tag != "v1" || ie.Current != m1.Digest {
		t.Errorf("TagImmutableError = %+v; want tag v1, current %s", ie, m1.Digest)
	}
	// Nothing of the refused push was written: not the manifest, not the other tags, not the
	// blob it provided.
	wantManifestNotFound(t, st, "repo", m2.Digest.String())
	wantManifestNotFound(t, st, "repo", "other")
	if got := getManifest(t, st, "repo", "latest"); got.Digest != m1.Digest {
		t.Errorf("latest = %s after a refused push; want %s", got.Digest, m1.Digest)
	}
	if _, err := st.BlobSize(ctx, "repo", oci.EmptyJSONDigest); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize(provided blob of a refused push) = %v; want ErrNotFound", err)
	}

	// A new immutable tag is set; tags that are not immutable move.
	m2.Immutable = []string{"v2"}
	putManifest(t, st, "repo", m2, "v2", "latest")
	if got := getManifest(t, st, "repo", "latest"); got.Digest != m2.Digest {
		t.Errorf("latest = %s; want %s", got.Digest, m2.Digest)
	}
	// The same tag without the rule moves: the store enforces what each push asks, no more.
	m2.Immutable = nil
	putManifest(t, st, "repo", m2, "v1")
	if got := getManifest(t, st, "repo", "v1"); got.Digest != m2.Digest {
		t.Errorf("v1 = %s; want %s", got.Digest, m2.Digest)
	}
	// A deleted immutable tag may be pushed again, anywhere.
	if err := st.DeleteTag(ctx, "repo", "v2"); err != nil {
		t.Fatal(err)
	}
	m1.Immutable = []string{"v2"}
	putManifest(t, st, "repo", m1, "v2")
	if got := getManifest(t, st, "repo", "v2"); got.Digest != m1.Digest {
		t.Errorf("v2 = %s; want %s", got.Digest, m1.Digest)
	}
	if tags := tagsOf(t, st, "repo"); !slices.Equal(tags, []string{"latest", "v1", "v2"}) {
		t.Errorf("tags = %v", tags)
	}
}

// concurrentImmutableTag: of pushes racing to set a new immutable tag to different manifests,
// exactly one succeeds, and the tag names its manifest; a check before the write, outside the
// transaction, lets all of them through.
func (s suite) concurrentImmutableTag(t *testing.T) {
	st := s.open(t)
	const n = 16
	link(t, st, "repo", dg("config"), 6)
	ms := make([]*metadata.NewManifest, n)
	for i := range ms {
		ms[i] = image(t, st, "repo", fmt.Sprintf("m%d", i), "config")
	}
	for round := range 10 {
		tag := fmt.Sprint("v", round)
		errs := together(n, warm(st), func(i int) error {
			m := *ms[i]
			// Mutable tags in the same push, before and after it in order, so that the two
			// kinds of tags are locked in one order whatever each push holds.
			m.Immutable = []string{tag}
			return st.PutManifest(ctx, "repo", &m, "a-latest", tag, "z-latest")
		})
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Errorf("round %d: pushes %d and %d both set immutable tag %s", round, won, i, tag)
			case err == nil:
				won = i
			case !errors.Is(err, metadata.ErrTagImmutable):
				t.Errorf("round %d: PutManifest %d: %v; want success or ErrTagImmutable", round, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no push set %s: %v", round, tag, errs)
		}
		for _, ref := range []string{tag, "a-latest", "z-latest"} {
			if got := getManifest(t, st, "repo", ref); got.Digest != ms[won].Digest {
				t.Errorf("round %d: %s = %s; want the winner's %s", round, ref, got.Digest, ms[won].Digest)
			}
		}
	}
}
