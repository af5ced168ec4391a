// Package storagetest is the conformance suite of storage.BlobStore: every backend runs it from its
// own tests, so that the registry can rely on the same behaviour whatever stores the bytes.
//
//	func TestConformance(t *testing.T) {
//		storagetest.RunOptions(t, newStore, storagetest.Options{Reopen: reopen})
//	}
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Options tunes the suite to what a backend can do.
type Options struct {
	// Reopen returns a new store object on the same backing storage as s, as a restarted process
	// would open it. When nil, the checks that resume uploads across a restart are skipped.
	Reopen func(t *testing.T, s storage.BlobStore) storage.BlobStore
	// LargeBlobSize is the size of the blob streamed by the large-blob checks; 32 MiB when zero.
	LargeBlobSize int64
	// Concurrency is how many uploads of the same content race to commit; 16 when zero.
	Concurrency int
}

// Run runs the suite with default options. newStore returns an empty store; it arranges its own
// clean-up with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) storage.BlobStore) {
	RunOptions(t, newStore, Options{})
}

// RunOptions runs the suite.
func RunOptions(t *testing.T, newStore func(t *testing.T) storage.BlobStore, opts Options) {
	if opts.LargeBlobSize == 0 {
		opts.LargeBlobSize = 32 << 20
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 16
	}
	s := suite{newStore: newStore, opts: opts}
	t.Run("PutStatOpenDelete", s.putStatOpenDelete)
	t.Run("NotFound", s.notFound)
	t.Run("PutTwice", s.putTwice)
	t.Run("PutEmpty", s.putEmpty)
	t.Run("PutSHA512", s.putSHA512)
	t.Run("PutDigestMismatch", s.putDigestMismatch)
	t.Run("PutMismatchKeepsExisting", s.putMismatchKeepsExisting)
	t.Run("PutReaderError", s.putReaderError)
	t.Run("OpenSeek", s.openSeek)
	t.Run("UploadChunks", s.uploadChunks)
	t.Run("UploadSHA512", s.uploadSHA512)
	t.Run("UploadEmpty", s.uploadEmpty)
	t.Run("AppendAtOffset", s.appendAtOffset)
	t.Run("UploadIDsUnique", s.uploadIDsUnique)
	t.Run("UploadResume", s.uploadResume)
	t.Run("UploadResumeAfterReopen", s.uploadResumeAfterReopen)
	t.Run("UploadAppendError", s.uploadAppendError)
	t.Run("CommitDigestMismatch", s.commitDigestMismatch)
	t.Run("CommitExistingBlob", s.commitExistingBlob)
	t.Run("Cancel", s.cancel)
	t.Run("ResumeUnknown", s.resumeUnknown)
	t.Run("StaleHandleAfterCommit", s.staleHandleAfterCommit)
	t.Run("ConcurrentCommits", s.concurrentCommits)
	t.Run("ConcurrentPuts", s.concurrentPuts)
	t.Run("PurgeUploads", s.purgeUploads)
	t.Run("PurgeUploadsWhileUploading", s.purgeUploadsWhileUploading)
	t.Run("LargeBlobPut", s.largeBlobPut)
	t.Run("LargeBlobUpload", s.largeBlobUpload)
}

type suite struct {
	newStore func(t *testing.T) storage.BlobStore
	opts     Options
}

// content returns n deterministic pseudo-random bytes, different for each seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	stream(seed).Read(b)
	return b
}

func stream(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	copy(s[:], fmt.Sprintf("storagetest-%d", seed))
	return rand.NewChaCha8(s)
}

func sha256Of(b []byte) oci.Digest { return digest.SHA256.FromBytes(b) }
func sha512Of(b []byte) oci.Digest { return digest.SHA512.FromBytes(b) }

func put(t *testing.T, s storage.BlobStore, b []byte) oci.Digest {
	t.Helper()
	d := sha256Of(b)
	n, err := s.Put(context.Background(), d, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Put(%s): %v", d, err)
	}
	if n != int64(len(b)) {
		t.Fatalf("Put(%s) = %d bytes, want %d", d, n, len(b))
	}
	return d
}

// wantBlob checks that d is stored with exactly the content want, through Stat and Open.
func wantBlob(t *testing.T, s storage.BlobStore, d oci.Digest, want []byte) {
	t.Helper()
	ctx := context.Background()
	size, err := s.Stat(ctx, d)
	if err != nil {
		t.Fatalf("Stat(%s): %v", d, err)
	}
	if size != int64(len(want)) {
		t.Errorf("Stat(%s) = %d, want %d", d, size, len(want))
	}
	r, size, err := s.Open(ctx, d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer r.Close()
	if size != int64(len(want)) {
		t.Errorf("Open(%s) size = %d, want %d", d, size, len(want))
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading %s: %v", d, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("content of %s: got %d bytes (%s), want %d bytes", d, len(got), sha256Of(got), len(want))
	}
}

// wantAbsent checks that d is not visible.
func wantAbsent(t *testing.T, s storage.BlobStore, d oci.Digest) {
	t.Helper()
	ctx := context.Background()
	if size, err := s.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(%s) = %d, %v; want ErrNotFound", d, size, err)
	}
	r, _, err := s.Open(ctx, d)
	if err == nil {
		r.Close()
	}
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(%s): %v; want ErrNotFound", d, err)
	}
}

func newUpload(t *testing.T, s storage.BlobStore) storage.Upload {
	t.Helper()
	u, err := s.NewUpload(context.Background())
	if err != nil {
		t.Fatalf("NewUpload: %v", err)
	}
	t.Cleanup(func() { u.Close() })
	if u.ID() == "" {
		t.Fatal("NewUpload: empty ID")
	}
	if got := u.Size(); got != 0 {
		t.Errorf("new upload Size = %d, want 0", got)
	}
	return u
}

func resume(t *testing.T, s storage.BlobStore, id string) storage.Upload {
	t.Helper()
	u, err := s.ResumeUpload(context.Background(), id)
	if err != nil {
		t.Fatalf("ResumeUpload(%q): %v", id, err)
	}
	t.Cleanup(func() { u.Close() })
	if u.ID() != id {
		t.Errorf("resumed upload ID = %q, want %q", u.ID(), id)
	}
	return u
}

func appendBytes(t *testing.T, u storage.Upload, b []byte) {
	t.Helper()
	before := u.Size()
	n, err := u.Append(context.Background(), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Append(%d bytes): %v", len(b), err)
	}
	if n != int64(len(b)) {
		t.Fatalf("Append(%d bytes) = %d", len(b), n)
	}
	if got := u.Size(); got != before+n {
		t.Fatalf("Size after Append = %d, want %d", got, before+n)
	}
}

// appendPieces appends b in pieces of the given sizes (the last piece takes the rest).
func appendPieces(t *testing.T, u storage.Upload, b []byte, sizes ...int) {
	t.Helper()
	for _, n := range sizes {
		n = min(n, len(b))
		appendBytes(t, u, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		appendBytes(t, u, b)
	}
}

func wantUploadGone(t *testing.T, s storage.BlobStore, id string) {
	t.Helper()
	u, err := s.ResumeUpload(context.Background(), id)
	if err == nil {
		u.Close()
	}
	if !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("ResumeUpload(%q) of an ended upload: %v; want ErrUploadUnknown", id, err)
	}
}

func (s suite) putStatOpenDelete(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(1, 100_000)
	d := put(t, st, b)
	wantBlob(t, st, d, b)
	if err := st.Delete(ctx, d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantAbsent(t, st, d)
	if err := st.Delete(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second Delete: %v; want ErrNotFound", err)
	}
	// The blob can be stored again after a delete.
	put(t, st, b)
	wantBlob(t, st, d, b)
}

func (s suite) notFound(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	put(t, st, []byte("something else"))
	for _, d := range []oci.Digest{sha256Of([]byte("absent")), sha512Of([]byte("absent"))} {
		wantAbsent(t, st, d)
		if err := st.Delete(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Delete(%s): %v; want ErrNotFound", d, err)
		}
	}
	// A blob is known by its digest only: the same content under another algorithm is another blob.
	wantAbsent(t, st, sha512Of([]byte("something else")))
}

func (s suite) putTwice(t *testing.T) {
	st := s.newStore(t)
	b := content(2, 5000)
	d := put(t, st, b)
	put(t, st, b)
	wantBlob(t, st, d, b)
}

func (s suite) putEmpty(t *testing.T) {
	st := s.newStore(t)
	d := put(t, st, nil)
	if d != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("digest of nothing = %s", d)
	}
	wantBlob(t, st, d, []byte{})
}

func (s suite) putSHA512(t *testing.T) {
	st := s.newStore(t)
	b := content(3, 70_000)
	d := sha512Of(b)
	n, err := st.Put(context.Background(), d, bytes.NewReader(b))
	if err != nil || n != int64(len(b)) {
		t.Fatalf("Put(%s) = %d, %v", d, n, err)
	}
	wantBlob(t, st, d, b)
	wantAbsent(t, st, sha256Of(b))
}

func (s suite) putDigestMismatch(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(4, 10_000)
	for _, want := range []oci.Digest{sha256Of([]byte("other")), sha512Of([]byte("other"))} {
		_, err := st.Put(ctx, want, bytes.NewReader(b))
		if !errors.Is(err, storage.ErrDigestMismatch) {
			t.Errorf("Put(%s) of other content: %v; want ErrDigestMismatch", want, err)
		}
		wantAbsent(t, st, want)
	}
	wantAbsent(t, st, sha256Of(b))
	wantAbsent(t, st, sha512Of(b))
}

func (s suite) putMismatchKeepsExisting(t *testing.T) {
	st := s.newStore(t)
	b := content(5, 10_000)
	d := put(t, st, b)
	_, err := st.Put(context.Background(), d, bytes.NewReader([]byte("not the content")))
	if !errors.Is(err, storage.ErrDigestMismatch) {
		t.Errorf("Put of wrong content under an existing digest: %v; want ErrDigestMismatch", err)
	}
	wantBlob(t, st, d, b)
}

// errReader fails after it has returned its bytes.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

var errBroken = errors.New("storagetest: connection broken")

func (s suite) putReaderError(t *testing.T) {
	st := s.newStore(t)
	b := content(6, 300_000)
	d := sha256Of(b)
	_, err := st.Put(context.Background(), d, &errReader{bytes.NewReader(b[:1000]), errBroken})
	if err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	wantAbsent(t, st, d)
	put(t, st, b)
	wantBlob(t, st, d, b)
}

func (s suite) openSeek(t *testing.T) {
	st := s.newStore(t)
	b := content(7, 1<<20+17)
	d := put(t, st, b)
	r, size, err := st.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if size != int64(len(b)) {
		t.Fatalf("Open size = %d, want %d", size, len(b))
	}
	end, err := r.Seek(0, io.SeekEnd)
	if err != nil || end != size {
		t.Fatalf("Seek(0, End) = %d, %v; want %d", end, err, size)
	}
	for _, off := range []int64{12345, 0, size - 10, 1 << 19} {
		pos, err := r.Seek(off, io.SeekStart)
		if err != nil || pos != off {
			t.Fatalf("Seek(%d, Start) = %d, %v", off, pos, err)
		}
		got := make([]byte, 10)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(got, b[off:off+10]) {
			t.Errorf("bytes at %d differ", off)
		}
	}
	pos, err := r.Seek(-100, io.SeekCurrent)
	if err != nil || pos != 1<<19+10-100 {
		t.Fatalf("Seek(-100, Current) = %d, %v", pos, err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, b[pos:]) {
		t.Errorf("reading from %d: %d bytes, %v", pos, len(rest), err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(all, b) {
		t.Errorf("reading all after seeking back: %d bytes, %v", len(all), err)
	}
}

func (s suite) uploadChunks(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(8, 1<<20+3)
	u := newUpload(t, st)
	appendPieces(t, u, b, 1, 0, 4095, 300_000, 65536)
	if got := u.Size(); got != int64(len(b)) {
		t.Fatalf("Size = %d, want %d", got, len(b))
	}
	d := sha256Of(b)
	wantAbsent(t, st, d) // not visible before Commit
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	wantBlob(t, st, d, b)
	wantUploadGone(t, st, u.ID())
}

func (s suite) uploadSHA512(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	// Past two parts of the smallest size object storage allows, in pieces across their ends.
	b := content(9, 11<<20+1)
	u := newUpload(t, st)
	appendPieces(t, u, b, 1000, 99_000, 5<<20, 3<<20)
	d := sha512Of(b)
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit(%s): %v", d, err)
	}
	wantBlob(t, st, d, b)
	wantAbsent(t, st, sha256Of(b))
	wantUploadGone(t, st, u.ID())

	u = newUpload(t, st)
	appendPieces(t, u, b[:1<<20], 1000)
	if err := u.Commit(ctx, sha512Of(b)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Errorf("Commit under the sha512 digest of other content: %v; want ErrDigestMismatch", err)
	}
}

func (s suite) uploadEmpty(t *testing.T) {
	st := s.newStore(t)
	u := newUpload(t, st)
	if n, err := u.Append(context.Background(), bytes.NewReader(nil)); err != nil || n != 0 {
		t.Fatalf("Append(nothing) = %d, %v", n, err)
	}
	d := sha256Of(nil)
	if err := u.Commit(context.Background(), d); err != nil {
		t.Fatalf("Commit of an empty upload: %v", err)
	}
	wantBlob(t, st, d, []byte{})
}

func (s suite) uploadIDsUnique(t *testing.T) {
	st := s.newStore(t)
	seen := map[string]bool{}
	for range 20 {
		u := newUpload(t, st)
		if seen[u.ID()] {
			t.Fatalf("NewUpload returned the id %q twice", u.ID())
		}
		seen[u.ID()] = true
	}
}

func (s suite) uploadResume(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(10, 500_000)
	u := newUpload(t, st)
	id := u.ID()
	appendBytes(t, u, b[:123_456])
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Resume by id, as every request of a chunked upload does, several times over.
	u2 := resume(t, st, id)
	if got := u2.Size(); got != 123_456 {
		t.Fatalf("resumed Size = %d, want 123456", got)
	}
	appendBytes(t, u2, b[123_456:400_000])
	u2.Close()
	u3 := resume(t, st, id)
	if got := u3.Size(); got != 400_000 {
		t.Fatalf("resumed Size = %d, want 400000", got)
	}
	appendBytes(t, u3, b[400_000:])
	d := sha256Of(b)
	if err := u3.Commit(ctx, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	wantBlob(t, st, d, b)
	wantUploadGone(t, st, id)

	// Two handles on one upload open at once see each other's bytes.
	c := content(11, 10_000)
	a := newUpload(t, st)
	appendBytes(t, a, c[:3000])
	bh := resume(t, st, a.ID())
	if got := bh.Size(); got != 3000 {
		t.Fatalf("second handle Size = %d, want 3000", got)
	}
	appendBytes(t, bh, c[3000:7000])
	if got := a.Size(); got != 7000 {
		t.Fatalf("first handle Size after the second appended = %d, want 7000", got)
	}
	appendBytes(t, a, c[7000:])
	if err := bh.Commit(ctx, sha256Of(c)); err != nil {
		t.Fatalf("Commit through the second handle: %v", err)
	}
	wantBlob(t, st, sha256Of(c), c)
}

func (s suite) uploadResumeAfterReopen(t *testing.T) {
	if s.opts.Reopen == nil {
		t.Skip("the backend cannot reopen a store")
	}
	ctx := context.Background()
	st := s.newStore(t)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		b := content(12, 300_000)
		u := newUpload(t, st)
		id := u.ID()
		appendPieces(t, u, b[:200_000], 50_000)
		u.Close()

		st2 := s.opts.Reopen(t, st)
		u2 := resume(t, st2, id)
		if got := u2.Size(); got != 200_000 {
			t.Fatalf("Size after reopen = %d, want 200000", got)
		}
		appendPieces(t, u2, b[200_000:], 1, 40_000)
		u2.Close()

		st3 := s.opts.Reopen(t, st2)
		u3 := resume(t, st3, id)
		d := alg.FromBytes(b)
		if err := u3.Commit(ctx, d); err != nil {
			t.Fatalf("Commit(%s) after reopen: %v", alg, err)
		}
		wantBlob(t, st3, d, b)
		wantBlob(t, st, d, b)
		wantUploadGone(t, st3, id)
	}
}

func (s suite) uploadAppendError(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(13, 400_000)
	u := newUpload(t, st)
	appendBytes(t, u, b[:1000])
	n, err := u.Append(ctx, &errReader{bytes.NewReader(b[1000:150_000]), errBroken})
	if err == nil {
		t.Fatal("Append from a failing reader succeeded")
	}
	// Whatever part of the chunk the backend kept, Size says so, and the client goes on from there.
	have := u.Size()
	if have != 1000+n {
		t.Fatalf("Size after a failed Append of which %d bytes were written = %d, want %d", n, have, 1000+n)
	}
	if have < 1000 || have > 150_000 {
		t.Fatalf("Size after a failed Append = %d, want between 1000 and 150000", have)
	}
	appendBytes(t, u, b[have:])
	d := sha256Of(b)
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit after a failed Append: %v", err)
	}
	wantBlob(t, st, d, b)
}

func (s suite) commitDigestMismatch(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		b := content(14, 100_000)
		u := newUpload(t, st)
		appendPieces(t, u, b, 30_000)
		wrong := alg.FromBytes([]byte("something else"))
		err := u.Commit(ctx, wrong)
		if !errors.Is(err, storage.ErrDigestMismatch) {
			t.Fatalf("Commit(%s) of other content: %v; want ErrDigestMismatch", wrong, err)
		}
		wantAbsent(t, st, wrong)
		wantAbsent(t, st, alg.FromBytes(b))
		wantUploadGone(t, st, u.ID())
	}

	// A mismatch on a resumed upload (hashed from storage, not as it arrived) is the same.
	b := content(15, 50_000)
	u := newUpload(t, st)
	appendBytes(t, u, b)
	u.Close()
	u2 := resume(t, st, u.ID())
	wrong := sha256Of(b[1:])
	if err := u2.Commit(ctx, wrong); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("Commit of a resumed upload with a wrong digest: %v; want ErrDigestMismatch", err)
	}
	wantAbsent(t, st, wrong)
	wantAbsent(t, st, sha256Of(b))
	wantUploadGone(t, st, u.ID())
}

func (s suite) commitExistingBlob(t *testing.T) {
	st := s.newStore(t)
	b := content(16, 20_000)
	d := put(t, st, b)
	u := newUpload(t, st)
	appendBytes(t, u, b)
	if err := u.Commit(context.Background(), d); err != nil {
		t.Fatalf("Commit of a blob that is already stored: %v", err)
	}
	wantBlob(t, st, d, b)
	wantUploadGone(t, st, u.ID())
}

func (s suite) cancel(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(17, 30_000)
	u := newUpload(t, st)
	appendBytes(t, u, b)
	if err := u.Cancel(ctx); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	wantUploadGone(t, st, u.ID())
	wantAbsent(t, st, sha256Of(b))

	// A resumed upload can be cancelled too, and the content stays absent.
	u = newUpload(t, st)
	appendBytes(t, u, b)
	u.Close()
	u2 := resume(t, st, u.ID())
	if err := u2.Cancel(ctx); err != nil {
		t.Fatalf("Cancel of a resumed upload: %v", err)
	}
	wantUploadGone(t, st, u.ID())
	wantAbsent(t, st, sha256Of(b))
}

func (s suite) resumeUnknown(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	live := newUpload(t, st)
	ids := []string{
		"",
		"x",
		"unknown",
		strings.Repeat("0", 32),
		strings.Repeat("f", 64),
		strings.ToUpper(live.ID()),
		live.ID() + "0",
		live.ID()[1:],
		live.ID() + "/",
		live.ID() + "/../" + live.ID(),
		"../" + live.ID(),
		"./" + live.ID(),
		"..",
		".",
		"/",
		"../../../../etc/passwd",
		"..\\..\\x",
		"a\x00b",
		"%2e%2e%2f",
		strings.Repeat("a", 4096),
	}
	for _, id := range ids {
		u, err := st.ResumeUpload(ctx, id)
		if err == nil {
			u.Close()
		}
		if !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("ResumeUpload(%q): %v; want ErrUploadUnknown", id, err)
		}
	}
	resume(t, st, live.ID()) // and the real one still works
}

// staleHandleAfterCommit: a request may hold an upload open while another commits it. The stale
// handle must not reach the committed blob, which is immutable.
func (s suite) staleHandleAfterCommit(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(18, 40_000)
	d := sha256Of(b)
	u := newUpload(t, st)
	appendBytes(t, u, b)
	stale := resume(t, st, u.ID())
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if _, err := stale.Append(ctx, bytes.NewReader([]byte("more bytes"))); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("Append to a committed upload: %v; want ErrUploadUnknown", err)
	}
	wantBlob(t, st, d, b)
	stale.Cancel(ctx) // an error or not, the blob stays
	wantBlob(t, st, d, b)
}

func (s suite) concurrentCommits(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(19, 300_000)
	d := sha256Of(b)
	n := s.opts.Concurrency
	uploads := make([]storage.Upload, n)
	for i := range uploads {
		uploads[i] = newUpload(t, st)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i, u := range uploads {
		wg.Go(func() {
			<-start
			errs[i] = func() error {
				// Each upload arrives in different pieces, from a handle of its own.
				for off := 0; off < len(b); {
					end := min(len(b), off+1000*(i+1)+i)
					if _, err := u.Append(ctx, bytes.NewReader(b[off:end])); err != nil {
						return err
					}
					off = end
				}
				return u.Commit(ctx, d)
			}()
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("upload %d: %v", i, err)
		}
	}
	wantBlob(t, st, d, b)
	for _, u := range uploads {
		wantUploadGone(t, st, u.ID())
	}
}

func (s suite) concurrentPuts(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(20, 200_000)
	d := sha256Of(b)
	var wg sync.WaitGroup
	errs := make([]error, s.opts.Concurrency)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = st.Put(ctx, d, bytes.NewReader(b))
			if i%4 == 0 { // readers race with the writers
				if r, _, err := st.Open(ctx, d); err == nil {
					got, err := io.ReadAll(r)
					r.Close()
					if err != nil || !bytes.Equal(got, b) {
						errs[i] = fmt.Errorf("read a torn blob: %d bytes, %v", len(got), err)
					}
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d: %v", i, err)
		}
	}
	wantBlob(t, st, d, b)
}

// purgeUploads checks what every backend can: a purge before the sessions' last bytes keeps them,
// one after it discards them all (and counts them), and it never touches blobs.
func (s suite) purgeUploads(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	b := content(23, 10_000)
	d := put(t, st, b)
	committed := newUpload(t, st)
	appendBytes(t, committed, b)
	if err := committed.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		u := newUpload(t, st)
		appendBytes(t, u, b[:1000*(i+1)])
		ids = append(ids, u.ID())
		if i != 0 {
			u.Close()
		}
	}
	open := newUpload(t, st) // a handle held open during the purge, as a slow request would
	appendBytes(t, open, b[:10])
	ids = append(ids, open.ID())

	if n, err := st.PurgeUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("PurgeUploads(an hour ago) = %d, %v; want 0 sessions purged", n, err)
	}
	for _, id := range ids {
		resume(t, st, id).Close()
	}

	if n, err := st.PurgeUploads(ctx, time.Now().Add(time.Hour)); err != nil || n != len(ids) {
		t.Fatalf("PurgeUploads(in an hour) = %d, %v; want %d sessions purged", n, err, len(ids))
	}
	for _, id := range ids {
		wantUploadGone(t, st, id)
	}
	// The handle that was open is of a session that is gone.
	if _, err := open.Append(ctx, bytes.NewReader(b)); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("Append to a purged upload: %v; want ErrUploadUnknown", err)
	}
	if err := open.Commit(ctx, sha256Of(b[:10])); err == nil {
		t.Error("Commit of a purged upload succeeded")
	}
	wantAbsent(t, st, sha256Of(b[:10]))
	wantBlob(t, st, d, b)
	if n, err := st.PurgeUploads(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("second PurgeUploads = %d, %v; want 0", n, err)
	}
	// Uploads go on as before.
	u := newUpload(t, st)
	appendBytes(t, u, b)
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit after a purge: %v", err)
	}
	wantBlob(t, st, d, b)
}

// purgeUploadsWhileUploading: the periodic purge runs while clients upload; with a cut-off in the
// past it must never discard a session that is being created or written.
func (s suite) purgeUploadsWhileUploading(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	stop := make(chan struct{})
	var purges sync.WaitGroup
	for range 2 {
		purges.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n, err := st.PurgeUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
					t.Errorf("PurgeUploads(an hour ago) = %d, %v; want 0 sessions purged", n, err)
					return
				}
			}
		})
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				b := content(uint64(1000+w*100+i), 100+i)
				err := func() error {
					u, err := st.NewUpload(ctx)
					if err != nil {
						return fmt.Errorf("NewUpload: %w", err)
					}
					defer u.Close()
					if _, err := u.Append(ctx, bytes.NewReader(b)); err != nil {
						return fmt.Errorf("append: %w", err)
					}
					u.Close()
					if u, err = st.ResumeUpload(ctx, u.ID()); err != nil {
						return fmt.Errorf("ResumeUpload: %w", err)
					}
					defer u.Close()
					return u.Commit(ctx, sha256Of(b))
				}()
				if err != nil {
					t.Errorf("upload %d/%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	purges.Wait()
}

// hashStream returns the digest and size of what r yields.
func hashStream(t *testing.T, r io.Reader) (oci.Digest, int64) {
	t.Helper()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(dg.Hash(), r)
	if err != nil {
		t.Fatal(err)
	}
	return dg.Digest(), n
}

func largeReader(seed uint64, size int64) io.Reader { return io.LimitReader(stream(seed), size) }

func (s suite) wantLarge(t *testing.T, st storage.BlobStore, d oci.Digest) {
	t.Helper()
	size := s.opts.LargeBlobSize
	if got, err := st.Stat(context.Background(), d); err != nil || got != size {
		t.Fatalf("Stat = %d, %v; want %d", got, err, size)
	}
	r, got, err := st.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got != size {
		t.Errorf("Open size = %d, want %d", got, size)
	}
	rd, rn := hashStream(t, r)
	if rd != d || rn != size {
		t.Errorf("read back %d bytes with digest %s, want %d bytes with %s", rn, rd, size, d)
	}
}

func (s suite) largeBlobPut(t *testing.T) {
	if testing.Short() {
		t.Skip("large blob in -short mode")
	}
	st := s.newStore(t)
	size := s.opts.LargeBlobSize
	d, _ := hashStream(t, largeReader(21, size))
	n, err := st.Put(context.Background(), d, largeReader(21, size))
	if err != nil || n != size {
		t.Fatalf("Put of %d bytes = %d, %v", size, n, err)
	}
	s.wantLarge(t, st, d)
}

func (s suite) largeBlobUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("large blob in -short mode")
	}
	ctx := context.Background()
	st := s.newStore(t)
	size := s.opts.LargeBlobSize
	d, _ := hashStream(t, largeReader(22, size))
	u := newUpload(t, st)
	// Stream it in three chunks, one of them resumed, never holding it in memory.
	r := largeReader(22, size)
	chunks := []int64{size / 3, size / 3, size - 2*(size/3)}
	for i, c := range chunks {
		if i == 1 {
			u.Close()
			u = resume(t, st, u.ID())
		}
		n, err := u.Append(ctx, io.LimitReader(r, c))
		if err != nil || n != c {
			t.Fatalf("Append chunk %d = %d, %v; want %d", i, n, err, c)
		}
	}
	if got := u.Size(); got != size {
		t.Fatalf("Size = %d, want %d", got, size)
	}
	if err := u.Commit(ctx, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	s.wantLarge(t, st, d)
}

// appendAtOffset: a chunk is taken only where the upload ends; two chunks sent for the same offset
// at once are never both written.
func (s *suite) appendAtOffset(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	u := newUpload(t, st)
	b := content(31, 3000)
	if n, err := u.AppendAt(ctx, bytes.NewReader(b[:1000]), 0); err != nil || n != 1000 {
		t.Fatalf("AppendAt(0) = %d, %v", n, err)
	}
	for _, off := range []int64{0, 999, 1001} {
		if n, err := u.AppendAt(ctx, bytes.NewReader(b[1000:2000]), off); !errors.Is(err, storage.ErrOffset) || n != 0 {
			t.Errorf("AppendAt(%d) on 1000 bytes = %d, %v; want 0, ErrOffset", off, n, err)
		}
	}
	if got := u.Size(); got != 1000 {
		t.Fatalf("Size after refused chunks = %d, want 1000", got)
	}
	const racers = 8
	var wg sync.WaitGroup
	var won atomic.Int32
	for range racers {
		h := resume(t, st, u.ID())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.AppendAt(ctx, bytes.NewReader(b[1000:2000]), 1000); err == nil {
				won.Add(1)
			} else if !errors.Is(err, storage.ErrOffset) {
				t.Errorf("racing AppendAt: %v", err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d of %d chunks for offset 1000 were taken, want exactly 1", won.Load(), racers)
	}
	if n, err := u.AppendAt(ctx, bytes.NewReader(b[2000:]), 2000); err != nil || n != 1000 {
		t.Fatalf("AppendAt(2000) = %d, %v", n, err)
	}
	if err := u.Commit(ctx, sha256Of(b)); err != nil {
		t.Fatalf("Commit after chunks at offsets: %v", err)
	}
}
