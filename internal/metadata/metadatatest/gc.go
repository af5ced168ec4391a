package metadatatest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// The garbage collector's part of the store: the review queue and the decision under a lock.
func (s suite) gc(t *testing.T) {
	t.Run("CollectsWhatNothingNeeds", s.gcCollects)
	t.Run("GracePeriod", s.gcGrace)
	t.Run("RemoveFails", s.gcRemoveFails)
	t.Run("CacheExpectedKeeps", s.gcCacheExpected)
	t.Run("ConcurrentPushAndCollect", s.gcConcurrentPush)
	t.Run("Usage", s.usage)
	t.Run("CachedManifests", s.cachedManifests)
	t.Run("Pulls", s.pulls)
}

// later is a cutoff after everything a test did: all of it is older than the grace period.
func later() time.Time { return time.Now().Add(time.Hour) }

func review(t *testing.T, st metadata.Store, before time.Time) []oci.Digest {
	t.Helper()
	var all []oci.Digest
	after := ""
	for {
		ds, err := st.BlobsToReview(ctx, before, after, 2) // small pages: the cursor is exercised
		if err != nil {
			t.Fatalf("BlobsToReview: %v", err)
		}
		if len(ds) == 0 {
			return all
		}
		all = append(all, ds...)
		after = ds[len(ds)-1].String()
	}
}

// collect runs CollectBlob with a remove that records that it ran.
func collect(t *testing.T, st metadata.Store, d oci.Digest, before time.Time) (garbage bool, size int64, removed bool) {
	t.Helper()
	garbage, size, err := st.CollectBlob(ctx, d, before, func(context.Context) error { removed = true; return nil })
	if err != nil {
		t.Fatalf("CollectBlob(%s): %v", d, err)
	}
	if garbage != removed {
		t.Errorf("CollectBlob(%s) = garbage %v, but remove ran: %v", d, garbage, removed)
	}
	return garbage, size, removed
}

func (s suite) gcCollects(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "repo", "m", "config", "layer") // links config and layer
	putManifest(t, st, "repo", m, "v1")
	link(t, st, "repo", dg("alone"), 5) // pushed, never referenced
	if err := st.ReserveBlob(ctx, dg("reserved")); err != nil {
		t.Fatal(err)
	}
	queued := review(t, st, later())
	want := []oci.Digest{dg("alone"), dg("config"), dg("layer"), dg("reserved")}
	slices.Sort(want)
	if !slices.Equal(queued, want) {
		t.Fatalf("queued for review: %v, want %v", queued, want)
	}
	// A dry run decides and changes nothing.
	if garbage, size, err := st.CollectBlob(ctx, dg("alone"), later(), nil); err != nil || !garbage || size != 5 {
		t.Errorf("dry run on an unreferenced blob: %v, %d, %v; want garbage of 5 bytes", garbage, size, err)
	}
	wantRecord(t, st, dg("alone"), 5, 1, 0)
	for _, d := range queued {
		collect(t, st, d, later())
	}
	wantRecord(t, st, dg("alone"), -2, 0, 0)
	wantRecord(t, st, dg("reserved"), -2, 0, 0)
	if _, err := st.BlobSize(ctx, "repo", dg("alone")); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("the link of a collected blob: %v; want ErrNotFound", err)
	}
	wantRecord(t, st, dg("layer"), int64(len("layer")), 1, 1)
	// Looked at and needed: out of the queue until released.
	if q := review(t, st, later()); len(q) != 0 {
		t.Errorf("queued after a pass: %v, want nothing", q)
	}
	// Deleting the manifest releases its blobs: queued, then collected.
	if err := st.DeleteManifest(ctx, "repo", m.Digest); err != nil {
		t.Fatal(err)
	}
	if q := review(t, st, later()); !slices.Equal(q, []oci.Digest{min(dg("config"), dg("layer")), max(dg("config"), dg("layer"))}) {
		t.Errorf("queued after the manifest's delete: %v, want its config and layer", q)
	}
	if garbage, size, _ := collect(t, st, dg("layer"), later()); !garbage || size != int64(len("layer")) {
		t.Errorf("the released layer: garbage %v, size %d", garbage, size)
	}
	wantRecord(t, st, dg("layer"), -2, 0, 0)
	// A blob linked again after that is stored anew, and queued again.
	link(t, st, "repo", dg("layer"), 5)
	if q := review(t, st, later()); !slices.Contains(q, dg("layer")) {
		t.Errorf("a blob stored again is not queued: %v", q)
	}
	// Unlinking queues too.
	link(t, st, "other", dg("kept"), 4)
	for _, d := range review(t, st, later()) {
		if d == dg("kept") {
			st.CollectBlob(ctx, d, time.Now().Add(-time.Hour), nil) // not yet: stays queued
		}
	}
	if err := st.UnlinkBlob(ctx, "other", dg("kept")); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(review(t, st, later()), dg("kept")) {
		t.Error("an unlinked blob is not queued")
	}
}

func (s suite) gcGrace(t *testing.T) {
	st := s.open(t)
	link(t, st, "repo", dg("fresh"), 5)
	// Before the grace period has passed: not even listed.
	if q := review(t, st, time.Now().Add(-time.Hour)); len(q) != 0 {
		t.Errorf("queued before the grace period: %v", q)
	}
	// Asked anyway: not garbage, and it stays queued.
	if garbage, _, _ := collect(t, st, dg("fresh"), time.Now().Add(-time.Hour)); garbage {
		t.Error("a blob linked within the grace period was collected")
	}
	wantRecord(t, st, dg("fresh"), 5, 1, 0)
	if q := review(t, st, later()); !slices.Equal(q, []oci.Digest{dg("fresh")}) {
		t.Errorf("queued: %v, want the fresh blob still", q)
	}
	// Reserved again (a writer about to use it) after the cutoff was taken: kept.
	cutoff := time.Now().Add(time.Second)
	time.Sleep(1100 * time.Millisecond)
	if err := st.ReserveBlob(ctx, dg("fresh")); err != nil {
		t.Fatal(err)
	}
	if garbage, _, _ := collect(t, st, dg("fresh"), cutoff); garbage {
		t.Error("a blob reserved after the cutoff was collected")
	}
}

func (s suite) gcRemoveFails(t *testing.T) {
	st := s.open(t)
	link(t, st, "repo", dg("blob"), 5)
	boom := errors.New("storage says no")
	if _, _, err := st.CollectBlob(ctx, dg("blob"), later(), func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("CollectBlob with a failing remove: %v; want its error", err)
	}
	wantRecord(t, st, dg("blob"), 5, 1, 0) // nothing deleted
	if !slices.Contains(review(t, st, later()), dg("blob")) {
		t.Error("a blob whose removal failed left the queue")
	}
}

func (s suite) gcCacheExpected(t *testing.T) {
	st := s.open(t)
	m := image(t, st, "cache/app", "cached")
	m.Expected = []metadata.BlobRef{{Digest: dg("layer"), Size: 5}}
	putManifest(t, st, "cache/app", m, "v1")
	link(t, st, "cache/app", dg("layer"), 5) // filled later
	if garbage, _, _ := collect(t, st, dg("layer"), later()); garbage {
		t.Error("a blob a cached manifest declares was collected")
	}
}

// A manifest pushed while the collector decides on one of its blobs: either the push comes
// first (the blob is kept) or the collection does (the push is refused: its blob is unknown);
// never a manifest referencing a blob whose record is gone.
func (s suite) gcConcurrentPush(t *testing.T) {
	st := s.open(t)
	const rounds = 100
	pushed, collected := 0, 0
	for i := range rounds {
		b := dg("layer" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
		link(t, st, "repo", b, 5)
		m := &metadata.NewManifest{Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageManifest,
			Content: []byte(`{"schemaVersion":2,"round":` + string(rune('0'+i%10)) + string(rune('a'+i/10)) + `}`)}}
		m.Digest = digest.FromBytes(m.Content)
		m.Blobs = []oci.Digest{b}
		var pushErr error
		var garbage bool
		errs := together(2, warm(st), func(j int) error {
			if j == 0 {
				pushErr = st.PutManifest(ctx, "repo", m, "t")
				return nil
			}
			var err error
			garbage, _, err = st.CollectBlob(ctx, b, later(), func(context.Context) error { return nil })
			return err
		})
		if errs[1] != nil {
			t.Fatalf("round %d: CollectBlob: %v", i, errs[1])
		}
		switch {
		case pushErr == nil && garbage:
			t.Fatalf("round %d: the manifest was pushed and its blob collected", i)
		case pushErr == nil:
			pushed++
			wantRecord(t, st, b, 5, 1, 1)
		case garbage && errors.Is(pushErr, metadata.ErrBlobUnknown):
			collected++
			wantRecord(t, st, b, -2, 0, 0)
		default:
			t.Fatalf("round %d: push %v, collected %v", i, pushErr, garbage)
		}
	}
	t.Logf("%d rounds: %d pushes first, %d collections first", rounds, pushed, collected)
}

// A quota's usage: the blobs linked to the repositories a pattern matches, each counted once;
// '_' and '%' in names are themselves, not wildcards.
func (s suite) usage(t *testing.T) {
	st := s.open(t)
	link(t, st, "team/app", dg("a"), 100)
	link(t, st, "team/api", dg("a"), 100) // the same blob: counted once
	link(t, st, "team/api", dg("b"), 20)
	link(t, st, "team/sub/deep", dg("c"), 3)
	link(t, st, "teamx", dg("d"), 1000)
	link(t, st, "other_x", dg("e"), 7)
	link(t, st, "otherzx", dg("f"), 9)
	for _, c := range []struct {
		pattern string
		d       oci.Digest
		used    int64
		has     bool
	}{
		{"team/*", "", 123, false},
		{"team/*", dg("b"), 123, true},
		{"team/*", dg("d"), 123, false},
		{"team*", dg("d"), 1123, true},
		{"team/app", dg("a"), 100, true},
		{"team/app", dg("b"), 100, false},
		{"*", "", 1139, false},
		{"other_x", "", 7, false}, // not otherzx
		{"nobody/*", dg("a"), 0, false},
	} {
		used, has, err := st.Usage(ctx, c.pattern, c.d)
		if err != nil || used != c.used || has != c.has {
			t.Errorf("Usage(%q, %s) = %d, %v, %v; want %d, %v", c.pattern, c.d, used, has, err, c.used, c.has)
		}
	}
}

// What eviction reads (a repository's manifests with their tags) and writes (the blobs an evicted
// cached image declared, forgotten and queued for collection).
func (s suite) cachedManifests(t *testing.T) {
	st := s.open(t)
	if got, err := st.ListManifests(ctx, "cache/none"); err != nil || len(got) != 0 {
		t.Errorf("ListManifests of an unknown repository = %v, %v", got, err)
	}
	m1 := image(t, st, "cache/app", "one")
	m1.Expected = []metadata.BlobRef{{Digest: dg("a"), Size: 1}, {Digest: dg("b"), Size: 1}}
	putManifest(t, st, "cache/app", m1, "v1")
	m2 := image(t, st, "cache/app", "two")
	m2.Expected = []metadata.BlobRef{{Digest: dg("b"), Size: 1}, {Digest: dg("c"), Size: 1}}
	putManifest(t, st, "cache/app", m2, "v2", "latest")
	for _, b := range []string{"a", "b", "c"} {
		link(t, st, "cache/app", dg(b), 1)
	}
	got, err := st.ListManifests(ctx, "cache/app")
	if err != nil {
		t.Fatal(err)
	}
	want := map[oci.Digest][]string{m1.Digest: {"v1"}, m2.Digest: {"latest", "v2"}}
	if len(got) != 2 {
		t.Fatalf("ListManifests = %d entries, want 2", len(got))
	}
	for i, e := range got {
		if i > 0 && e.Digest < got[i-1].Digest {
			t.Errorf("ListManifests not in digest order: %s after %s", e.Digest, got[i-1].Digest)
		}
		if !slices.Equal(e.Tags, want[e.Digest]) || e.MediaType != oci.MediaTypeImageManifest || len(e.Content) == 0 || e.Created.IsZero() {
			t.Errorf("entry %s: tags %v, media type %q, %d bytes, created %v; want tags %v", e.Digest, e.Tags, e.MediaType, len(e.Content), e.Created, want[e.Digest])
		}
	}
	if err := st.DeleteManifest(ctx, "cache/app", m1.Digest); err != nil {
		t.Fatal(err)
	}
	for _, d := range review(t, st, later()) { // out of the queue: only what ForgetExpected queues counts
		st.CollectBlob(ctx, d, time.Now().Add(-time.Hour), nil)
		if _, _, err := st.CollectBlob(ctx, d, later(), func(context.Context) error { return errors.New("keep") }); err != nil {
			t.Fatalf("blob %s collectable before ForgetExpected", d)
		}
	}
	if err := st.ForgetExpected(ctx, "cache/app", []oci.Digest{dg("a"), dg("never-stored")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ExpectedBlob(ctx, "cache/app", dg("a")); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("ExpectedBlob of a forgotten blob: %v; want ErrNotFound", err)
	}
	if _, err := st.BlobSize(ctx, "cache/app", dg("a")); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("the link of a forgotten blob: %v; want ErrNotFound", err)
	}
	if size, err := st.ExpectedBlob(ctx, "cache/app", dg("b")); err != nil || size != 1 {
		t.Errorf("ExpectedBlob of a blob still declared: %d, %v", size, err)
	}
	if garbage, _, _ := collect(t, st, dg("a"), later()); !garbage {
		t.Error("a forgotten blob is not garbage")
	}
	if garbage, _, _ := collect(t, st, dg("b"), later()); garbage {
		t.Error("a blob another cached manifest declares was collected")
	}
}

// Pull tracking: batches add up, the latest time wins, a manifest deleted meanwhile is skipped,
// and its pulls go with it.
func (s suite) pulls(t *testing.T) {
	st := s.open(t)
	m1, m2 := image(t, st, "repo", "one"), image(t, st, "repo", "two")
	putManifest(t, st, "repo", m1, "v1")
	putManifest(t, st, "repo", m2)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	t1 := t0.Add(time.Minute)
	if err := st.RecordPulls(ctx, []metadata.Pull{
		{Repo: "repo", Digest: m1.Digest, At: t1, Count: 3},
		{Repo: "repo", Digest: m2.Digest, At: t0, Count: 1},
		{Repo: "repo", Digest: dg("gone"), At: t1, Count: 5},   // no such manifest
		{Repo: "nowhere", Digest: m1.Digest, At: t1, Count: 5}, // no such repository
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordPulls(ctx, []metadata.Pull{{Repo: "repo", Digest: m1.Digest, At: t0, Count: 2}}); err != nil { // older: count only
		t.Fatal(err)
	}
	last, err := st.LastPulled(ctx, "repo")
	if err != nil {
		t.Fatal(err)
	}
	counts, err := st.PullCounts(ctx, "repo")
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 2 || !last[m1.Digest].Equal(t1) || !last[m2.Digest].Equal(t0) {
		t.Errorf("LastPulled = %v; want %s at %v and %s at %v", last, m1.Digest, t1, m2.Digest, t0)
	}
	if len(counts) != 2 || counts[m1.Digest] != 5 || counts[m2.Digest] != 1 {
		t.Errorf("PullCounts = %v; want 5 and 1", counts)
	}
	if err := st.DeleteManifest(ctx, "repo", m2.Digest); err != nil {
		t.Fatal(err)
	}
	if counts, _ := st.PullCounts(ctx, "repo"); len(counts) != 1 {
		t.Errorf("PullCounts after a delete = %v; want the deleted manifest's gone", counts)
	}
	if err := st.RecordPulls(ctx, nil); err != nil {
		t.Errorf("RecordPulls(nil): %v", err)
	}
}
