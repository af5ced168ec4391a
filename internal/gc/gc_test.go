package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/content"
	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/gc"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/postgres"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	fsstore "github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/s3"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

var ctx = context.Background()

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// backend is a blob store and a metadata store as berth runs them, and a way to list the blobs
// stored that does not go through berth's code.
type backend struct {
	blobs  storage.BlobStore
	meta   metadata.Store
	stored func(t *testing.T) []oci.Digest
}

func embedded(t *testing.T) backend {
	dir := t.TempDir()
	blobs, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlite.Open(ctx, filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return backend{blobs, meta, func(t *testing.T) []oci.Digest {
		var out []oci.Digest
		err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			out = append(out, oci.Digest("sha256:"+e.Name()))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}}
}

func shared(t *testing.T) backend {
	srv := enginetest.S3(t)
	blobs, err := s3.New(ctx, s3.Options{Bucket: srv.Bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := postgres.Open(ctx, enginetest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return backend{blobs, meta, func(t *testing.T) []oci.Digest {
		var out []oci.Digest
		p := awss3.NewListObjectsV2Paginator(srv.Client(), &awss3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket), Prefix: aws.String("blobs/")})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page.Contents {
				out = append(out, oci.Digest("sha256:"+(*o.Key)[strings.LastIndex(*o.Key, "/")+1:]))
			}
		}
		return out
	}}
}

func backends(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("fs+sqlite", func(t *testing.T) { fn(t, embedded(t)) })
	t.Run("s3+postgres", func(t *testing.T) { fn(t, shared(t)) })
}

// push stores each blob through content (as the registry does) and then a manifest referencing
// them, tagged; it returns the manifest.
func push(b backend, repo, tag, name string, blobs ...[]byte) (*metadata.NewManifest, error) {
	cs := content.New(b.blobs, b.meta)
	m := &metadata.NewManifest{Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageManifest,
		Content: fmt.Appendf(nil, `{"schemaVersion":2,"name":%q}`, name), Created: time.Now()}}
	m.Digest = digest.FromBytes(m.Content)
	for _, data := range blobs {
		d := digest.FromBytes(data)
		if _, err := cs.Put(ctx, repo, d, bytes.NewReader(data)); err != nil {
			return nil, err
		}
		m.Blobs = append(m.Blobs, d)
	}
	var tags []string
	if tag != "" {
		tags = append(tags, tag)
	}
	return m, b.meta.PutManifest(ctx, repo, m, tags...)
}

func sorted(ds []oci.Digest) []oci.Digest {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return slices.Compact(ds)
}

// A pass deletes the blobs of a deleted manifest and a blob pushed alone, once the grace period
// has passed, and keeps what a manifest still references (shared blobs too); a dry run reports
// the same and deletes nothing.
func TestPass(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		shared, gone, alone := []byte("shared layer"), []byte("layer of the deleted image"), []byte("pushed alone")
		keep, err := push(b, "team/app", "v1", "keep", shared)
		if err != nil {
			t.Fatal(err)
		}
		del, err := push(b, "team/app", "v2", "delete", shared, gone)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := content.New(b.blobs, b.meta).Put(ctx, "team/app", digest.FromBytes(alone), bytes.NewReader(alone)); err != nil {
			t.Fatal(err)
		}
		if err := b.meta.DeleteManifest(ctx, "team/app", del.Digest); err != nil {
			t.Fatal(err)
		}
		// Within the grace period: nothing.
		st, err := gc.New(b.meta, b.blobs, time.Hour, quiet).Pass(ctx, false)
		if err != nil || st.Deleted != 0 {
			t.Fatalf("a pass within the grace period: %v, %v; want nothing deleted", st, err)
		}
		time.Sleep(10 * time.Millisecond)
		c := gc.New(b.meta, b.blobs, time.Millisecond, quiet)
		dry, err := c.Pass(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(len(gone) + len(alone)); dry.Deleted != 2 || dry.Bytes != want {
			t.Errorf("dry run: %v; want 2 garbage blobs of %d bytes", dry, want)
		}
		if n := len(b.stored(t)); n != 3 {
			t.Errorf("after a dry run %d blobs are stored, want all 3", n)
		}
		st, err = c.Pass(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.Deleted != dry.Deleted || st.Bytes != dry.Bytes {
			t.Errorf("the pass: %v; the dry run said %v", st, dry)
		}
		if got, want := sorted(b.stored(t)), []oci.Digest{digest.FromBytes(shared)}; !slices.Equal(got, want) {
			t.Errorf("stored after the pass: %v, want only the shared layer %v", got, want)
		}
		if _, err := b.meta.GetManifest(ctx, "team/app", "v1"); err != nil {
			t.Errorf("the kept image: %v", err)
		}
		rc, _, err := b.blobs.Open(ctx, digest.FromBytes(shared))
		if err != nil {
			t.Fatalf("the kept image's layer: %v", err)
		}
		rc.Close()
		// A second pass finds nothing left to do: what it looked at left the queue.
		if st, err := c.Pass(ctx, false); err != nil || st.Reviewed != 0 {
			t.Errorf("a second pass: %v, %v; want nothing reviewed", st, err)
		}
		_ = keep
	})
}

// A blob whose deletion fails in storage stays, record and link, and is tried again.
func TestPassStorageFails(t *testing.T) {
	b := embedded(t)
	data := []byte("alone")
	if _, err := content.New(b.blobs, b.meta).Put(ctx, "team/app", digest.FromBytes(data), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	failing := failingDelete{b.blobs}
	st, err := gc.New(b.meta, failing, time.Millisecond, quiet).Pass(ctx, false)
	if err != nil || st.Failed != 1 || st.Deleted != 0 {
		t.Fatalf("a pass whose deletes fail: %v, %v; want 1 failed", st, err)
	}
	if size, err := b.meta.BlobSize(ctx, "team/app", digest.FromBytes(data)); err != nil || size != int64(len(data)) {
		t.Errorf("the blob's link after a failed delete: %d, %v", size, err)
	}
	st, err = gc.New(b.meta, b.blobs, time.Millisecond, quiet).Pass(ctx, false)
	if err != nil || st.Deleted != 1 {
		t.Errorf("the next pass: %v, %v; want it deleted", st, err)
	}
	if n := len(b.stored(t)); n != 0 {
		t.Errorf("%d blobs stored, want none", n)
	}
}

type failingDelete struct{ storage.BlobStore }

func (failingDelete) Delete(context.Context, oci.Digest) error { return errors.New("storage says no") }

// GC racing pushes: rounds of concurrent pushes (each moving one of a few tags), deletes of
// earlier images and collector passes, with a grace period short enough that the collector
// deletes while the pushes go on. Afterwards every image whose push was acknowledged and not
// deleted is whole (manifest, blobs stored, bytes matching their digest), no manifest references
// a missing blob, and once the grace period has passed a last pass leaves stored exactly the
// blobs that manifests reference (listed from the storage directly).
func TestRacingPushes(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		const rounds = 1000
		grace := 2 * time.Second // longer than any writer's reservation-to-link on a loaded machine
		c := gc.New(b.meta, b.blobs, grace, quiet)
		var (
			mu       sync.Mutex
			alive    []*metadata.NewManifest // acknowledged, not deleted
			passes   int
			collects int
		)
		stop := make(chan struct{})
		collected := make(chan struct{})
		go func() { // the collector, continuously
			defer close(collected)
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, err := c.Pass(ctx, false)
				if err != nil {
					t.Errorf("pass: %v", err)
					return
				}
				passes++
				collects += st.Deleted
			}
		}()
		rnd := rand.New(rand.NewPCG(1, 2))
		shared := []byte("a base layer every image has")
		for i := range rounds {
			var wg sync.WaitGroup
			for w := range 2 {
				own := fmt.Appendf(nil, "layer %d/%d", i, w)
				tag := fmt.Sprintf("t%d", rnd.IntN(4))
				wg.Go(func() {
					m, err := push(b, "team/app", tag, fmt.Sprintf("image %d/%d", i, w), shared, own)
					if err != nil {
						if !errors.Is(err, metadata.ErrBlobUnknown) {
							t.Errorf("push %d/%d: %v", i, w, err)
						}
						return // refused: a blob it relied on was collected meanwhile (not acknowledged)
					}
					mu.Lock()
					alive = append(alive, m)
					mu.Unlock()
				})
			}
			mu.Lock()
			var victim *metadata.NewManifest
			if len(alive) > 4 && i%2 == 0 {
				k := rnd.IntN(len(alive) - 2)
				victim = alive[k]
				alive = slices.Delete(alive, k, k+1)
			}
			mu.Unlock()
			if victim != nil {
				wg.Go(func() {
					if err := b.meta.DeleteManifest(ctx, "team/app", victim.Digest); err != nil {
						t.Errorf("delete: %v", err)
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				break
			}
		}
		close(stop)
		<-collected
		t.Logf("%d rounds, %d images alive, %d passes deleted %d blobs meanwhile", rounds, len(alive), passes, collects)
		if collects == 0 {
			t.Error("the collector deleted nothing while the pushes went on: the race was not run")
		}
		whole := func(d oci.Digest) error {
			rc, _, err := b.blobs.Open(ctx, d)
			if err != nil {
				return err
			}
			defer rc.Close()
			v := d.Verifier()
			if _, err := io.Copy(v, rc); err != nil {
				return err
			}
			if !v.Verified() {
				return errors.New("bytes do not match the digest")
			}
			return nil
		}
		for _, m := range alive {
			if _, err := b.meta.GetManifest(ctx, "team/app", m.Digest.String()); err != nil {
				t.Errorf("acknowledged image %s: %v", m.Digest, err)
			}
			for _, d := range m.Blobs {
				if err := whole(d); err != nil {
					t.Errorf("image %s: blob %s: %v", m.Digest, d, err)
				}
			}
		}
		// Once the grace period has passed, the unreferenced blobs go, and only they.
		time.Sleep(grace + 100*time.Millisecond)
		if _, err := c.Pass(ctx, false); err != nil {
			t.Fatal(err)
		}
		var referenced []oci.Digest
		for _, m := range alive {
			referenced = append(referenced, m.Blobs...)
		}
		if got, want := sorted(b.stored(t)), sorted(referenced); !slices.Equal(got, want) {
			t.Errorf("stored after the last pass: %d blobs; the alive images reference %d", len(got), len(want))
		}
	})
}
