package sealed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
)

// newFSSealed is a sealed store over a filesystem store in a new directory, which it returns too.
func newFSSealed(t *testing.T) (*Store, string) { return newFSSealedB(t) }

func newFSSealedB(t testing.TB) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return New(b, testKeys(t)), dir
}

func blobFile(dir string, d oci.Digest) string {
	return filepath.Join(dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// keyRecordFile is the file of the key record of the blob stored in blob.
func keyRecordFile(t *testing.T, dir string, blob []byte) string {
	t.Helper()
	id, err := parseHeader(blob)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "records", "keys", hex.EncodeToString(id[:]))
}

// pattern is recognizable plaintext: a line that names its offset, repeated.
func pattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "BERTH-PLAINTEXT-%08d;", i)
	}
	return b.Bytes()[:n]
}

func readAll(s storage.BlobStore, d oci.Digest) ([]byte, error) {
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func wantContent(t *testing.T, s storage.BlobStore, d oci.Digest, want []byte) {
	t.Helper()
	got, err := readAll(s, d)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("blob %s: %d bytes, %v; want %d bytes", d, len(got), err, len(want))
	}
}

// TestTamper: a changed byte anywhere that matters, swapped or duplicated segments, a truncated
// blob, a blob or a key record moved into another's place, a key record that lies: an error,
// never other bytes. Bytes added after the final segment are not read at all.
func TestTamper(t *testing.T) {
	ctx := context.Background()
	s, dir := newFSSealed(t)
	const S = SegmentSize
	b := pattern(3*S + 1000)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	path := blobFile(dir, d)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recPath := keyRecordFile(t, dir, orig)
	origRec, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	restore := func() {
		t.Helper()
		if err := os.WriteFile(path, orig, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(recPath, origRec, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// check reads the blob whole and in random ranges: an error, or exactly the original bytes
	// when mayRead (the change is where nothing is read).
	check := func(what string, mayRead bool) {
		t.Helper()
		defer restore()
		got, err := readAll(s, d)
		switch {
		case err == nil && !bytes.Equal(got, b):
			t.Errorf("%s: read %d other bytes without an error", what, len(got))
		case err == nil && !mayRead:
			t.Errorf("%s: read without an error", what)
		}
		r, _, err := s.Open(ctx, d)
		if err != nil {
			return
		}
		defer r.Close()
		for range 20 {
			off := mrand.IntN(len(b))
			r.Seek(int64(off), io.SeekStart)
			p := make([]byte, mrand.IntN(2*S))
			n, _ := io.ReadFull(r, p)
			if !bytes.Equal(p[:n], b[off:off+n]) {
				t.Errorf("%s: a read at %d gave other bytes", what, off)
				return
			}
		}
	}
	edit := func(what string, f func(b []byte) []byte) {
		t.Helper()
		if err := os.WriteFile(path, f(bytes.Clone(orig)), 0o640); err != nil {
			t.Fatal(err)
		}
		check(what, false)
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x01; return b }
	}
	h := headerSize
	for _, c := range []struct {
		what string
		off  int
	}{
		{"header magic", 0},
		{"file id", 10},
		{"first nonce", h},
		{"first ciphertext", h + 500},
		{"first tag", h + rawSegment - 1},
		{"middle segment", h + rawSegment + 12345},
		{"last data segment", len(orig) - overhead - 100},
		{"final segment", len(orig) - 1},
	} {
		edit("a flipped bit in the "+c.what, flip(c.off))
	}
	edit("segments 0 and 1 swapped", func(b []byte) []byte {
		s0 := bytes.Clone(b[h : h+rawSegment])
		copy(b[h:], b[h+rawSegment:h+2*rawSegment])
		copy(b[h+rawSegment:], s0)
		return b
	})
	edit("segment 1 duplicated over 2", func(b []byte) []byte {
		copy(b[h+2*rawSegment:], b[h+rawSegment:h+2*rawSegment])
		return b
	})
	for _, cut := range []int{1, 100, overhead, overhead + 1000, overhead + 1000 + rawSegment, len(orig) - h, len(orig) - 10} {
		edit(fmt.Sprintf("truncated by %d bytes", cut), func(b []byte) []byte { return b[:len(orig)-cut] })
	}
	if err := os.WriteFile(path, append(bytes.Clone(orig), orig[h:h+rawSegment]...), 0o640); err != nil {
		t.Fatal(err)
	}
	check("extended by a segment", true)

	// The key record.
	var rec keyRecord
	if err := json.Unmarshal(origRec, &rec); err != nil {
		t.Fatal(err)
	}
	editRec := func(what string, f func(r *keyRecord)) {
		t.Helper()
		r := rec
		r.Runs = append([]run(nil), rec.Runs...)
		f(&r)
		j, _ := json.Marshal(r)
		if err := os.WriteFile(recPath, j, 0o640); err != nil {
			t.Fatal(err)
		}
		check("a key record with "+what, false)
	}
	editRec("a smaller size", func(r *keyRecord) { r.Size--; r.Runs[0].Len-- })
	editRec("a larger size", func(r *keyRecord) { r.Size++; r.Runs[0].Len++ })
	editRec("the final segment earlier", func(r *keyRecord) {
		r.Size -= 1000
		r.Runs[0].Len -= 1000
		r.Runs[1].Off -= 1000
	})
	editRec("the data split in two runs within a segment", func(r *keyRecord) {
		r.Runs = []run{{Off: r.Runs[0].Off, Len: S / 2}, {Off: r.Runs[0].Off + S/2 + overhead, Len: r.Runs[0].Len - S/2}, r.Runs[1]}
	})
	editRec("the data shifted", func(r *keyRecord) { r.Runs[0].Off++ })
	editRec("another digest", func(r *keyRecord) { r.Digest = digest.FromString("x") })
	editRec("another wrapped key", func(r *keyRecord) {
		r.Wrapped = bytes.Clone(r.Wrapped)
		r.Wrapped[20] ^= 1
	})
	editRec("no final segment", func(r *keyRecord) { r.Runs = r.Runs[:1] })
	if err := os.Remove(recPath); err != nil {
		t.Fatal(err)
	}
	check("no key record", false)

	// Another blob's file, and key record, in this one's place; the same content sealed again
	// (another file id and data key) with its segments mixed in.
	other := pattern(3*S + 1000)
	other[5] = 'x'
	od := digest.FromBytes(other)
	if _, err := s.Put(ctx, od, bytes.NewReader(other)); err != nil {
		t.Fatal(err)
	}
	otherFile, _ := os.ReadFile(blobFile(dir, od))
	otherRec, _ := os.ReadFile(keyRecordFile(t, dir, otherFile))
	edit("another blob's file", func([]byte) []byte { return bytes.Clone(otherFile) })
	edit("another blob's final segment", func(b []byte) []byte { return append(b[:len(b)-overhead], otherFile[len(otherFile)-overhead:]...) })
	edit("another blob's header", func(b []byte) []byte { return append(bytes.Clone(otherFile[:h]), b[h:]...) })
	edit("another blob's header and its record's runs", func(b []byte) []byte {
		os.WriteFile(keyRecordFile(t, dir, otherFile), otherRec, 0o640)
		return append(bytes.Clone(otherFile[:h]), b[h:]...)
	})
	if err := os.WriteFile(recPath, otherRec, 0o640); err != nil {
		t.Fatal(err)
	}
	check("another blob's key record", false)

	// A blob cut short under an open reader: an error.
	r, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(h+100)); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err == nil {
		t.Errorf("reading a blob truncated under the reader: %d bytes, no error", len(got))
	}
	r.Close()
	restore()
	wantContent(t, s, d, b)
}

// TestNoPlaintext: nothing pushed reaches the backend in plaintext: blobs (Put, uploads), upload
// sessions between chunks, records.
func TestNoPlaintext(t *testing.T) {
	ctx := context.Background()
	s, dir := newFSSealed(t)
	wantNone := func(what string) {
		t.Helper()
		files := 0
		err := filepath.WalkDir(dir, func(path string, d iofs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			files++
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, needle := range []string{"BERTH-PLAINTEXT-", "PLAINTEXT-000000", "00001;BERTH-PLAI"} {
				if bytes.Contains(data, []byte(needle)) {
					t.Errorf("%s: %s holds plaintext (%q)", what, path, needle)
				}
			}
			return nil
		})
		if err != nil || files == 0 {
			t.Fatalf("%s: %d files, %v", what, files, err)
		}
	}
	b := pattern(3*SegmentSize + 777)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	wantNone("after Put")
	c := pattern(2*SegmentSize + 5000)[7:]
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(c); {
		end := min(len(c), off+1+mrand.IntN(40_000))
		if _, err := u.Append(ctx, bytes.NewReader(c[off:end])); err != nil {
			t.Fatal(err)
		}
		wantNone(fmt.Sprintf("upload at %d bytes", end))
		off = end
	}
	if err := u.Commit(ctx, digest.FromBytes(c)); err != nil {
		t.Fatal(err)
	}
	wantNone("after Commit")
	wantContent(t, s, digest.FromBytes(c), c)
}

// TestRanges: reads at and around segment and run boundaries, and random ranges, in any order,
// of blobs put whole and uploaded in chunks of any size.
func TestRanges(t *testing.T) {
	ctx := context.Background()
	s, _ := newFSSealed(t)
	const S = SegmentSize
	for _, size := range []int{0, 1, S - 1, S, S + 1, 2 * S, 9*S + 321} {
		b := make([]byte, size)
		rand.Read(b)
		d := digest.FromBytes(b)
		if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		ud := digest.SHA512.FromBytes(b)
		u, err := s.NewUpload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < size; {
			end := min(size, off+1+mrand.IntN(3*S))
			if _, err := u.Append(ctx, bytes.NewReader(b[off:end])); err != nil {
				t.Fatal(err)
			}
			off = end
		}
		if err := u.Commit(ctx, ud); err != nil {
			t.Fatal(err)
		}
		for _, d := range []oci.Digest{d, ud} {
			if got, err := s.Stat(ctx, d); err != nil || got != int64(size) {
				t.Fatalf("Stat = %d, %v; want %d", got, err, size)
			}
			wantContent(t, s, d, b)
			r, _, err := s.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			check := func(off, n int) {
				t.Helper()
				if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				k, err := io.ReadFull(r, got)
				want := b[min(off, size):min(off+n, size)]
				if k != len(want) || !bytes.Equal(got[:k], want) {
					t.Fatalf("size %d: read %d at %d: got %d bytes (%v), want %d", size, n, off, k, err, len(want))
				}
			}
			for seg := 0; seg*S <= size; seg++ {
				for _, off := range []int{seg*S - 1, seg * S, seg*S + 1} {
					if off >= 0 {
						check(off, 1)
						check(off, S+2)
					}
				}
			}
			for range 100 {
				check(mrand.IntN(size+1), mrand.IntN(3*S))
			}
			r.Close()
		}
	}
}

// TestUnrecordedRun: bytes that reached the backend's session but that no record names (a chunk
// whose writer died, or lost the race, before its record write) are skipped: the upload goes on
// after them and the blob is what the record names.
func TestUnrecordedRun(t *testing.T) {
	ctx := context.Background()
	s, _ := newFSSealed(t)
	b := pattern(3*SegmentSize + 5)
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, bytes.NewReader(b[:1000])); err != nil {
		t.Fatal(err)
	}
	// A sealed chunk of other bytes, appended to the backend's session by a writer that then died.
	lost, err := s.b.ResumeUpload(ctx, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	up := u.(*upload)
	rec, _, err := up.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	garbage := up.c.seal(nil, pattern(5000)[100:], rec.Segments, nil)
	if _, err := lost.Append(ctx, bytes.NewReader(garbage)); err != nil {
		t.Fatal(err)
	}
	lost.Close()
	if got := u.Size(); got != 1000 {
		t.Fatalf("Size = %d after an unrecorded run, want 1000", got)
	}
	if _, err := u.AppendAt(ctx, bytes.NewReader(b[1000:]), 1000); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	if err := u.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, d, b)
}

// failingCommit is a backend whose uploads fail CommitRaw while fail is set, as a crash between
// the steps of Commit would leave them.
type failingCommit struct {
	Backend
	fail *bool
}

func (b failingCommit) NewUpload(ctx context.Context) (storage.Upload, error) {
	u, err := b.Backend.NewUpload(ctx)
	return failingUpload{u, b.fail}, err
}

func (b failingCommit) ResumeUpload(ctx context.Context, id string) (storage.Upload, error) {
	u, err := b.Backend.ResumeUpload(ctx, id)
	return failingUpload{u, b.fail}, err
}

type failingUpload struct {
	storage.Upload
	fail *bool
}

func (u failingUpload) CommitRaw(ctx context.Context, d oci.Digest) error {
	if *u.fail {
		return errors.New("crash")
	}
	return u.Upload.(storage.RawCommitter).CommitRaw(ctx, d)
}

// TestCommitInterrupted: a Commit that stopped after it sealed the final segment (the session is
// marked as committing) takes no more chunks, and commits when asked again, from any handle.
func TestCommitInterrupted(t *testing.T) {
	ctx := context.Background()
	b, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fail := true
	s := New(failingCommit{b, &fail}, testKeys(t))
	data := pattern(SegmentSize + 10)
	d := digest.FromBytes(data)
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx, d); err == nil {
		t.Fatal("Commit succeeded through a failing backend")
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat after an interrupted commit: %v", err)
	}
	if _, err := u.Append(ctx, bytes.NewReader([]byte("more"))); !errors.Is(err, storage.ErrOffset) {
		t.Errorf("Append to a session being committed: %v; want ErrOffset", err)
	}
	u.Close()
	fail = false
	u2, err := s.ResumeUpload(ctx, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := u2.Commit(ctx, d); err != nil {
		t.Fatalf("Commit again: %v", err)
	}
	wantContent(t, s, d, data)
	if _, err := s.ResumeUpload(ctx, u.ID()); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("the session after its commit: %v", err)
	}
}

// TestStatAfterDelete: a size Stat remembers does not outlive the blob, deleted by this store or
// by another on the same storage (another replica).
func TestStatAfterDelete(t *testing.T) {
	ctx := context.Background()
	s, dir := newFSSealed(t)
	b, _ := fs.New(dir)
	other := New(b, s.keys)
	data := pattern(1000)
	d := digest.FromBytes(data)
	for _, deleter := range []*Store{s, other} {
		if _, err := s.Put(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if n, err := s.Stat(ctx, d); err != nil || n != 1000 {
				t.Fatalf("Stat = %d, %v", n, err)
			}
		}
		if err := deleter.Delete(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat after a Delete: %v; want ErrNotFound", err)
		}
	}
}
