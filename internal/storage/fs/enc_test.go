package fs

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/storagetest"
)

// testKeys is a Keys of named AES keys (the store's tests cannot import internal/crypt).
type testKeys struct {
	primary string
	keys    map[string][]byte
}

var testKeyMaterial = map[string][]byte{}

// keysOf makes a keyring of the named test keys, the first primary; each name is one key for the
// whole test binary.
func keysOf(names ...string) *testKeys {
	k := &testKeys{primary: names[0], keys: map[string][]byte{}}
	for _, n := range names {
		if testKeyMaterial[n] == nil {
			testKeyMaterial[n] = make([]byte, 32)
			rand.Read(testKeyMaterial[n])
		}
		k.keys[n] = testKeyMaterial[n]
	}
	return k
}

func (k *testKeys) PrimaryID() string  { return k.primary }
func (k *testKeys) Has(id string) bool { return k.keys[id] != nil }

func (k *testKeys) aead(id string) cipher.AEAD {
	b, _ := aes.NewCipher(k.keys[id])
	a, _ := cipher.NewGCM(b)
	return a
}

func (k *testKeys) WrapDEK(dek []byte) (string, []byte, error) {
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return k.primary, k.aead(k.primary).Seal(nonce, nonce, dek, []byte(k.primary)), nil
}

func (k *testKeys) UnwrapDEK(id string, w []byte) ([]byte, error) {
	if !k.Has(id) {
		return nil, fmt.Errorf("no key %s", id)
	}
	return k.aead(id).Open(nil, w[:12], w[12:], []byte(id))
}

// testCache is the memory cache of the encrypted stores of the tests.
const testCache = 64 << 20

func newEncStore(t *testing.T) storage.BlobStore {
	t.Helper()
	return newEncStoreOpts(t, MemoryCache(testCache))
}

func newEncStoreOpts(t *testing.T, opts ...EncryptedOption) *EncryptedStore {
	t.Helper()
	s, err := NewEncrypted(filepath.Join(t.TempDir(), "data"), keysOf("k1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cache != nil {
			s.cache.wait()
		}
		checkNoTempFiles(t, s.root)
	})
	return s
}

func reopenEnc(t *testing.T, s storage.BlobStore) storage.BlobStore {
	t.Helper()
	s2, err := NewEncrypted(s.(*EncryptedStore).root, keysOf("k1"), MemoryCache(testCache))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.cache.wait)
	return s2
}

func TestEncryptedConformance(t *testing.T) {
	storagetest.RunOptions(t, newEncStore, storagetest.Options{Reopen: reopenEnc})
}

func TestEncryptedConformanceNoCache(t *testing.T) {
	newStore := func(t *testing.T) storage.BlobStore { return newEncStoreOpts(t) }
	reopen := func(t *testing.T, s storage.BlobStore) storage.BlobStore {
		s2, err := NewEncrypted(s.(*EncryptedStore).root, keysOf("k1"))
		if err != nil {
			t.Fatal(err)
		}
		return s2
	}
	storagetest.RunOptions(t, newStore, storagetest.Options{Reopen: reopen})
}

// pattern is recognizable plaintext: a line that names its offset, repeated.
func pattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "BERTH-PLAINTEXT-%08d;", i)
	}
	return b.Bytes()[:n]
}

// wantNoPlaintext fails if any file under root holds a 16-byte run of the pattern.
func wantNoPlaintext(t *testing.T, root string, what string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
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
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("%s: no file under %s", what, root)
	}
}

// TestEncryptedNoPlaintext: nothing pushed reaches the disk in plaintext: blobs (Put, uploads,
// spools), upload sessions in the middle of an upload, spools in the middle of a fill.
func TestEncryptedNoPlaintext(t *testing.T) {
	ctx := context.Background()
	s := newEncStore(t).(*EncryptedStore)
	b := pattern(3*segmentSize + 777)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	wantNoPlaintext(t, s.root, "after Put")

	// A chunked upload, checked between chunks (the tail file holds a partial segment).
	c := pattern(2*segmentSize + 5000)[7:]
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(c); {
		end := min(len(c), off+1+mrand.IntN(40_000))
		if _, err := u.Append(ctx, bytes.NewReader(c[off:end])); err != nil {
			t.Fatal(err)
		}
		wantNoPlaintext(t, s.root, fmt.Sprintf("upload at %d bytes", end))
		off = end
	}
	if err := u.Commit(ctx, digest.FromBytes(c)); err != nil {
		t.Fatal(err)
	}
	wantNoPlaintext(t, s.root, "after Commit")
	wantContent(t, s, digest.FromBytes(c), c)

	// A spool, checked while it is written and read.
	e := pattern(segmentSize * 5 / 2)[3:]
	sp, err := s.NewSpool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(e); off += 10_000 {
		sp.Write(e[off:min(len(e), off+10_000)])
		wantNoPlaintext(t, s.root, "spool")
	}
	if err := sp.Commit(ctx, digest.FromBytes(e)); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	wantNoPlaintext(t, s.root, "after the spool")
	wantContent(t, s, digest.FromBytes(e), e)
}

func wantContent(t *testing.T, s storage.BlobStore, d oci.Digest, want []byte) {
	t.Helper()
	r, size, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || size != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("blob %s: %d bytes (size %d), %v; want %d bytes", d, len(got), size, err, len(want))
	}
}

// TestEncryptedRanges: reads at and around segment boundaries, and random ranges, in any order,
// return the plaintext; the sizes that fill segments exactly work too.
func TestEncryptedRanges(t *testing.T) {
	ctx := context.Background()
	s := newEncStore(t)
	S := segmentSize
	for _, size := range []int{0, 1, S - 1, S, S + 1, 2 * S, 9*S + 321} {
		b := make([]byte, size)
		rand.Read(b)
		d := digest.FromBytes(b)
		if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
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
			if off+n > size && err == nil {
				t.Fatalf("size %d: read past the end at %d gave no error", size, off)
			}
		}
		for seg := 0; seg*S <= size; seg++ {
			for _, off := range []int{seg*S - 1, seg * S, seg*S + 1} {
				if off >= 0 {
					check(off, 1)
					check(off, 2)
					check(off, S+2)
				}
			}
		}
		for range 200 {
			off := mrand.IntN(size + 1)
			check(off, mrand.IntN(3*S))
		}
		// Sequential reads with odd buffer sizes, which grow the read-ahead window.
		r.Seek(0, io.SeekStart)
		var all []byte
		buf := make([]byte, 7777)
		for {
			k, err := r.Read(buf)
			all = append(all, buf[:k]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(all, b) {
			t.Fatalf("size %d: sequential read differs", size)
		}
		if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(size) {
			t.Fatalf("Seek(0, End) = %d, %v", end, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll opens d and reads it whole.
func readAll(s storage.BlobStore, d oci.Digest) ([]byte, error) {
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// TestEncryptedTamper: a changed byte anywhere that matters, swapped segments, a truncated or
// extended file, a blob file moved into another blob's place: an error, never other bytes.
func TestEncryptedTamper(t *testing.T) {
	ctx := context.Background()
	s := newEncStoreOpts(t) // no memory cache: every read decrypts (TestMemCacheCorrupt has one)
	S := segmentSize
	b := pattern(3*S + 1000)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	path := blobPath(s.root, d)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw := S + segOverhead
	restore := func() {
		t.Helper()
		if err := os.WriteFile(path, orig, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	wantFail := func(what string) {
		t.Helper()
		got, err := readAll(s, d)
		if err == nil {
			t.Errorf("%s: read %d bytes without an error (same as the original: %v)", what, len(got), bytes.Equal(got, b))
		}
		// A range within an unchanged segment may be served; a range that touches the damage
		// must not.
		restore()
	}
	edit := func(what string, f func(b []byte) []byte) {
		t.Helper()
		if err := os.WriteFile(path, f(bytes.Clone(orig)), 0o640); err != nil {
			t.Fatal(err)
		}
		wantFail(what)
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x01; return b }
	}
	for _, c := range []struct {
		what string
		off  int
	}{
		{"header magic", 0},
		{"segment size", 13},
		{"file id", 20},
		{"key slot A", slotA + 20},
		{"slot A's checksum", slotA + slotSize - 1},
		{"first nonce", hdrSize},
		{"first ciphertext", hdrSize + 500},
		{"first tag", hdrSize + raw - 1},
		{"middle segment", hdrSize + raw + 12345},
		{"final segment", len(orig) - 100},
		{"final tag", len(orig) - 1},
	} {
		edit("a flipped bit in the "+c.what, flip(c.off))
	}
	edit("segments 0 and 1 swapped", func(b []byte) []byte {
		s0 := bytes.Clone(b[hdrSize : hdrSize+raw])
		copy(b[hdrSize:], b[hdrSize+raw:hdrSize+2*raw])
		copy(b[hdrSize+raw:], s0)
		return b
	})
	edit("segment 1 duplicated over 2", func(b []byte) []byte {
		copy(b[hdrSize+2*raw:], b[hdrSize+raw:hdrSize+2*raw])
		return b
	})
	for _, cut := range []int{1, 100, len(orig) - hdrSize - 3*raw, len(orig) - hdrSize - 2*raw, len(orig) - hdrSize, len(orig) - 10} {
		edit(fmt.Sprintf("truncated to %d bytes", cut), func(b []byte) []byte { return b[:len(orig)-cut] })
	}
	edit("extended by a byte", func(b []byte) []byte { return append(b, 0) })
	edit("extended by a segment", func(b []byte) []byte { return append(b, b[hdrSize:hdrSize+raw]...) })

	// Another blob's whole file in this one's place, and the same content sealed again (another
	// file id and data key) with its segments mixed in.
	other := pattern(3*S + 1000)
	other[5] = 'x'
	od := digest.FromBytes(other)
	if _, err := s.Put(ctx, od, bytes.NewReader(other)); err != nil {
		t.Fatal(err)
	}
	otherFile, _ := os.ReadFile(blobPath(s.root, od))
	edit("another blob's file", func([]byte) []byte { return bytes.Clone(otherFile) })
	edit("another blob's final segment", func(b []byte) []byte { return append(b[:hdrSize+3*raw], otherFile[hdrSize+3*raw:]...) })
	edit("another blob's header", func(b []byte) []byte { return append(bytes.Clone(otherFile[:hdrSize]), b[hdrSize:]...) })

	// A file cut short under an open reader: an error.
	r, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, hdrSize+100); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err == nil {
		t.Errorf("reading a blob truncated under the reader: %d bytes, no error", len(got))
	}
	r.Close()
	restore()

	// Stat must not report a size for a file whose length is impossible.
	os.WriteFile(path, orig[:hdrSize+10], 0o640)
	if _, err := s.Stat(ctx, d); err == nil {
		t.Error("Stat of a file too short for one segment gave no error")
	}
	restore()
	wantContent(t, s, d, b)

	// A torn key slot (a crash while a rotation wrote it) leaves the other one in use.
	torn := bytes.Clone(orig)
	copy(torn[slotB:slotB+100], bytes.Repeat([]byte{0xab}, 100))
	binary := torn[slotB : slotB+8]
	binary[7] = 9 // a higher sequence number, but the checksum fails
	os.WriteFile(path, torn, 0o640)
	wantContent(t, s, d, b)
}

// TestEncryptedUploadCrash: restarts, and the states a crash can leave between the steps of an
// append, keep every acknowledged byte exactly once.
func TestEncryptedUploadCrash(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	open := func() *EncryptedStore {
		s, err := NewEncrypted(dir, keysOf("k1"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	S := segmentSize
	b := pattern(4*S + 999)
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	appendTo := func(s *EncryptedStore, from, to int) {
		t.Helper()
		u, err := s.ResumeUpload(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if got := u.Size(); got != int64(from) {
			t.Fatalf("Size = %d, want %d", got, from)
		}
		if n, err := u.AppendAt(ctx, bytes.NewReader(b[from:to]), int64(from)); err != nil || n != int64(to-from) {
			t.Fatalf("AppendAt(%d..%d) = %d, %v", from, to, n, err)
		}
	}
	u.Append(ctx, bytes.NewReader(b[:1000]))
	u.Close()
	sessionDir := filepath.Join(dir, "uploads", id)
	data, tail := filepath.Join(sessionDir, "data"), filepath.Join(sessionDir, tailFile)

	// Restart, resume, append across a segment boundary.
	s = open()
	appendTo(s, 1000, S+10)

	// A crash between writing the data segments and the new tail: the old tail is stale.
	oldTail, _ := os.ReadFile(tail)
	appendTo(s, S+10, 2*S+20)
	os.WriteFile(tail, oldTail, 0o640)
	s = open()
	appendTo(s, 2*S, 2*S+500) // the stale tail's bytes are in segment 1; the new tail's were lost

	// A crash in the middle of writing a segment: a partial segment at the end of data.
	f, _ := os.OpenFile(data, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(bytes.Repeat([]byte{7}, 30_000))
	f.Close()
	s = open()
	appendTo(s, 2*S+500, 3*S)

	// An interrupted Commit: a final segment appended to data, then the crash.
	f, _ = os.OpenFile(data, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(bytes.Repeat([]byte{8}, 500+segOverhead))
	f.Close()
	s = open()
	appendTo(s, 3*S, len(b))
	if _, err := os.Stat(tail); err != nil {
		t.Fatalf("no tail file after an append that ends mid-segment: %v", err)
	}
	u, err = s.ResumeUpload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx, digest.FromBytes(b)); err != nil {
		t.Fatalf("Commit after the crashes: %v", err)
	}
	wantContent(t, s, digest.FromBytes(b), b)
	wantNoPlaintext(t, dir, "after the crashes")

	// Bytes changed on disk while berth was down: a digest mismatch, never a blob.
	c := pattern(S + 100)[1:]
	u, _ = s.NewUpload(ctx)
	u.Append(ctx, bytes.NewReader(c))
	id = u.ID()
	u.Close()
	data = filepath.Join(dir, "uploads", id, "data")
	f, _ = os.OpenFile(data, os.O_WRONLY, 0)
	f.WriteAt([]byte{1}, hdrSize+100)
	f.Close()
	s = open()
	u, _ = s.ResumeUpload(ctx, id)
	if err := u.Commit(ctx, digest.FromBytes(c)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("Commit of altered bytes: %v; want ErrDigestMismatch", err)
	}
	if _, err := s.Stat(ctx, digest.FromBytes(c)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after the mismatch: %v", err)
	}
	checkNoTempFiles(t, dir)
}

// TestSpool: readers read a spool while it is written, in pieces of any size; a committed spool is
// the blob; one closed without a commit leaves nothing.
func TestSpool(t *testing.T) {
	ctx := context.Background()
	s := newEncStore(t).(*EncryptedStore)
	b := make([]byte, 20*segmentSize+12345)
	rand.Read(b)
	d := digest.FromBytes(b)
	sp, err := s.NewSpool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	written := 0
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(r), 1))
			got := 0
			for got < len(b) {
				mu.Lock()
				avail := written
				mu.Unlock()
				if r == 3 && got == 0 && avail < len(b) {
					continue // one reader starts late, from the file
				}
				if avail <= got {
					continue
				}
				n := min(avail-got, 1+rng.IntN(100_000))
				buf := make([]byte, n)
				k, err := sp.ReadAt(buf, int64(got))
				if err != nil || k != n || !bytes.Equal(buf, b[got:got+n]) {
					t.Errorf("reader %d: ReadAt(%d, %d) = %d, %v, equal %v", r, n, got, k, err, bytes.Equal(buf[:k], b[got:got+k]))
					return
				}
				got += n
			}
		})
	}
	for off := 0; off < len(b); {
		n := min(len(b)-off, 1+mrand.IntN(50_000))
		if k, err := sp.Write(b[off : off+n]); err != nil || k != n {
			t.Fatal(err)
		}
		off += n
		mu.Lock()
		written = off
		mu.Unlock()
	}
	wg.Wait()
	if err := sp.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Still readable after the commit, as fill readers may be behind.
	buf := make([]byte, 1000)
	if _, err := sp.ReadAt(buf, int64(len(b)-1000)); err != nil || !bytes.Equal(buf, b[len(b)-1000:]) {
		t.Fatalf("ReadAt after Commit: %v", err)
	}
	sp.Close()
	wantContent(t, s, d, b)

	sp, err = s.NewSpool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp.Write(b[:1000])
	sp.Close()
	if _, err := s.Stat(ctx, digest.FromBytes(b[:1000])); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("an uncommitted spool became a blob: %v", err)
	}
	// checkNoTempFiles (at cleanup) checks that it is gone.
}

// TestMarker: how a directory's record of its keys decides what may open it.
func TestMarker(t *testing.T) {
	ctx := context.Background()
	b := []byte("content")
	d := digest.FromBytes(b)

	// A plain store with a blob cannot become encrypted in place.
	plainDir := t.TempDir()
	ps, _ := New(plainDir)
	ps.Put(ctx, d, bytes.NewReader(b))
	if _, err := NewEncrypted(plainDir, keysOf("k1")); err == nil || !strings.Contains(err.Error(), "unencrypted") {
		t.Errorf("NewEncrypted on a directory with plain blobs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(plainDir, markerFile)); err == nil {
		t.Error("the refused directory was marked encrypted")
	}

	dir := t.TempDir()
	s, err := NewEncrypted(dir, keysOf("k1"))
	if err != nil {
		t.Fatal(err)
	}
	s.Put(ctx, d, bytes.NewReader(b))
	// Without a key.
	if _, err := New(dir); !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), "k1") {
		t.Errorf("New on an encrypted directory: %v", err)
	}
	// With another key.
	if _, err := NewEncrypted(dir, keysOf("k2")); err == nil || !strings.Contains(err.Error(), "k1") || !strings.Contains(err.Error(), "rotate") {
		t.Errorf("NewEncrypted with the wrong key: %v", err)
	}
	// With a key of the recorded ID but other material: the canary says so.
	impostor := &testKeys{primary: "k1", keys: map[string][]byte{"k1": make([]byte, 32)}}
	if _, err := NewEncrypted(dir, impostor); err == nil || !strings.Contains(err.Error(), "canary") {
		t.Errorf("NewEncrypted with a key of the same ID but other bytes: %v", err)
	}
	// A new primary with the old key as a previous one: new blobs go under k2, and k1 stays
	// needed until a rotation.
	s2, err := NewEncrypted(dir, keysOf("k2", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.PreviousKeysInUse(); len(got) != 1 || got[0] != "k1" {
		t.Errorf("PreviousKeysInUse = %v, want [k1]", got)
	}
	wantContent(t, s2, d, b)
	c := []byte("new content")
	s2.Put(ctx, digest.FromBytes(c), bytes.NewReader(c))
	_, usage, err := KeyUsage(dir)
	if err != nil || usage["k1"] != 1 || usage["k2"] != 1 {
		t.Errorf("KeyUsage = %v, %v; want one file under each key", usage, err)
	}
	if _, err := NewEncrypted(dir, keysOf("k2")); err == nil || !strings.Contains(err.Error(), "k1") {
		t.Errorf("NewEncrypted without the key that still wraps a data key: %v", err)
	}
}

// TestRotate: rotation re-wraps every data key (blobs and upload sessions) without touching a
// segment; after it the old key can go; an interrupted rotation runs again.
func TestRotate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewEncrypted(dir, keysOf("old"))
	if err != nil {
		t.Fatal(err)
	}
	var blobs [][]byte
	for i := range 5 {
		b := pattern(i*segmentSize + 17*i)
		blobs = append(blobs, b)
		if _, err := s.Put(ctx, digest.FromBytes(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	up := pattern(segmentSize + 3)
	u, _ := s.NewUpload(ctx)
	u.Append(ctx, bytes.NewReader(up[:segmentSize+1]))
	u.Close()
	os.WriteFile(filepath.Join(dir, "uploads", "put-leftover"), []byte("sealed leftovers"), 0o640)

	segmentsOf := func() map[string][]byte {
		m := map[string][]byte{}
		files, _, _ := sealedFiles(dir)
		for _, f := range files {
			b, _ := os.ReadFile(f)
			m[f] = b[hdrSize:]
		}
		return m
	}
	before := segmentsOf()

	// Interrupted: the record lists both keys, two files are done.
	both := keysOf("new", "old")
	m, _ := readMarker(dir)
	m.Keys = []string{"new", "old"}
	writeMarker(dir, m)
	files, _, _ := sealedFiles(dir)
	for _, f := range files[:2] {
		if _, err := rewrap(f, both); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewEncrypted(dir, keysOf("new")); err == nil || !strings.Contains(err.Error(), "old") {
		t.Fatalf("opening a half-rotated directory without the old key: %v", err)
	}
	if _, err := Rotate(dir, keysOf("new")); err == nil {
		t.Fatal("Rotate without the old key succeeded")
	}

	res, err := Rotate(dir, both)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != len(files)-2 || res.Current != 2 || res.Removed != 1 || len(res.Retired) != 1 || res.Retired[0] != "old" {
		t.Errorf("Rotate = %+v; want %d re-wrapped, 2 current, 1 removed, old retired", res, len(files)-2)
	}
	after := segmentsOf()
	for f, segs := range before {
		if !bytes.Equal(after[f], segs) {
			t.Errorf("%s: rotation changed the segments", f)
		}
	}
	// The old key is gone now.
	s2, err := NewEncrypted(dir, keysOf("new"))
	if err != nil {
		t.Fatalf("opening with the new key alone after the rotation: %v", err)
	}
	for _, b := range blobs {
		wantContent(t, s2, digest.FromBytes(b), b)
	}
	u2, err := s2.ResumeUpload(ctx, u.ID())
	if err != nil {
		t.Fatal(err)
	}
	u2.Append(ctx, bytes.NewReader(up[segmentSize+1:]))
	if err := u2.Commit(ctx, digest.FromBytes(up)); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s2, digest.FromBytes(up), up)
	if _, usage, _ := KeyUsage(dir); usage["old"] != 0 {
		t.Errorf("files still under the old key: %v", usage)
	}
	// Again: nothing to do, and it says so.
	if res, err := Rotate(dir, keysOf("new")); err != nil || res.Rewrapped != 0 || res.Current != len(blobs)+1 {
		t.Errorf("second Rotate = %+v, %v", res, err)
	}
	// A rotation back, twice over, uses the other slot each time.
	for range 2 {
		for _, k := range [][]string{{"old", "new"}, {"new", "old"}} {
			if _, err := Rotate(dir, keysOf(k...)); err != nil {
				t.Fatal(err)
			}
		}
	}
	s3, _ := NewEncrypted(dir, keysOf("new"))
	wantContent(t, s3, digest.FromBytes(blobs[4]), blobs[4])
}

func TestSegmentLayout(t *testing.T) {
	S := int64(segmentSize)
	raw := S + segOverhead
	for _, c := range []struct {
		file      int64
		nseg      int64
		last      int
		size      int64
		wantError bool
	}{
		{hdrSize + segOverhead, 1, 0, 0, false},
		{hdrSize + segOverhead + 1, 1, 1, 1, false},
		{hdrSize + raw, 1, int(S), S, false},
		{hdrSize + raw + segOverhead, 2, 0, S, false},
		{hdrSize + 3*raw + 5 + segOverhead, 4, 5, 3*S + 5, false},
		{hdrSize + segOverhead - 1, 0, 0, 0, true},
		{hdrSize + raw + 1, 0, 0, 0, true},
		{hdrSize + 2*raw + 20, 0, 0, 0, true},
	} {
		nseg, last, size, err := layout(c.file, segmentSize)
		if (err != nil) != c.wantError || (err == nil && (nseg != c.nseg || last != c.last || size != c.size)) {
			t.Errorf("layout(%d) = %d, %d, %d, %v; want %d, %d, %d, error %v", c.file, nseg, last, size, err, c.nseg, c.last, c.size, c.wantError)
		}
	}
}
