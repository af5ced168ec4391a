package hot_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/hot"
	"github.com/berth/berth/internal/metadata/metadatatest"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
)

var ctx = context.Background()

func openSQLite(t *testing.T) metadata.Store {
	t.Helper()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// The decorated store is a metadata.Store like any other: the suite passes through it, with tags
// cached and without, and with a bound so small that it evicts all the time.
func TestConformance(t *testing.T) {
	for _, o := range []hot.Options{
		{Exclusive: true, MaxBytes: hot.DefaultMaxBytes},
		{Exclusive: false, MaxBytes: hot.DefaultMaxBytes},
		{Exclusive: true, MaxBytes: 2048},
	} {
		t.Run(fmt.Sprintf("exclusive=%v,max=%d", o.Exclusive, o.MaxBytes), func(t *testing.T) {
			metadatatest.Run(t, func(t *testing.T) metadata.Store { return hot.New(openSQLite(t), o) })
		})
	}
}

// counting counts the lookups that reach the store; when hold is set, each one waits for it
// after it has read, so that a test can write in between.
type counting struct {
	metadata.Store
	gets    atomic.Int64
	reached chan struct{}
	hold    chan struct{}
}

func (c *counting) GetManifest(ctx context.Context, repo, ref string) (*metadata.Manifest, error) {
	c.gets.Add(1)
	m, err := c.Store.GetManifest(ctx, repo, ref)
	if c.hold != nil {
		c.reached <- struct{}{}
		<-c.hold
	}
	return m, err
}

// push links a blob and stores a manifest with it, tagged tags.
func push(t *testing.T, s metadata.Store, repo, name string, tags ...string) *metadata.NewManifest {
	t.Helper()
	content := []byte(fmt.Sprintf(`{"schemaVersion":2,"name":%q}`, name))
	m := &metadata.NewManifest{Manifest: metadata.Manifest{
		Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, Content: content,
	}}
	if err := s.PutManifest(ctx, repo, m, tags...); err != nil {
		t.Fatal(err)
	}
	return m
}

func want(t *testing.T, s metadata.Store, repo, ref string, m *metadata.NewManifest) {
	t.Helper()
	got, err := s.GetManifest(ctx, repo, ref)
	switch {
	case m == nil && !errors.Is(err, metadata.ErrNotFound):
		t.Fatalf("GetManifest(%s, %s) = %v, %v; want ErrNotFound", repo, ref, got, err)
	case m == nil:
	case err != nil:
		t.Fatalf("GetManifest(%s, %s): %v", repo, ref, err)
	case got.Digest != m.Digest || string(got.Content) != string(m.Content):
		t.Fatalf("GetManifest(%s, %s) = %s, want %s", repo, ref, got.Digest, m.Digest)
	}
}

func TestServedFromMemory(t *testing.T) {
	inner := &counting{Store: openSQLite(t)}
	s := hot.New(inner, hot.Options{Exclusive: true, MaxBytes: hot.DefaultMaxBytes})
	m := push(t, s, "a/b", "one", "latest")
	for range 5 {
		want(t, s, "a/b", "latest", m)
		want(t, s, "a/b", m.Digest.String(), m)
	}
	if n := inner.gets.Load(); n != 2 {
		t.Errorf("the store was asked %d times, want 2 (once per reference)", n)
	}
	// What callers get is theirs: changing it changes nothing for the next caller.
	got, _ := s.GetManifest(ctx, "a/b", "latest")
	got.Digest, got.MediaType = "sha256:x", "x"
	want(t, s, "a/b", "latest", m)
	// Misses are not kept: a manifest stored later is found.
	want(t, s, "a/b", "later", nil)
	want(t, s, "c/d", "latest", nil)
	later := push(t, s, "a/b", "later", "later")
	want(t, s, "a/b", "later", later)
}

// Every write that changes what a lookup returns drops it.
func TestInvalidation(t *testing.T) {
	s := hot.New(openSQLite(t), hot.Options{Exclusive: true, MaxBytes: hot.DefaultMaxBytes})
	one := push(t, s, "a/b", "one", "latest", "stable")
	want(t, s, "a/b", "latest", one)
	want(t, s, "a/b", "stable", one)
	want(t, s, "a/b", one.Digest.String(), one)
	push(t, s, "c/d", "one", "latest")
	want(t, s, "c/d", "latest", one)

	// A push moves a tag.
	two := push(t, s, "a/b", "two", "latest")
	want(t, s, "a/b", "latest", two)
	want(t, s, "a/b", "stable", one)

	// A tag delete.
	if err := s.DeleteTag(ctx, "a/b", "latest"); err != nil {
		t.Fatal(err)
	}
	want(t, s, "a/b", "latest", nil)
	want(t, s, "a/b", two.Digest.String(), two)

	// A manifest delete takes the tags that point at it along.
	if err := s.DeleteManifest(ctx, "a/b", one.Digest); err != nil {
		t.Fatal(err)
	}
	want(t, s, "a/b", "stable", nil)
	want(t, s, "a/b", one.Digest.String(), nil)
	want(t, s, "a/b", two.Digest.String(), two)
	want(t, s, "c/d", "latest", one) // another repository's copy stays
	want(t, s, "c/d", one.Digest.String(), one)
}

// Without Exclusive, other processes may move tags: a tag is looked up in the store every time,
// and only digests are kept (local deletes still drop them).
func TestShared(t *testing.T) {
	inner := &counting{Store: openSQLite(t)}
	s := hot.New(inner, hot.Options{MaxBytes: hot.DefaultMaxBytes})
	one := push(t, s, "a/b", "one", "latest")
	want(t, s, "a/b", "latest", one)
	two := push(t, inner.Store, "a/b", "two", "latest") // another replica
	want(t, s, "a/b", "latest", two)
	inner.gets.Store(0)
	for range 3 {
		want(t, s, "a/b", one.Digest.String(), one)
		want(t, s, "a/b", "latest", two)
	}
	if n := inner.gets.Load(); n != 4 {
		t.Errorf("the store was asked %d times, want 4 (1 for the digest, 3 for the tag)", n)
	}
	if err := s.DeleteManifest(ctx, "a/b", one.Digest); err != nil {
		t.Fatal(err)
	}
	want(t, s, "a/b", one.Digest.String(), nil)
}

// A lookup that read the store before a write and returns after it must not leave what it read
// in memory: the write has dropped it, and keeping it would serve the old manifest for good.
func TestReadRacingWrite(t *testing.T) {
	for _, write := range []struct {
		name string
		do   func(s metadata.Store) (*metadata.NewManifest, error)
	}{
		{"PutManifest", func(s metadata.Store) (*metadata.NewManifest, error) {
			content := []byte(`{"schemaVersion":2,"name":"two"}`)
			m := &metadata.NewManifest{Manifest: metadata.Manifest{
				Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, Content: content}}
			return m, s.PutManifest(ctx, "a/b", m, "latest")
		}},
		{"DeleteTag", func(s metadata.Store) (*metadata.NewManifest, error) {
			return nil, s.DeleteTag(ctx, "a/b", "latest")
		}},
	} {
		t.Run(write.name, func(t *testing.T) {
			inner := &counting{Store: openSQLite(t)}
			s := hot.New(inner, hot.Options{Exclusive: true, MaxBytes: hot.DefaultMaxBytes})
			one := push(t, s, "a/b", "one", "latest")
			inner.reached, inner.hold = make(chan struct{}), make(chan struct{})
			done := make(chan *metadata.Manifest)
			go func() {
				m, _ := s.GetManifest(ctx, "a/b", "latest")
				done <- m
			}()
			<-inner.reached // the lookup has read "one" from the store
			now, err := write.do(s)
			if err != nil {
				t.Fatal(err)
			}
			close(inner.hold)
			if got := <-done; got == nil || got.Digest != one.Digest {
				t.Fatalf("the racing lookup returned %v, want what it read (%s)", got, one.Digest)
			}
			inner.hold = nil
			want(t, s, "a/b", "latest", now)
		})
	}
}

// The cache stays within its bound, evicting the least recently used lookups, and what is left
// is right.
func TestBound(t *testing.T) {
	const max = 16 << 10
	s := hot.New(openSQLite(t), hot.Options{Exclusive: true, MaxBytes: max})
	var ms []*metadata.NewManifest
	for i := range 100 {
		ms = append(ms, push(t, s, "a/b", fmt.Sprint(i), fmt.Sprint("t", i)))
	}
	for round := range 3 {
		for i, m := range ms {
			want(t, s, "a/b", fmt.Sprint("t", i), m)
			if n, size := s.Len(); size > max {
				t.Fatalf("round %d: %d entries take %d bytes, over the bound %d", round, n, size, max)
			}
		}
	}
	if n, _ := s.Len(); n == 0 {
		t.Error("nothing kept")
	}
}

// Every method of metadata.Store either cannot change what GetManifest returns, or is one of
// those TestInvalidation shows the Store drops entries in. A method added to the interface must
// be sorted here, so that the cache cannot go stale by a write it does not know of.
func TestEveryMethodConsidered(t *testing.T) {
	sorted := map[string]bool{
		// Writes of manifests and tags: hot.Store overrides them (TestInvalidation).
		"PutManifest": true, "DeleteManifest": true, "DeleteTag": true,
		"GetManifest": true, "Close": true,
		// Blob links are not what a manifest lookup reads.
		"ReserveBlob": true, "LinkBlob": true, "Blob": true, "BlobSize": true, "UnlinkBlob": true, "ExpectedBlob": true, "LinkedUnder": true,
		"Tags": true, "Repositories": true, "Referrers": true,
		"TagChecked": true, "SetTagChecked": true,
		"CreateUpload": true, "UploadRepo": true, "UploadsBefore": true, "DeleteUpload": true,
		// Garbage collection and eviction read and delete blob records and links, and cached
		// blobs' expected sizes, never manifests or tags (eviction deletes manifests through
		// DeleteManifest); quotas and eviction read.
		"BlobsToReview": true, "CollectBlob": true, "ForgetExpected": true, "ListManifests": true, "Usage": true,
		// Pull tracking writes a table of its own.
		"RecordPulls": true, "LastPulled": true, "PullCounts": true,
	}
	it := reflect.TypeFor[metadata.Store]()
	for i := range it.NumMethod() {
		if name := it.Method(i).Name; !sorted[name] {
			t.Errorf("metadata.Store.%s is new: decide whether it changes what GetManifest returns, and sort it in this test", name)
		}
	}
}
