// Package metadatatest is the conformance suite of metadata.Store: every backend runs it from its
// own tests, so that the registry can rely on the same behaviour whatever database holds it.
//
//	func TestConformance(t *testing.T) { metadatatest.Run(t, open) }
package metadatatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Run runs the suite. open returns a new, empty store; it closes the store with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) metadata.Store) {
	s := suite{open: open}
	t.Run("Blobs", s.blobs)
	t.Run("BlobVisibility", s.blobVisibility)
	t.Run("PutManifestMissingBlob", s.putManifestMissingBlob)
	t.Run("PutManifestMissingChild", s.putManifestMissingChild)
	t.Run("PutManifestProvidedBlobs", s.putManifestProvidedBlobs)
	t.Run("GetManifest", s.getManifest)
	t.Run("GetManifestNotFound", s.getManifestNotFound)
	t.Run("ManifestVisibility", s.manifestVisibility)
	t.Run("PutManifestTwice", s.putManifestTwice)
	t.Run("Index", s.index)
	t.Run("Tags", s.tags)
	t.Run("DeleteTag", s.deleteTag)
	t.Run("DeleteManifest", s.deleteManifest)
	t.Run("TagsPagination", s.tagsPagination)
	t.Run("RepositoriesPagination", s.repositoriesPagination)
	t.Run("RepoUnknown", s.repoUnknown)
	t.Run("Referrers", s.referrers)
	t.Run("ExpectedBlobs", s.expectedBlobs)
	t.Run("LinkedUnder", s.linkedUnder)
	t.Run("TagChecks", s.tagChecks)
	t.Run("Uploads", s.uploads)
	t.Run("UploadsBefore", s.uploadsBefore)
	t.Run("ConcurrentPutManifestSameTag", s.concurrentPutManifestSameTag)
	t.Run("ImmutableTags", s.immutableTags)
	t.Run("ConcurrentImmutableTag", s.concurrentImmutableTag)
	t.Run("ConcurrentNewRepository", s.concurrentNewRepository)
	t.Run("ConcurrentFirstPushes", s.concurrentFirstPushes)
	t.Run("ConcurrentPushDeleteManifest", s.concurrentPushDeleteManifest)
	s.runReferences(t)
	t.Run("GC", s.gc)
}

type suite struct {
	open func(t *testing.T) metadata.Store
}

var ctx = context.Background()

// dg is a digest for a name, so that tests read as prose.
func dg(name string) oci.Digest { return digest.FromString(name) }

// image builds an image manifest in repo whose config and layers are the given blobs; it links
// them first. Its content is unique to name.
func image(t *testing.T, s metadata.Store, repo, name string, blobs ...string) *metadata.NewManifest {
	t.Helper()
	m := &metadata.NewManifest{Manifest: metadata.Manifest{
		MediaType:    oci.MediaTypeImageManifest,
		ArtifactType: "application/vnd.oci.image.config.v1+json",
		Content:      []byte(fmt.Sprintf(`{"schemaVersion":2,"name":%q}`, name)),
	}}
	m.Digest = digest.FromBytes(m.Content)
	for _, b := range blobs {
		link(t, s, repo, dg(b), int64(len(b)))
		m.Blobs = append(m.Blobs, dg(b))
	}
	return m
}

func link(t *testing.T, s metadata.Store, repo string, d oci.Digest, size int64) {
	t.Helper()
	if err := s.LinkBlob(ctx, repo, d, size); err != nil {
		t.Fatalf("LinkBlob(%s, %s): %v", repo, d, err)
	}
}

func putManifest(t *testing.T, s metadata.Store, repo string, m *metadata.NewManifest, tags ...string) {
	t.Helper()
	if err := s.PutManifest(ctx, repo, m, tags...); err != nil {
		t.Fatalf("PutManifest(%s, %s, %v): %v", repo, m.Digest, tags, err)
	}
}

func getManifest(t *testing.T, s metadata.Store, repo, ref string) *metadata.Manifest {
	t.Helper()
	m, err := s.GetManifest(ctx, repo, ref)
	if err != nil {
		t.Fatalf("GetManifest(%s, %s): %v", repo, ref, err)
	}
	return m
}

func wantManifestNotFound(t *testing.T, s metadata.Store, repo, ref string) {
	t.Helper()
	m, err := s.GetManifest(ctx, repo, ref)
	if !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("GetManifest(%s, %s) = %v, %v; want ErrNotFound", repo, ref, m, err)
	}
}

// wantSame checks that got is the stored form of want.
func wantSame(t *testing.T, got *metadata.Manifest, want *metadata.NewManifest) {
	t.Helper()
	if got.Digest != want.Digest || got.MediaType != want.MediaType || got.ArtifactType != want.ArtifactType ||
		got.Subject != want.Subject || string(got.Content) != string(want.Content) {
		t.Errorf("manifest = {%s %q %q %q %q}, want {%s %q %q %q %q}",
			got.Digest, got.MediaType, got.ArtifactType, got.Subject, got.Content,
			want.Digest, want.MediaType, want.ArtifactType, want.Subject, want.Content)
	}
	if !maps.Equal(got.Annotations, want.Annotations) {
		t.Errorf("manifest %s annotations = %v, want %v", want.Digest, got.Annotations, want.Annotations)
	}
}

func tagsOf(t *testing.T, s metadata.Store, repo string) []string {
	t.Helper()
	tags, more, err := s.Tags(ctx, repo, metadata.Page{N: -1})
	if err != nil {
		t.Fatalf("Tags(%s): %v", repo, err)
	}
	if more {
		t.Errorf("Tags(%s, all) says there are more", repo)
	}
	if tags == nil {
		t.Errorf("Tags(%s) = nil, want a non-nil slice (it is sent as a JSON array)", repo)
	}
	return tags
}

func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func (s suite) blobs(t *testing.T) {
	st := s.open(t)
	d := dg("blob")
	if _, err := st.BlobSize(ctx, "repo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize before LinkBlob: %v; want ErrNotFound", err)
	}
	link(t, st, "repo", d, 42)
	if size, err := st.BlobSize(ctx, "repo", d); err != nil || size != 42 {
		t.Errorf("BlobSize = %d, %v; want 42", size, err)
	}
	link(t, st, "repo", d, 42) // linking again is fine
	if size, err := st.BlobSize(ctx, "repo", d); err != nil || size != 42 {
		t.Errorf("BlobSize after a second LinkBlob = %d, %v; want 42", size, err)
	}
	// A link creates the repository.
	names, _, err := st.Repositories(ctx, metadata.Page{N: -1})
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "Repositories", names, []string{"repo"})
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), nil)

	if err := st.UnlinkBlob(ctx, "repo", d); err != nil {
		t.Fatalf("UnlinkBlob: %v", err)
	}
	if _, err := st.BlobSize(ctx, "repo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize after UnlinkBlob: %v; want ErrNotFound", err)
	}
	if err := st.UnlinkBlob(ctx, "repo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("second UnlinkBlob: %v; want ErrNotFound", err)
	}
	if err := st.UnlinkBlob(ctx, "nosuchrepo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UnlinkBlob in an unknown repository: %v; want ErrNotFound", err)
	}
	if _, err := st.BlobSize(ctx, "nosuchrepo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize in an unknown repository: %v; want ErrNotFound", err)
	}
	// Linked again after an unlink; sha512 digests and empty blobs too.
	link(t, st, "repo", d, 42)
	d512 := digest.SHA512.FromString("blob")
	link(t, st, "repo", d512, 7)
	link(t, st, "repo", digest.FromString(""), 0)
	if size, err := st.BlobSize(ctx, "repo", d512); err != nil || size != 7 {
		t.Errorf("BlobSize(sha512) = %d, %v; want 7", size, err)
	}
	if size, err := st.BlobSize(ctx, "repo", digest.FromString("")); err != nil || size != 0 {
		t.Errorf("BlobSize(empty) = %d, %v; want 0", size, err)
	}
	if size, err := st.BlobSize(ctx, "repo", d); err != nil || size != 42 {
		t.Errorf("BlobSize after relinking = %d, %v; want 42", size, err)
	}
}

func (s suite) blobVisibility(t *testing.T) {
	st := s.open(t)
	d := dg("shared")
	link(t, st, "a", d, 10)
	if _, err := st.BlobSize(ctx, "b", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize in a repository it was not linked to: %v; want ErrNotFound", err)
	}
	if _, err := st.BlobSize(ctx, "a/b", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize in a nested repository: %v; want ErrNotFound", err)
	}
	link(t, st, "b", d, 10)
	if err := st.UnlinkBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	if size, err := st.BlobSize(ctx, "b", d); err != nil || size != 10 {
		t.Errorf("BlobSize in b after unlinking from a = %d, %v; want 10", size, err)
	}
	if _, err := st.BlobSize(ctx, "a", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize in a after unlinking: %v; want ErrNotFound", err)
	}
}

func (s suite) putManifestMissingBlob(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config")
	missing := dg("layer")
	link(t, st, "other", missing, 5) // in another repository it does not count
	m.Blobs = append(m.Blobs, missing)
	err := st.PutManifest(ctx, "repo", m, "latest")
	if !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a missing blob: %v; want ErrBlobUnknown", err)
	}
	if !strings.Contains(err.Error(), missing.String()) {
		t.Errorf("error %q does not name the missing blob %s", err, missing)
	}
	// Nothing of it was stored.
	wantManifestNotFound(t, st, "repo", m.Digest.String())
	wantManifestNotFound(t, st, "repo", "latest")
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), nil)

	// In a repository that does not exist yet, the failed push creates nothing visible.
	m2 := image(t, st, "repo", "m2")
	m2.Blobs = []oci.Digest{dg("nowhere")}
	if err := st.PutManifest(ctx, "new", m2, "v1"); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest in a new repository with a missing blob: %v; want ErrBlobUnknown", err)
	}
	wantManifestNotFound(t, st, "new", "v1")
	if _, _, err := st.Tags(ctx, "new", metadata.Page{N: -1}); !errors.Is(err, metadata.ErrRepoUnknown) {
		t.Errorf("Tags of a repository whose only push failed: %v; want ErrRepoUnknown", err)
	}
}

func (s suite) putManifestMissingChild(t *testing.T) {
	st := s.open(t)
	child := image(t, st, "other", "child", "config")
	putManifest(t, st, "other", child) // in another repository it does not count
	index := &metadata.NewManifest{
		Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageIndex, Content: []byte(`{"index":1}`)},
		Children: []oci.Digest{child.Digest},
	}
	index.Digest = digest.FromBytes(index.Content)
	err := st.PutManifest(ctx, "repo", index, "latest")
	if !errors.Is(err, metadata.ErrManifestUnknown) {
		t.Fatalf("PutManifest of an index with a missing child: %v; want ErrManifestUnknown", err)
	}
	if !strings.Contains(err.Error(), child.Digest.String()) {
		t.Errorf("error %q does not name the missing manifest %s", err, child.Digest)
	}
	wantManifestNotFound(t, st, "repo", index.Digest.String())
	wantManifestNotFound(t, st, "repo", "latest")
	// A blob that is linked is not a manifest.
	link(t, st, "repo", child.Digest, 10)
	if err := st.PutManifest(ctx, "repo", index); !errors.Is(err, metadata.ErrManifestUnknown) {
		t.Fatalf("PutManifest of an index whose child is only a blob: %v; want ErrManifestUnknown", err)
	}
}

// Provided blobs (the empty config the registry supplies) are linked with the manifest, in the same
// transaction: a manifest refused for another reason links nothing.
func (s suite) putManifestProvidedBlobs(t *testing.T) {
	st := s.open(t)
	empty := metadata.BlobRef{Digest: oci.EmptyJSONDigest, Size: int64(len(oci.EmptyJSON))}
	refused := image(t, st, "repo", "refused", "layer")
	refused.Blobs = append(refused.Blobs, oci.EmptyJSONDigest, dg("missing"))
	refused.Provided = []metadata.BlobRef{empty}
	if err := st.PutManifest(ctx, "repo", refused, "v0"); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a missing blob: %v; want ErrBlobUnknown", err)
	}
	if _, err := st.BlobSize(ctx, "repo", oci.EmptyJSONDigest); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("provided blob of a refused manifest is linked: %v", err)
	}
	// In a new repository too.
	if err := st.PutManifest(ctx, "new", refused); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a missing blob: %v; want ErrBlobUnknown", err)
	}
	if _, _, err := st.Tags(ctx, "new", metadata.Page{N: -1}); !errors.Is(err, metadata.ErrRepoUnknown) {
		t.Errorf("a refused manifest with provided blobs created its repository: %v", err)
	}

	m := image(t, st, "repo", "artifact", "layer")
	m.Blobs = append([]oci.Digest{oci.EmptyJSONDigest}, m.Blobs...)
	m.Provided = []metadata.BlobRef{empty}
	putManifest(t, st, "repo", m, "v1")
	if size, err := st.BlobSize(ctx, "repo", oci.EmptyJSONDigest); err != nil || size != empty.Size {
		t.Errorf("BlobSize(provided) = %d, %v; want %d", size, err, empty.Size)
	}
	wantSame(t, getManifest(t, st, "repo", "v1"), m)
	// Provided again, already linked: fine.
	m2 := image(t, st, "repo", "artifact2")
	m2.Blobs = []oci.Digest{oci.EmptyJSONDigest}
	m2.Provided = []metadata.BlobRef{empty}
	putManifest(t, st, "repo", m2, "v2")
	// Only in the repository it was provided for.
	if _, err := st.BlobSize(ctx, "other", oci.EmptyJSONDigest); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("provided blob visible in another repository: %v", err)
	}
}

func (s suite) getManifest(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "library/app", "m", "config", "layer1", "layer2")
	m.Annotations = map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "x": ""}
	m.Subject = dg("subject")
	before := time.Now()
	putManifest(t, st, "library/app", m, "v1")
	after := time.Now()
	for _, ref := range []string{"v1", m.Digest.String()} {
		got := getManifest(t, st, "library/app", ref)
		wantSame(t, got, m)
		if got.Created.Before(before.Add(-time.Minute)) || got.Created.After(after.Add(time.Minute)) {
			t.Errorf("Created = %v, want about %v", got.Created, before)
		}
	}
	// Without annotations or subject.
	m2 := image(t, st, "library/app", "m2", "config")
	m2.MediaType = oci.MediaTypeDockerManifest
	m2.ArtifactType = "application/vnd.docker.container.image.v1+json"
	putManifest(t, st, "library/app", m2)
	wantSame(t, getManifest(t, st, "library/app", m2.Digest.String()), m2)
	// A sha512 digest.
	m3 := image(t, st, "library/app", "m3", "config")
	m3.Digest = digest.SHA512.FromBytes(m3.Content)
	putManifest(t, st, "library/app", m3, "sha512")
	wantSame(t, getManifest(t, st, "library/app", m3.Digest.String()), m3)
	wantSame(t, getManifest(t, st, "library/app", "sha512"), m3)
	// Binary content survives as it is.
	m4 := image(t, st, "library/app", "m4")
	m4.Content = []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}
	m4.Digest = digest.FromBytes(m4.Content)
	putManifest(t, st, "library/app", m4)
	wantSame(t, getManifest(t, st, "library/app", m4.Digest.String()), m4)
}

func (s suite) getManifestNotFound(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config")
	putManifest(t, st, "repo", m, "v1")
	wantManifestNotFound(t, st, "repo", "v2")
	wantManifestNotFound(t, st, "repo", dg("other").String())
	wantManifestNotFound(t, st, "nosuchrepo", "v1")
	wantManifestNotFound(t, st, "nosuchrepo", m.Digest.String())
	// A blob is not a manifest.
	wantManifestNotFound(t, st, "repo", dg("config").String())
	// Tags are case-sensitive.
	wantManifestNotFound(t, st, "repo", "V1")
}

func (s suite) manifestVisibility(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "a", "m", "config")
	putManifest(t, st, "a", m, "latest")
	wantManifestNotFound(t, st, "b", m.Digest.String())
	wantManifestNotFound(t, st, "b", "latest")
	wantManifestNotFound(t, st, "a/b", "latest")
	// The same manifest in another repository is another record: deleting one keeps the other.
	link(t, st, "b", dg("config"), 6)
	putManifest(t, st, "b", m, "stable")
	if err := st.DeleteManifest(ctx, "a", m.Digest); err != nil {
		t.Fatal(err)
	}
	wantSame(t, getManifest(t, st, "b", "stable"), m)
	wantManifestNotFound(t, st, "a", m.Digest.String())
}

func (s suite) putManifestTwice(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config")
	putManifest(t, st, "repo", m, "v1")
	putManifest(t, st, "repo", m)
	putManifest(t, st, "repo", m, "v2")
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), []string{"v1", "v2"})
	wantSame(t, getManifest(t, st, "repo", "v2"), m)
}

func (s suite) index(t *testing.T) {
	st := s.open(t)
	amd := image(t, st, "repo", "amd64", "config-amd64", "layer")
	arm := image(t, st, "repo", "arm64", "config-arm64", "layer")
	putManifest(t, st, "repo", amd)
	putManifest(t, st, "repo", arm)
	index := &metadata.NewManifest{
		Manifest: metadata.Manifest{
			MediaType:   oci.MediaTypeImageIndex,
			Content:     []byte(`{"schemaVersion":2,"manifests":[]}`),
			Annotations: map[string]string{"a": "b"},
		},
		Children: []oci.Digest{amd.Digest, arm.Digest},
	}
	index.Digest = digest.FromBytes(index.Content)
	putManifest(t, st, "repo", index, "latest")
	wantSame(t, getManifest(t, st, "repo", "latest"), index)
	// An index of indexes.
	outer := &metadata.NewManifest{
		Manifest: metadata.Manifest{MediaType: oci.MediaTypeDockerList, Content: []byte(`{"outer":1}`)},
		Children: []oci.Digest{index.Digest, amd.Digest},
	}
	outer.Digest = digest.FromBytes(outer.Content)
	putManifest(t, st, "repo", outer, "outer")
	wantSame(t, getManifest(t, st, "repo", "outer"), outer)
}

func (s suite) tags(t *testing.T) {
	st := s.open(t)
	m1 := image(t, st, "repo", "m1", "config")
	m2 := image(t, st, "repo", "m2", "config")
	putManifest(t, st, "repo", m1, "latest")
	if got := getManifest(t, st, "repo", "latest"); got.Digest != m1.Digest {
		t.Fatalf("latest = %s, want %s", got.Digest, m1.Digest)
	}
	// Overwrite: the tag moves, the old manifest stays.
	putManifest(t, st, "repo", m2, "latest")
	if got := getManifest(t, st, "repo", "latest"); got.Digest != m2.Digest {
		t.Errorf("latest after overwrite = %s, want %s", got.Digest, m2.Digest)
	}
	wantSame(t, getManifest(t, st, "repo", m1.Digest.String()), m1)
	// Several tags at once, one of them already there.
	putManifest(t, st, "repo", m1, "v1", "v1.0", "latest", "v1.0.0")
	for _, tag := range []string{"v1", "v1.0", "v1.0.0", "latest"} {
		if got := getManifest(t, st, "repo", tag); got.Digest != m1.Digest {
			t.Errorf("%s = %s, want %s", tag, got.Digest, m1.Digest)
		}
	}
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), []string{"latest", "v1", "v1.0", "v1.0.0"})
	// Tags of the same name in other repositories are other tags.
	link(t, st, "other", dg("config"), 6)
	putManifest(t, st, "other", m2, "latest")
	if got := getManifest(t, st, "repo", "latest"); got.Digest != m1.Digest {
		t.Errorf("repo:latest = %s after pushing other:latest, want %s", got.Digest, m1.Digest)
	}
	// The longest tag the spec allows.
	long := strings.Repeat("x", 128)
	putManifest(t, st, "repo", m2, long)
	if got := getManifest(t, st, "repo", long); got.Digest != m2.Digest {
		t.Errorf("long tag = %s, want %s", got.Digest, m2.Digest)
	}
}

func (s suite) deleteTag(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config")
	putManifest(t, st, "repo", m, "a", "b")
	if err := st.DeleteTag(ctx, "repo", "a"); err != nil {
		t.Fatalf("DeleteTag: %v", err)
	}
	wantManifestNotFound(t, st, "repo", "a")
	wantSame(t, getManifest(t, st, "repo", "b"), m)
	wantSame(t, getManifest(t, st, "repo", m.Digest.String()), m)
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), []string{"b"})
	if err := st.DeleteTag(ctx, "repo", "a"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("second DeleteTag: %v; want ErrNotFound", err)
	}
	if err := st.DeleteTag(ctx, "nosuchrepo", "b"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteTag in an unknown repository: %v; want ErrNotFound", err)
	}
	if err := st.DeleteTag(ctx, "repo", m.Digest.String()); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteTag of a digest: %v; want ErrNotFound", err)
	}
	wantSame(t, getManifest(t, st, "repo", m.Digest.String()), m)
	// A deleted tag can be pushed again.
	putManifest(t, st, "repo", m, "a")
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), []string{"a", "b"})
}

func (s suite) deleteManifest(t *testing.T) {
	st := s.open(t)
	m1 := image(t, st, "repo", "m1", "config")
	m2 := image(t, st, "repo", "m2", "config")
	putManifest(t, st, "repo", m1, "a", "b", "c")
	putManifest(t, st, "repo", m2, "d", "c") // c moves to m2
	if err := st.DeleteManifest(ctx, "repo", m1.Digest); err != nil {
		t.Fatalf("DeleteManifest: %v", err)
	}
	wantManifestNotFound(t, st, "repo", m1.Digest.String())
	wantManifestNotFound(t, st, "repo", "a")
	wantManifestNotFound(t, st, "repo", "b")
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), []string{"c", "d"})
	wantSame(t, getManifest(t, st, "repo", "c"), m2)
	if err := st.DeleteManifest(ctx, "repo", m1.Digest); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("second DeleteManifest: %v; want ErrNotFound", err)
	}
	if err := st.DeleteManifest(ctx, "nosuchrepo", m2.Digest); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteManifest in an unknown repository: %v; want ErrNotFound", err)
	}
	if err := st.DeleteManifest(ctx, "repo", dg("config")); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteManifest of a blob: %v; want ErrNotFound", err)
	}
	// Blobs are not the manifest's: they stay linked.
	if _, err := st.BlobSize(ctx, "repo", dg("config")); err != nil {
		t.Errorf("BlobSize after DeleteManifest: %v", err)
	}
	// The repository stays, and the manifest can be pushed again.
	if err := st.DeleteManifest(ctx, "repo", m2.Digest); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "Tags", tagsOf(t, st, "repo"), nil)
	putManifest(t, st, "repo", m1, "a")
	wantSame(t, getManifest(t, st, "repo", "a"), m1)
}

// checkPages walks a listing page by page with every page size and checks it against want, which
// is in byte order.
func checkPages(t *testing.T, what string, want []string, list func(metadata.Page) ([]string, bool, error)) {
	t.Helper()
	page := func(p metadata.Page) ([]string, bool) {
		t.Helper()
		got, more, err := list(p)
		if err != nil {
			t.Fatalf("%s(%+v): %v", what, p, err)
		}
		if got == nil {
			t.Errorf("%s(%+v) = nil, want a non-nil slice (it is sent as a JSON array)", what, p)
		}
		return got, more
	}
	all, more := page(metadata.Page{N: -1})
	wantStrings(t, what+"(all)", all, want)
	if more {
		t.Errorf("%s(all): more = true", what)
	}
	for n := 1; n <= len(want)+1; n++ {
		var got []string
		last := ""
		for i := 0; ; i++ {
			if i > len(want)+1 {
				t.Fatalf("%s with n=%d does not end", what, n)
			}
			p, more := page(metadata.Page{N: n, Last: last})
			if len(p) > n {
				t.Fatalf("%s(n=%d, last=%q) = %d names", what, n, last, len(p))
			}
			got = append(got, p...)
			wantMore := len(got) < len(want)
			if more != wantMore {
				t.Errorf("%s(n=%d, last=%q): more = %v, want %v", what, n, last, more, wantMore)
			}
			if !more {
				break
			}
			if len(p) != n {
				t.Errorf("%s(n=%d, last=%q) = %d names with more = true", what, n, last, len(p))
			}
			last = p[len(p)-1]
		}
		wantStrings(t, fmt.Sprintf("%s walked with n=%d", what, n), got, want)
	}
	// n=0 is an empty page; more says whether there is anything at all.
	p, more := page(metadata.Page{N: 0})
	if len(p) != 0 || more != (len(want) > 0) {
		t.Errorf("%s(n=0) = %q, more = %v; want none, more = %v", what, p, more, len(want) > 0)
	}
	// last need not be a name in the list.
	for i, w := range want {
		before := w[:len(w)-1] // sorts just before w
		p, _ := page(metadata.Page{N: -1, Last: before})
		j := sort.SearchStrings(want, before)
		for j < len(want) && want[j] <= before {
			j++
		}
		wantStrings(t, fmt.Sprintf("%s(last=%q)", what, before), p, want[j:])
		// A last that no name can be (a client's query string may say anything) sorts as bytes.
		p, _ = page(metadata.Page{N: -1, Last: w + "\x00"})
		wantStrings(t, fmt.Sprintf("%s(last=%q)", what, w+"\x00"), p, want[i+1:])
		p, more := page(metadata.Page{N: 1, Last: w})
		if i+1 < len(want) {
			wantStrings(t, fmt.Sprintf("%s(n=1, last=%q)", what, w), p, want[i+1:i+2])
		} else if len(p) != 0 || more {
			t.Errorf("%s(n=1, last=%q) = %q, %v; want nothing", what, w, p, more)
		}
	}
	p, more = page(metadata.Page{N: 5, Last: "\xff"})
	if len(p) != 0 || more {
		t.Errorf("%s(last past the end) = %q, %v; want nothing", what, p, more)
	}
}

func (s suite) tagsPagination(t *testing.T) {
	st := s.open(t)
	// Byte order: digits, upper case, '_', lower case; '-' < '.' < digits.
	tags := []string{"latest", "v1.0", "v1-rc", "v1.0.1", "v10", "v2", "V1", "A", "Z", "_x", "0", "9", "a", "z", "v1_0", "a-b", "a.b", "a_b"}
	m := image(t, st, "repo", "m", "config")
	putManifest(t, st, "repo", m, tags[:5]...)
	for _, tag := range tags[5:] {
		putManifest(t, st, "repo", m, tag)
	}
	want := slices.Clone(tags)
	sort.Strings(want)
	checkPages(t, "Tags", want, func(p metadata.Page) ([]string, bool, error) { return st.Tags(ctx, "repo", p) })
	// Another repository's tags are not listed.
	link(t, st, "other", dg("config"), 6)
	putManifest(t, st, "other", m, "zzz", "aaa")
	checkPages(t, "Tags", want, func(p metadata.Page) ([]string, bool, error) { return st.Tags(ctx, "repo", p) })
	// A repository without tags.
	link(t, st, "empty", dg("x"), 1)
	checkPages(t, "Tags(empty)", nil, func(p metadata.Page) ([]string, bool, error) { return st.Tags(ctx, "empty", p) })
}

func (s suite) repositoriesPagination(t *testing.T) {
	st := s.open(t)
	checkPages(t, "Repositories(none)", nil, func(p metadata.Page) ([]string, bool, error) { return st.Repositories(ctx, p) })
	names := []string{"b", "a", "a/b", "a-b", "a.b", "a_b", "a/b/c", "ab", "a0", "library/ubuntu", "z", "0"}
	for i, n := range names {
		if i%2 == 0 {
			link(t, st, n, dg("blob"), 4)
		} else {
			putManifest(t, st, n, image(t, st, n, n, "config"))
		}
	}
	want := slices.Clone(names)
	sort.Strings(want)
	checkPages(t, "Repositories", want, func(p metadata.Page) ([]string, bool, error) { return st.Repositories(ctx, p) })
}

func (s suite) repoUnknown(t *testing.T) {
	st := s.open(t)
	if _, _, err := st.Tags(ctx, "nosuchrepo", metadata.Page{N: -1}); !errors.Is(err, metadata.ErrRepoUnknown) {
		t.Errorf("Tags of an unknown repository: %v; want ErrRepoUnknown", err)
	}
	if _, _, err := st.Tags(ctx, "nosuchrepo", metadata.Page{N: 10, Last: "a"}); !errors.Is(err, metadata.ErrRepoUnknown) {
		t.Errorf("Tags(n=10) of an unknown repository: %v; want ErrRepoUnknown", err)
	}
	link(t, st, "a/b", dg("x"), 1)
	for _, repo := range []string{"a", "a/", "A/B", "a/b/c"} {
		if _, _, err := st.Tags(ctx, repo, metadata.Page{N: -1}); !errors.Is(err, metadata.ErrRepoUnknown) {
			t.Errorf("Tags(%q): %v; want ErrRepoUnknown", repo, err)
		}
	}
	wantStrings(t, "Tags(a/b)", tagsOf(t, st, "a/b"), nil)
}

func (s suite) referrers(t *testing.T) {
	st := s.open(t)
	subject := image(t, st, "repo", "subject", "config")
	putManifest(t, st, "repo", subject, "latest")
	link(t, st, "repo", oci.EmptyJSONDigest, 2)

	ref := func(name, artifactType string, annotations map[string]string) *metadata.NewManifest {
		m := &metadata.NewManifest{
			Manifest: metadata.Manifest{
				MediaType:    oci.MediaTypeImageManifest,
				ArtifactType: artifactType,
				Subject:      subject.Digest,
				Annotations:  annotations,
				Content:      []byte(fmt.Sprintf(`{"schemaVersion":2,"referrer":%q}`, name)),
			},
			Blobs: []oci.Digest{oci.EmptyJSONDigest},
		}
		m.Digest = digest.FromBytes(m.Content)
		return m
	}
	sig := ref("signature", "application/vnd.example.signature", map[string]string{"org.opencontainers.image.created": "2024-05-01T00:00:00Z"})
	sbom := ref("sbom", "application/spdx+json", map[string]string{"kind": "sbom", "tool": "syft"})
	sig2 := ref("signature2", "application/vnd.example.signature", nil)
	putManifest(t, st, "repo", sig)
	putManifest(t, st, "repo", sbom, "sbom")
	putManifest(t, st, "repo", sig2)
	// An index can be a referrer too.
	idx := &metadata.NewManifest{Manifest: metadata.Manifest{
		MediaType: oci.MediaTypeImageIndex, ArtifactType: "application/vnd.example.bundle",
		Subject: subject.Digest, Content: []byte(`{"schemaVersion":2,"bundle":true}`),
	}}
	idx.Digest = digest.FromBytes(idx.Content)
	putManifest(t, st, "repo", idx)
	// Referrers in another repository, and of another subject, are not listed.
	link(t, st, "other", oci.EmptyJSONDigest, 2)
	putManifest(t, st, "other", ref("elsewhere", "application/vnd.example.signature", nil))
	unrelated := ref("unrelated", "application/vnd.example.signature", nil)
	unrelated.Subject = dg("another subject")
	putManifest(t, st, "repo", unrelated)

	desc := func(m *metadata.NewManifest) oci.Descriptor {
		return oci.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Content)),
			ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	}
	check := func(artifactType string, want ...*metadata.NewManifest) {
		t.Helper()
		got, err := st.Referrers(ctx, "repo", subject.Digest, artifactType)
		if err != nil {
			t.Fatalf("Referrers(%q): %v", artifactType, err)
		}
		if got == nil {
			t.Errorf("Referrers(%q) = nil, want a non-nil slice (it is sent as a JSON array)", artifactType)
		}
		wantDescs(t, fmt.Sprintf("Referrers(%q)", artifactType), got, want, desc)
	}
	check("", sig, sbom, sig2, idx)
	check("application/vnd.example.signature", sig, sig2)
	check("application/spdx+json", sbom)
	check("application/vnd.example.bundle", idx)
	check("application/vnd.example.none")
	check("application/vnd.example") // no prefix matching

	// A subject need not exist: referrers may be pushed before it, or outlive it.
	orphan := ref("orphan", "application/vnd.example.signature", nil)
	orphan.Subject = dg("not pushed yet")
	putManifest(t, st, "repo", orphan)
	got, err := st.Referrers(ctx, "repo", orphan.Subject, "")
	if err != nil {
		t.Fatal(err)
	}
	wantDescs(t, "Referrers(subject not pushed)", got, []*metadata.NewManifest{orphan}, desc)
	if err := st.DeleteManifest(ctx, "repo", subject.Digest); err != nil {
		t.Fatal(err)
	}
	check("", sig, sbom, sig2, idx)

	// Deleting a referrer removes it from the list.
	if err := st.DeleteManifest(ctx, "repo", sbom.Digest); err != nil {
		t.Fatal(err)
	}
	check("", sig, sig2, idx)
	check("application/spdx+json")

	// Unknown repositories and subjects without referrers have an empty list.
	for _, c := range []struct {
		repo string
		d    oci.Digest
	}{{"nosuchrepo", subject.Digest}, {"repo", dg("nothing refers to this")}, {"repo", sig.Digest}} {
		got, err := st.Referrers(ctx, c.repo, c.d, "")
		if err != nil || len(got) != 0 {
			t.Errorf("Referrers(%s, %s) = %v, %v; want an empty list", c.repo, c.d, got, err)
		}
	}
}

func wantDescs(t *testing.T, what string, got []oci.Descriptor, want []*metadata.NewManifest, desc func(*metadata.NewManifest) oci.Descriptor) {
	t.Helper()
	var w []oci.Descriptor
	for _, m := range want {
		w = append(w, desc(m))
	}
	byDigest := func(a, b oci.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) }
	got = slices.Clone(got)
	slices.SortFunc(got, byDigest)
	slices.SortFunc(w, byDigest)
	if len(got) != len(w) {
		t.Errorf("%s = %d descriptors %v, want %d %v", what, len(got), got, len(w), w)
		return
	}
	for i := range w {
		g := got[i]
		if g.MediaType != w[i].MediaType || g.Digest != w[i].Digest || g.Size != w[i].Size ||
			g.ArtifactType != w[i].ArtifactType || !maps.Equal(g.Annotations, w[i].Annotations) ||
			len(g.URLs) != 0 || len(g.Platform) != 0 {
			t.Errorf("%s[%d] = %+v, want %+v", what, i, g, w[i])
		}
	}
}

func (s suite) uploads(t *testing.T) {
	st := s.open(t)
	if err := st.CreateUpload(ctx, "library/app", "id-1"); err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	if err := st.CreateUpload(ctx, "other", "id-2"); err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	for id, want := range map[string]string{"id-1": "library/app", "id-2": "other"} {
		if repo, err := st.UploadRepo(ctx, id); err != nil || repo != want {
			t.Errorf("UploadRepo(%s) = %q, %v; want %q", id, repo, err, want)
		}
	}
	if _, err := st.UploadRepo(ctx, "id-3"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UploadRepo(unknown): %v; want ErrNotFound", err)
	}
	if _, err := st.UploadRepo(ctx, ""); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UploadRepo(\"\"): %v; want ErrNotFound", err)
	}
	if err := st.DeleteUpload(ctx, "id-1"); err != nil {
		t.Fatalf("DeleteUpload: %v", err)
	}
	if _, err := st.UploadRepo(ctx, "id-1"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UploadRepo after DeleteUpload: %v; want ErrNotFound", err)
	}
	if repo, err := st.UploadRepo(ctx, "id-2"); err != nil || repo != "other" {
		t.Errorf("UploadRepo(id-2) after deleting id-1 = %q, %v", repo, err)
	}
	if err := st.DeleteUpload(ctx, "id-1"); err != nil {
		t.Errorf("second DeleteUpload: %v; want nil", err)
	}
	if err := st.DeleteUpload(ctx, "never"); err != nil {
		t.Errorf("DeleteUpload(unknown): %v; want nil", err)
	}
}

func (s suite) uploadsBefore(t *testing.T) {
	st := s.open(t)
	list := func(before time.Time) []string {
		t.Helper()
		ids, err := st.UploadsBefore(ctx, before)
		if err != nil {
			t.Fatalf("UploadsBefore: %v", err)
		}
		return slices.Sorted(slices.Values(ids))
	}
	wantStrings(t, "UploadsBefore(no uploads)", list(time.Now().Add(time.Hour)), nil)
	start := time.Now()
	for _, id := range []string{"a1", "a2"} {
		if err := st.CreateUpload(ctx, "repo", id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // more than any backend's clock resolution
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	if err := st.CreateUpload(ctx, "other", "b1"); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "UploadsBefore(before any)", list(start.Add(-time.Hour)), nil)
	wantStrings(t, "UploadsBefore(between)", list(mid), []string{"a1", "a2"})
	wantStrings(t, "UploadsBefore(after all)", list(time.Now().Add(time.Hour)), []string{"a1", "a2", "b1"})
	if err := st.DeleteUpload(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "UploadsBefore(after a delete)", list(time.Now().Add(time.Hour)), []string{"a2", "b1"})
}

// together runs fn(0) to fn(n-1) in goroutines released at one moment, and returns their errors.
// Each first calls warm (a read) and all wait until every one has: a backend with a pool opens its
// connections when they are first needed, and without this the first writer would be done before
// the others had a connection, so that nothing raced.
func together(n int, warm func(), fn func(i int) error) []error {
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	ready.Add(n)
	start := make(chan struct{})
	for i := range n {
		done.Go(func() {
			warm()
			ready.Done()
			<-start
			errs[i] = fn(i)
		})
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// warm is a read for together.
func warm(st metadata.Store) func() {
	return func() { st.UploadRepo(ctx, "warm-up") }
}

func (s suite) concurrentPutManifestSameTag(t *testing.T) {
	st := s.open(t)
	const n = 32
	link(t, st, "repo", dg("config"), 6)
	ms := make([]*metadata.NewManifest, n)
	pushed := map[oci.Digest]bool{}
	for i := range ms {
		ms[i] = image(t, st, "repo", fmt.Sprintf("m%d", i), "config")
		pushed[ms[i].Digest] = true
	}
	errs := together(n, warm(st), func(i int) error {
		if err := st.PutManifest(ctx, "repo", ms[i], "latest", fmt.Sprintf("t%d", i)); err != nil {
			return err
		}
		// Readers see a whole manifest whatever the writers do.
		got, err := st.GetManifest(ctx, "repo", "latest")
		if err != nil {
			return fmt.Errorf("GetManifest(latest) while pushing: %w", err)
		} else if !pushed[got.Digest] || got.Digest != digest.FromBytes(got.Content) {
			return fmt.Errorf("GetManifest(latest) while pushing = %s", got.Digest)
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("PutManifest %d: %v", i, err)
		}
	}
	got := getManifest(t, st, "repo", "latest")
	if !pushed[got.Digest] {
		t.Errorf("latest = %s, which nobody pushed", got.Digest)
	}
	for i, m := range ms {
		if got := getManifest(t, st, "repo", fmt.Sprintf("t%d", i)); got.Digest != m.Digest {
			t.Errorf("t%d = %s, want %s", i, got.Digest, m.Digest)
		}
	}
	if tags := tagsOf(t, st, "repo"); len(tags) != n+1 {
		t.Errorf("%d tags, want %d", len(tags), n+1)
	}
}

// Many first pushes to the same new repository race to create it.
func (s suite) concurrentNewRepository(t *testing.T) {
	st := s.open(t)
	const n = 16
	errs := together(2*n, warm(st), func(i int) error {
		if i%2 == 0 {
			return st.LinkBlob(ctx, "new/repo", dg(fmt.Sprint(i/2)), int64(i/2))
		}
		return st.CreateUpload(ctx, "new/repo", fmt.Sprintf("upload-%d", i/2))
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("%d: %v", i, err)
		}
	}
	names, _, err := st.Repositories(ctx, metadata.Page{N: -1})
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "Repositories", names, []string{"new/repo"})
	for i := range n {
		if size, err := st.BlobSize(ctx, "new/repo", dg(fmt.Sprint(i))); err != nil || size != int64(i) {
			t.Errorf("BlobSize(%d) = %d, %v", i, size, err)
		}
	}
}

// Clients pushing whole images (blobs, then the manifest with a tag, the empty config provided by
// the registry) to the same new repository at once all succeed, into one repository.
func (s suite) concurrentFirstPushes(t *testing.T) {
	st := s.open(t)
	const n = 16
	empty := metadata.BlobRef{Digest: oci.EmptyJSONDigest, Size: int64(len(oci.EmptyJSON))}
	ms := make([]*metadata.NewManifest, n)
	for i := range ms {
		m := &metadata.NewManifest{Manifest: metadata.Manifest{
			MediaType: oci.MediaTypeImageManifest,
			Content:   []byte(fmt.Sprintf(`{"schemaVersion":2,"push":%d}`, i)),
		}}
		m.Digest = digest.FromBytes(m.Content)
		m.Blobs = []oci.Digest{oci.EmptyJSONDigest, dg("shared layer"), dg(fmt.Sprint("layer ", i))}
		m.Provided = []metadata.BlobRef{empty}
		ms[i] = m
	}
	errs := together(n, warm(st), func(i int) error {
		for _, b := range ms[i].Blobs[1:] {
			if err := st.LinkBlob(ctx, "team/new", b, 5); err != nil {
				return err
			}
		}
		return st.PutManifest(ctx, "team/new", ms[i], fmt.Sprint("v", i), "latest")
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("push %d: %v", i, err)
		}
	}
	names, _, err := st.Repositories(ctx, metadata.Page{N: -1})
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "Repositories", names, []string{"team/new"})
	for i, m := range ms {
		wantSame(t, getManifest(t, st, "team/new", fmt.Sprint("v", i)), m)
	}
	if tags := tagsOf(t, st, "team/new"); len(tags) != n+1 {
		t.Errorf("%d tags, want %d", len(tags), n+1)
	}
}

// Pushes and deletes of the same manifest at once leave no tag pointing at nothing: every listed
// tag resolves, whichever came last.
func (s suite) concurrentPushDeleteManifest(t *testing.T) {
	st := s.open(t)
	const n = 16
	m := image(t, st, "repo", "m", "config")
	putManifest(t, st, "repo", m, "keep")
	errs := together(2*n, warm(st), func(i int) error {
		if i%2 == 0 {
			return st.PutManifest(ctx, "repo", m, fmt.Sprint("t", i/2))
		}
		if err := st.DeleteManifest(ctx, "repo", m.Digest); !errors.Is(err, metadata.ErrNotFound) {
			return err
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("%d: %v", i, err)
		}
	}
	tags := tagsOf(t, st, "repo")
	for _, tag := range tags {
		if got, err := st.GetManifest(ctx, "repo", tag); err != nil || got.Digest != m.Digest {
			t.Errorf("tag %s is listed, but GetManifest = %v, %v", tag, got, err)
		}
	}
	if _, err := st.GetManifest(ctx, "repo", m.Digest.String()); err != nil && len(tags) > 0 {
		t.Errorf("tags %q are listed, but the manifest is gone: %v", tags, err)
	}
}

// tagChecks: the cache's record of when a tag was last confirmed upstream, per repository.
func (s *suite) tagChecks(t *testing.T) {
	st := s.open(t)
	if _, err := st.TagChecked(ctx, "cache/a", "latest"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("TagChecked before any check: %v, want ErrNotFound", err)
	}
	// A backend that keeps microseconds rounds up: a check is never read as older than it was.
	wantChecked := func(what string, want time.Time) {
		t.Helper()
		got, err := st.TagChecked(ctx, "cache/a", "latest")
		if err != nil || got.Before(want) || got.Sub(want) >= time.Microsecond {
			t.Fatalf("TagChecked %s = %v, %v; want %v, or less than a microsecond later", what, got, err, want)
		}
	}
	first := time.Unix(1700000000, 123)
	if err := st.SetTagChecked(ctx, "cache/a", "latest", first); err != nil {
		t.Fatal(err)
	}
	wantChecked("", first)
	later := first.Add(time.Hour)
	if err := st.SetTagChecked(ctx, "cache/a", "latest", later); err != nil {
		t.Fatal(err)
	}
	wantChecked("after update", later)
	// Whole microseconds are kept as they are.
	exact := time.Unix(1700000000, 5000)
	if err := st.SetTagChecked(ctx, "cache/a", "latest", exact); err != nil {
		t.Fatal(err)
	}
	if got, err := st.TagChecked(ctx, "cache/a", "latest"); err != nil || !got.Equal(exact) {
		t.Fatalf("TagChecked = %v, %v; want %v", got, err, exact)
	}
	if _, err := st.TagChecked(ctx, "cache/b", "latest"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("another repository's check is visible: %v", err)
	}
	if _, err := st.TagChecked(ctx, "cache/a", "other"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("another tag's check is visible: %v", err)
	}
}

// expectedBlobs: the blobs a cached manifest declares are recorded with it, unchecked, per
// repository, in the manifest's transaction; a later declaration of a digest's size wins.
func (s suite) expectedBlobs(t *testing.T) {
	st := s.open(t)
	want := func(repo string, d oci.Digest, size int64) {
		t.Helper()
		got, err := st.ExpectedBlob(ctx, repo, d)
		switch {
		case size < 0 && !errors.Is(err, metadata.ErrNotFound):
			t.Errorf("ExpectedBlob(%s, %s) = %d, %v; want ErrNotFound", repo, d, got, err)
		case size >= 0 && (err != nil || got != size):
			t.Errorf("ExpectedBlob(%s, %s) = %d, %v; want %d", repo, d, got, err, size)
		}
	}
	want("cache/app", dg("config"), -1) // unknown repository
	m := image(t, st, "cache/app", "m1")
	m.Expected = []metadata.BlobRef{{Digest: dg("config"), Size: 10}, {Digest: dg("layer"), Size: 20}}
	putManifest(t, st, "cache/app", m, "v1") // not linked: not checked
	want("cache/app", dg("config"), 10)
	want("cache/app", dg("layer"), 20)
	want("cache/app", dg("other"), -1)
	want("cache/else", dg("config"), -1)
	if _, err := st.BlobSize(ctx, "cache/app", dg("layer")); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize of an expected blob: %v; want ErrNotFound (expected is not linked)", err)
	}

	m2 := image(t, st, "cache/app", "m2")
	m2.Expected = []metadata.BlobRef{{Digest: dg("layer"), Size: 21}, {Digest: dg("layer2"), Size: 5}}
	putManifest(t, st, "cache/app", m2, "v2")
	want("cache/app", dg("layer"), 21)
	want("cache/app", dg("layer2"), 5)

	// A manifest refused for a missing blob records nothing.
	m3 := image(t, st, "cache/app", "m3")
	m3.Blobs = []oci.Digest{dg("missing")}
	m3.Expected = []metadata.BlobRef{{Digest: dg("layer3"), Size: 3}}
	if err := st.PutManifest(ctx, "cache/app", m3); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a missing blob: %v; want ErrBlobUnknown", err)
	}
	want("cache/app", dg("layer3"), -1)
}

// linkedUnder: whether any repository under a prefix links a blob, leaving out nested prefixes;
// the prefix is compared literally (no wildcards).
func (s suite) linkedUnder(t *testing.T) {
	st := s.open(t)
	d, other := dg("shared"), dg("other")
	link(t, st, "private/x", d, 1)
	link(t, st, "hub-ttl/b", d, 1)
	link(t, st, "hub/nested/c", d, 1)
	link(t, st, "hub/a", d, 1)
	link(t, st, "a_b/x", other, 1)
	want := func(d oci.Digest, prefix string, except []string, yes bool) {
		t.Helper()
		got, err := st.LinkedUnder(ctx, d, prefix, except)
		if err != nil || got != yes {
			t.Errorf("LinkedUnder(%s, %q, %q) = %v, %v; want %v", d, prefix, except, got, err, yes)
		}
	}
	want(d, "hub/", nil, true)
	want(d, "hub/", []string{"hub/nested/"}, true)
	want(d, "private/", nil, true)
	want(d, "", nil, true)
	want(d, "team/", nil, false)
	want(dg("nowhere"), "hub/", nil, false)
	if err := st.UnlinkBlob(ctx, "hub/a", d); err != nil {
		t.Fatal(err)
	}
	want(d, "hub/", []string{"hub/nested/"}, false)
	want(d, "hub/", nil, true)
	want(d, "hub/nested/", nil, true)
	want(d, "hub-ttl/", nil, true)
	want(d, "hub-ttl/", []string{"hub-ttl/b"}, false)
	want(other, "a_b/", nil, true)
	want(other, "axb/", nil, false)
	wild := dg("wild")
	link(t, st, "axb/y", wild, 1)
	link(t, st, "ab/z", wild, 1)
	want(wild, "a_b/", nil, false) // '_' is no wildcard
	want(wild, "a%/", nil, false)  // nor is '%'
	want(wild, "axb/", nil, true)
	want(other, "a_b/x", nil, true)
	want(other, "a_b/xy", nil, false)
}
