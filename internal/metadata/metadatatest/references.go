package metadatatest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// runReferences is the part of the suite about global blob records and the references that keep
// blobs and child manifests: what the garbage collector will decide from.
func (s suite) runReferences(t *testing.T) {
	t.Run("BlobRecords", s.blobRecords)
	t.Run("ManifestReferences", s.manifestReferences)
	t.Run("IndexKeepsChildren", s.indexKeepsChildren)
	t.Run("CacheManifestsReferenceNothing", s.cacheManifestsReferenceNothing)
	t.Run("ConcurrentPushDeleteReferences", s.concurrentPushDeleteReferences)
}

// wantRecord checks the global record of d; size < -1 means that there must be none.
func wantRecord(t *testing.T, st metadata.Store, d oci.Digest, size int64, links, manifests int) metadata.BlobRecord {
	t.Helper()
	rec, err := st.Blob(ctx, d)
	if size < -1 {
		if !errors.Is(err, metadata.ErrNotFound) {
			t.Errorf("Blob(%s) = %+v, %v; want ErrNotFound", d, rec, err)
		}
		return rec
	}
	if err != nil {
		t.Fatalf("Blob(%s): %v", d, err)
	}
	if rec.Size != size || rec.Links != links || rec.Manifests != manifests {
		t.Errorf("Blob(%s) = size %d, %d links, %d manifests; want %d, %d, %d",
			d, rec.Size, rec.Links, rec.Manifests, size, links, manifests)
	}
	return rec
}

func (s suite) blobRecords(t *testing.T) {
	st := s.open(t)
	d := dg("layer")
	wantRecord(t, st, d, -2, 0, 0)
	before := time.Now().Add(-time.Second) // clocks of a database server may differ a little
	if err := st.ReserveBlob(ctx, d); err != nil {
		t.Fatalf("ReserveBlob: %v", err)
	}
	first := wantRecord(t, st, d, -1, 0, 0) // reserved, not linked: no size yet
	if first.Touched.Before(before) {
		t.Errorf("Touched = %v after a reservation at %v", first.Touched, before)
	}
	// Reserving is not linking.
	if _, err := st.BlobSize(ctx, "repo", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("BlobSize of a reserved blob: %v; want ErrNotFound", err)
	}
	time.Sleep(2 * time.Millisecond)
	link(t, st, "repo", d, 5)
	linked := wantRecord(t, st, d, 5, 1, 0)
	if !linked.Touched.After(first.Touched) {
		t.Errorf("Touched did not move on LinkBlob: %v, then %v", first.Touched, linked.Touched)
	}
	link(t, st, "other", d, 5)
	link(t, st, "other", d, 5) // again: still one link there
	linked = wantRecord(t, st, d, 5, 2, 0)
	time.Sleep(2 * time.Millisecond)
	if err := st.ReserveBlob(ctx, d); err != nil { // a writer about to use the stored blob
		t.Fatal(err)
	}
	again := wantRecord(t, st, d, 5, 2, 0) // keeps its size
	if !again.Touched.After(linked.Touched) {
		t.Errorf("Touched did not move on ReserveBlob: %v, then %v", linked.Touched, again.Touched)
	}
	// Unlinked everywhere, the record stays (the collector removes it, with the bytes).
	for _, repo := range []string{"repo", "other"} {
		if err := st.UnlinkBlob(ctx, repo, d); err != nil {
			t.Fatal(err)
		}
	}
	wantRecord(t, st, d, 5, 0, 0)
	// Blobs the registry provides for a manifest are recorded with it.
	m := image(t, st, "repo", "artifact", "config")
	m.Blobs = append(m.Blobs, oci.EmptyJSONDigest)
	m.Provided = []metadata.BlobRef{{Digest: oci.EmptyJSONDigest, Size: 2}}
	putManifest(t, st, "repo", m)
	wantRecord(t, st, oci.EmptyJSONDigest, 2, 1, 1)
}

func (s suite) manifestReferences(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config", "layer")
	wantRecord(t, st, dg("layer"), int64(len("layer")), 1, 0)
	putManifest(t, st, "repo", m, "v1")
	putManifest(t, st, "repo", m, "v2") // the same manifest again references nothing more
	wantRecord(t, st, dg("layer"), int64(len("layer")), 1, 1)
	// The same manifest in another repository references the blobs again.
	m2 := image(t, st, "fork", "m", "config", "layer")
	putManifest(t, st, "fork", m2)
	wantRecord(t, st, dg("layer"), int64(len("layer")), 2, 2)
	// Unlinking a blob from a repository does not remove what its manifests reference: the
	// record stays referenced, so that a collector keeps the bytes.
	if err := st.UnlinkBlob(ctx, "repo", dg("layer")); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, st, dg("layer"), int64(len("layer")), 1, 2)
	// Untagging keeps a manifest and what it references; deleting it releases them.
	if err := st.DeleteTag(ctx, "repo", "v1"); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, st, dg("config"), int64(len("config")), 2, 2)
	if err := st.DeleteManifest(ctx, "repo", m.Digest); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, st, dg("config"), int64(len("config")), 2, 1)
	if err := st.DeleteManifest(ctx, "fork", m2.Digest); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, st, dg("config"), int64(len("config")), 2, 0)
	// A refused manifest references nothing.
	bad := image(t, st, "repo", "bad", "config")
	bad.Blobs = append(bad.Blobs, dg("missing"))
	if err := st.PutManifest(ctx, "repo", bad); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a missing blob: %v", err)
	}
	wantRecord(t, st, dg("config"), int64(len("config")), 2, 0)
	wantRecord(t, st, dg("missing"), -2, 0, 0)
}

func (s suite) indexKeepsChildren(t *testing.T) {
	st := s.open(t)
	amd := image(t, st, "repo", "amd64", "config-amd64", "layer")
	arm := image(t, st, "repo", "arm64", "config-arm64", "layer")
	putManifest(t, st, "repo", amd)
	putManifest(t, st, "repo", arm)
	index := &metadata.NewManifest{
		Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageIndex, Content: []byte(`{"index":1}`)},
		Children: []oci.Digest{amd.Digest, arm.Digest, amd.Digest}, // listed twice: one reference
	}
	index.Digest = digest.FromBytes(index.Content)
	putManifest(t, st, "repo", index, "latest")
	outer := &metadata.NewManifest{
		Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageIndex, Content: []byte(`{"outer":1}`)},
		Children: []oci.Digest{index.Digest},
	}
	outer.Digest = digest.FromBytes(outer.Content)
	putManifest(t, st, "repo", outer)

	refused := func(d, by oci.Digest) {
		t.Helper()
		err := st.DeleteManifest(ctx, "repo", d)
		if !errors.Is(err, metadata.ErrReferenced) || !strings.Contains(err.Error(), by.String()) {
			t.Errorf("DeleteManifest(%s) listed by %s: %v; want ErrReferenced naming the index", d, by, err)
		}
		getManifest(t, st, "repo", d.String()) // still there
	}
	refused(amd.Digest, index.Digest)
	refused(index.Digest, outer.Digest)
	// The same children in another repository are that repository's business.
	other := image(t, st, "other", "amd64", "config-amd64", "layer")
	putManifest(t, st, "other", other)
	if err := st.DeleteManifest(ctx, "other", other.Digest); err != nil {
		t.Errorf("DeleteManifest of a manifest listed by an index of another repository: %v", err)
	}
	// Untagging an index keeps its children; deleting it releases them, from the top down.
	if err := st.DeleteTag(ctx, "repo", "latest"); err != nil {
		t.Fatal(err)
	}
	refused(arm.Digest, index.Digest)
	for _, d := range []oci.Digest{outer.Digest, index.Digest, amd.Digest, arm.Digest} {
		if err := st.DeleteManifest(ctx, "repo", d); err != nil {
			t.Errorf("DeleteManifest(%s) once nothing lists it: %v", d, err)
		}
	}
}

func (s suite) cacheManifestsReferenceNothing(t *testing.T) {
	st := s.open(t)
	// A pull-through cache stores an upstream manifest before its blobs: it declares them
	// (Expected) and references nothing, so that nothing is recorded for blobs never fetched.
	m := image(t, st, "cache/app", "m")
	m.Expected = []metadata.BlobRef{{Digest: dg("layer"), Size: 20}}
	putManifest(t, st, "cache/app", m, "v1")
	wantRecord(t, st, dg("layer"), -2, 0, 0)
	link(t, st, "cache/app", dg("layer"), 20) // fetched later
	wantRecord(t, st, dg("layer"), 20, 1, 0)
	if err := st.DeleteManifest(ctx, "cache/app", m.Digest); err != nil {
		t.Fatal(err)
	}
}

// Pushes of manifests referencing one blob, each deleted again at once, in parallel: the count
// of references is the count of manifests left, whatever the interleaving.
func (s suite) concurrentPushDeleteReferences(t *testing.T) {
	st := s.open(t)
	const n = 16
	ms := make([]*metadata.NewManifest, n)
	for i := range n {
		ms[i] = image(t, st, "repo", "m"+string(rune('a'+i)), "shared")
	}
	var mu sync.Mutex
	kept := 0
	errs := together(n, warm(st), func(i int) error {
		if err := st.PutManifest(ctx, "repo", ms[i], "t"); err != nil {
			return err
		}
		if i%2 == 0 {
			return st.DeleteManifest(ctx, "repo", ms[i].Digest)
		}
		mu.Lock()
		kept++
		mu.Unlock()
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	wantRecord(t, st, dg("shared"), int64(len("shared")), 1, kept)
}
