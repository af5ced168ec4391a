package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// generator returns size bytes that depend on seed, made as they are read: no slice holds them.
func generator(seed byte, size int64) io.Reader {
	return io.LimitReader(&pattern{x: uint64(seed) + 1}, size)
}

type pattern struct{ x uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13 // xorshift: cheap, and not periodic at any size a test uses
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

func digestOf(t *testing.T, r io.Reader) oci.Digest {
	t.Helper()
	d, err := digest.SHA256.FromReader(r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func putGenerated(t *testing.T, s *Store, seed byte, size int64) oci.Digest {
	t.Helper()
	d := digestOf(t, generator(seed, size))
	if n, err := s.Put(context.Background(), d, generator(seed, size)); err != nil || n != size {
		t.Fatalf("Put of %d bytes = %d, %v", size, n, err)
	}
	return d
}

// sessionObjects lists session id's objects other than its state, through a client of its own.
func sessionObjects(t *testing.T, c *s3.Client, bucket, id string) map[string]int64 {
	t.Helper()
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String("berth/test/uploads/" + id + "/")})
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]int64{}
	for _, o := range out.Contents {
		if name := aws.ToString(o.Key); !strings.HasSuffix(name, "/state") {
			objs[name[strings.LastIndex(name, "/")+1:]] = aws.ToInt64(o.Size)
		}
	}
	return objs
}

// TestSmallChunksAcrossStores: chunks under S3's 5 MiB part minimum, each sent to another store
// on the bucket (as a client's chunks reach any replica), fold into parts of at least 5 MiB.
func TestSmallChunksAcrossStores(t *testing.T) {
	ctx := context.Background()
	a, srv := newStore(t)
	b := open(t, options(srv))
	c := srv.Client()
	const chunk = 1536 << 10 // 1.5 MiB
	data := make([]byte, 8*chunk+12345)
	generator(3, int64(len(data))).Read(data)

	u, err := a.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	u.Close()
	for i, off := 0, 0; off < len(data); i++ {
		st := []*Store{a, b}[i%2]
		end := min(off+chunk, len(data))
		u, err := st.ResumeUpload(ctx, id)
		if err != nil {
			t.Fatalf("chunk %d: ResumeUpload: %v", i, err)
		}
		if got := u.Size(); got != int64(off) {
			t.Fatalf("chunk %d: Size = %d, want %d", i, got, off)
		}
		if n, err := u.AppendAt(ctx, bytes.NewReader(data[off:end]), int64(off)); err != nil || n != int64(end-off) {
			t.Fatalf("chunk %d: AppendAt = %d, %v", i, n, err)
		}
		u.Close()
		off = end
		// Every object but the last is a valid multipart part, and only the state names them:
		// no tail that was folded is left behind.
		objs := sessionObjects(t, c, srv.Bucket, id)
		var total, small int64
		for _, size := range objs {
			total += size
			if size < MinPartSize {
				small++
			}
		}
		if total != int64(off) || small > 1 {
			t.Fatalf("after chunk %d: objects %v hold %d bytes (want %d), %d under 5 MiB (want at most 1)", i, objs, total, off, small)
		}
	}
	u, err = b.ResumeUpload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	d := digest.FromBytes(data)
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	r, size, err := a.Open(ctx, d)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Open = %d, %v", size, err)
	}
	defer r.Close()
	if got := digestOf(t, r); got != d {
		t.Errorf("blob read back has digest %s, want %s", got, d)
	}
	if objs := sessionObjects(t, c, srv.Bucket, id); len(objs) != 0 {
		t.Errorf("objects of the committed session left: %v", objs)
	}
}

// TestAppendAtRaceAcrossStores: chunks for the same offset sent at once to different stores (no
// lock in common) are taken exactly once, and what is committed is the winner's chunk.
func TestAppendAtRaceAcrossStores(t *testing.T) {
	ctx := context.Background()
	first, srv := newStore(t)
	u, err := first.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	head := []byte("the chunk before the race; ")
	if _, err := u.Append(ctx, bytes.NewReader(head)); err != nil {
		t.Fatal(err)
	}
	const racers = 6
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		st := open(t, options(srv))
		h, err := st.ResumeUpload(ctx, u.ID())
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		wg.Go(func() {
			<-start
			_, errs[i] = h.AppendAt(ctx, strings.NewReader(fmt.Sprintf("racer %d's chunk", i)), int64(len(head)))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("racers %d and %d both took offset %d", winner, i, len(head))
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrOffset):
			t.Errorf("racer %d: %v; want ErrOffset", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racer took the offset")
	}
	want := string(head) + fmt.Sprintf("racer %d's chunk", winner)
	if err := u.Commit(ctx, digest.FromString(want)); err != nil {
		t.Fatalf("Commit of the winner's content: %v", err)
	}
}

// TestPurgeAbortsAbandonedMultipart: a multipart upload that a Put killed between two parts left
// is aborted by PurgeUploads, and only once it is older than the cut-off; one under another
// prefix (not this store's) is left alone.
func TestPurgeAbortsAbandonedMultipart(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	c := srv.Client()
	// What Put does until it is killed: a multipart upload of the blob key with one part.
	d := digest.FromString("a blob whose Put never finished")
	mp, err := s.createMultipart(ctx, s.blobKey(d))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.uploadPart(ctx, mp, 1, make([]byte, MinPartSize)); err != nil {
		t.Fatal(err)
	}
	other := "elsewhere/" + d.Encoded()
	out, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &srv.Bucket, Key: &other})
	if err != nil {
		t.Fatal(err)
	}
	defer c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &srv.Bucket, Key: &other, UploadId: out.UploadId})

	pending := func() []string {
		t.Helper()
		out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &srv.Bucket})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, u := range out.Uploads {
			keys = append(keys, aws.ToString(u.Key))
		}
		return keys
	}
	if got := pending(); len(got) != 2 {
		t.Fatalf("multipart uploads before the purge: %q, want 2", got)
	}
	if _, err := s.PurgeUploads(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := pending(); len(got) != 2 {
		t.Fatalf("multipart uploads after a purge of an hour ago: %q, want both", got)
	}
	if _, err := s.PurgeUploads(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := pending(); len(got) != 1 || got[0] != other {
		t.Fatalf("multipart uploads after the purge: %q, want only %q", got, other)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat of the abandoned blob: %v; want ErrNotFound", err)
	}
}

// TestLargePutStreams: a blob of several parts goes through a multipart upload, from a reader
// that makes its bytes as they are read, with one part in memory.
func TestLargePutStreams(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	const size = 40 << 20 // 8 parts of 5 MiB
	d := digestOf(t, generator(9, size))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if n, err := s.Put(ctx, d, generator(9, size)); err != nil || n != size {
		t.Fatalf("Put = %d, %v", n, err)
	}
	runtime.ReadMemStats(&after)
	// One 5 MiB part buffer, and what the HTTP client allocates; the whole blob would be 40 MiB.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("Put of %d bytes allocated %d bytes", size, alloc)
	if alloc > size/2 {
		t.Errorf("Put of %d bytes allocated %d bytes: it held more than a part", size, alloc)
	}
	head, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &srv.Bucket, Key: aws.String(s.blobKey(d))})
	if err != nil {
		t.Fatal(err)
	}
	if etag := aws.ToString(head.ETag); !strings.HasSuffix(strings.Trim(etag, `"`), "-8") {
		t.Errorf("ETag %s: want that of a multipart upload of 8 parts", etag)
	}
	r, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := digestOf(t, r); got != d {
		t.Errorf("read back %s, want %s", got, d)
	}
	// A mismatch found after the last part is aborted: nothing visible, nothing pending.
	wrong := digest.FromString("not these bytes")
	if _, err := s.Put(ctx, wrong, generator(9, size)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("Put under a wrong digest: %v; want ErrDigestMismatch", err)
	}
	if _, err := s.Stat(ctx, wrong); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after a mismatch: %v; want ErrNotFound", err)
	}
	// So is one whose body fails after two parts were sent.
	failing := io.MultiReader(generator(10, 2*MinPartSize+1), iotest.ErrReader(errors.New("connection reset")))
	if _, err := s.Put(ctx, wrong, failing); err == nil || errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("Put from a reader that fails: %v; want its error", err)
	}
	mps, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &srv.Bucket})
	if err != nil || len(mps.Uploads) != 0 {
		t.Errorf("multipart uploads left after a mismatch and a failed read: %d, %v", len(mps.Uploads), err)
	}
}

// TestServerSideEncryptionHeaders: with ServerSideEncryption set, every request that creates an
// object (PutObject, CreateMultipartUpload, CopyObject) asks for it. versitygw ignores these
// headers (it never reads them), so what is checked is what berth sends, not what S3 does.
func TestServerSideEncryptionHeaders(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ sse, kms string }{{"AES256", ""}, {"aws:kms", "alias/berth-test"}} {
		t.Run(tc.sse, func(t *testing.T) {
			srv := enginetest.S3(t)
			o := options(srv)
			o.ServerSideEncryption, o.KMSKeyID = tc.sse, tc.kms
			s := open(t, o)
			requests := recordRequests(s)
			putGenerated(t, s, 1, 1000)          // PutObject
			putGenerated(t, s, 2, 2*MinPartSize) // multipart
			for _, size := range []int64{1000, MinPartSize + 1} {
				u, err := s.NewUpload(ctx) // state: PutObject
				if err != nil {
					t.Fatal(err)
				}
				if _, err := u.Append(ctx, generator(3, size)); err != nil {
					t.Fatal(err)
				}
				// One object: CopyObject; two: a multipart copy.
				if err := u.Commit(ctx, digestOf(t, generator(3, size))); err != nil {
					t.Fatal(err)
				}
				u.Close()
			}
			seen := map[string]int{}
			for _, r := range requests() {
				switch r.op {
				case "PutObject", "CreateMultipartUpload", "CopyObject":
					seen[r.op]++
					if got := r.header.Get("X-Amz-Server-Side-Encryption"); got != tc.sse {
						t.Errorf("%s sent server-side encryption %q, want %q", r.op, got, tc.sse)
					}
					if got := r.header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"); got != tc.kms {
						t.Errorf("%s sent KMS key %q, want %q", r.op, got, tc.kms)
					}
				}
			}
			if seen["PutObject"] == 0 || seen["CreateMultipartUpload"] == 0 || seen["CopyObject"] == 0 {
				t.Errorf("requests that create objects: %v; want each kind", seen)
			}
		})
	}
}

// TestPurgeLeavesSessionWrittenSinceListed: a session that a request wrote to after the purge
// listed it is not idle, and stays (the state is deleted only if its ETag is the one listed).
func TestPurgeLeavesSessionWrittenSinceListed(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, listed, err := s.loadState(ctx, u.ID()) // what the purge's listing saw
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, strings.NewReader("written after the listing")); err != nil {
		t.Fatal(err)
	}
	purged, err := s.purgeSession(ctx, u.ID(), aws.String(listed))
	if err != nil || purged {
		t.Fatalf("purgeSession with the listed ETag = %v, %v; want false, nil", purged, err)
	}
	if err := u.Commit(ctx, digest.FromString("written after the listing")); err != nil {
		t.Fatalf("Commit after the purge passed it by: %v", err)
	}
}

// TestPurgeRemovesLeftovers: objects of a session whose state is gone (a process killed while it
// ended the session) are removed, and not counted as a session.
func TestPurgeRemovesLeftovers(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	id := strings.Repeat("ab", 16)
	if _, err := s.putObject(ctx, s.sessionPrefix(id)+"part-0-0", []byte("left behind"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("PurgeUploads(an hour ago) = %d, %v", n, err)
	}
	if objs := sessionObjects(t, srv.Client(), srv.Bucket, id); len(objs) != 1 {
		t.Fatalf("a leftover newer than the cut-off was removed: %v", objs)
	}
	if n, err := s.PurgeUploads(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("PurgeUploads(in an hour) = %d, %v; want 0 sessions", n, err)
	}
	if objs := sessionObjects(t, srv.Client(), srv.Bucket, id); len(objs) != 0 {
		t.Errorf("leftovers not removed: %v", objs)
	}
}

// TestRawUpload: a raw session keeps no hashes in its state, takes chunks from any store on the
// bucket, refuses Commit, and CommitRaw makes its bytes the blob named, unchecked.
func TestRawUpload(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	u, err := s.NewRawUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte("raw bytes "), 100_000)
	if _, err := u.Append(ctx, bytes.NewReader(b[:500_000])); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, options(srv))
	u2, err := s2.ResumeUpload(ctx, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u2.AppendAt(ctx, bytes.NewReader(b[500_000:]), 500_000); err != nil {
		t.Fatal(err)
	}
	st, _, err := s.loadState(ctx, u.ID())
	if err != nil || !st.Raw || st.SHA256 != nil || st.SHA512 != nil || st.Size != int64(len(b)) {
		t.Fatalf("raw state: %+v, %v", st, err)
	}
	if err := u2.Commit(ctx, digest.FromBytes(b)); err == nil {
		t.Fatal("Commit of a raw session succeeded")
	}
	other := digest.FromString("the name the layer above chose")
	if err := u2.(storage.RawCommitter).CommitRaw(ctx, other); err != nil {
		t.Fatal(err)
	}
	r, _, err := s.Open(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, b) {
		t.Fatalf("CommitRaw stored %d bytes, want the session's %d", len(got), len(b))
	}
}
