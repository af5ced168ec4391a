package memcache

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/sealed"
)

// The cache's tests run it over the sealed layer over a filesystem store, as berth does.

const (
	testCache   = 64 << 20
	segmentSize = sealed.SegmentSize
	segOverhead = 28
	hdrSize     = 24
)

// testKeys is a sealed.Keys of one AES key.
type testKeys struct{ aead cipher.AEAD }

func newTestKeys() *testKeys {
	k := make([]byte, 32)
	rand.Read(k)
	b, _ := aes.NewCipher(k)
	a, _ := cipher.NewGCM(b)
	return &testKeys{a}
}

func (k *testKeys) PrimaryID() string  { return "k1" }
func (k *testKeys) Has(id string) bool { return id == "k1" }
func (k *testKeys) WrapDEK(dek []byte) (string, []byte, error) {
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return "k1", k.aead.Seal(nonce, nonce, dek, nil), nil
}
func (k *testKeys) UnwrapDEK(_ string, w []byte) ([]byte, error) {
	return k.aead.Open(nil, w[:12], w[12:], nil)
}

// testStore is a cache over the sealed layer over a filesystem store in root.
type testStore struct {
	*Store
	root string
}

func newCached(t *testing.T, size int64) *testStore {
	t.Helper()
	root := t.TempDir()
	b, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(sealed.New(b, newTestKeys()), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.c.wait)
	return &testStore{Store: s, root: root}
}

func blobPath(root string, d oci.Digest) string {
	return filepath.Join(root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// pattern is recognizable content: a line that names its offset, repeated.
func pattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "BERTH-PLAINTEXT-%08d;", i)
	}
	return b.Bytes()[:n]
}

// wantNoPlaintext fails if any file under root holds a run of the pattern.
func wantNoPlaintext(t *testing.T, root string, what string) {
	t.Helper()
	filepath.WalkDir(root, func(path string, d iofs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte("BERTH-PLAINTEXT-")) {
			t.Errorf("%s: %s holds plaintext", what, path)
		}
		return nil
	})
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

// putRandom puts a blob of n random bytes.
func putRandom(t *testing.T, s *testStore, n int) ([]byte, oci.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	d := digest.FromBytes(b)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return b, d
}

// readThrough opens d, reads it whole, closes it and waits for the fill it may have started.
func readThrough(t *testing.T, s *testStore, d oci.Digest, want []byte) {
	t.Helper()
	wantContent(t, s, d, want)
	s.c.wait()
}

// cached reports whether the cache holds d.
func (c *memCache) cached(d oci.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[d]
	return ok
}

func (c *memCache) stats() (entries int, used, filling, started int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.used, c.filling, c.started
}

// openFile opens d and wants a cached blob: an *os.File onto a memfd.
func openFile(t *testing.T, s *testStore, d oci.Digest) *os.File {
	t.Helper()
	r, size, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := r.(*os.File)
	if !ok {
		r.Close()
		t.Fatalf("Open(%s) = %T, want a cached *os.File", d, r)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("cached file: %v, size %d; want %d", err, fi.Size(), size)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil || !strings.HasPrefix(link, "/memfd:berth:"+string(d)) {
		t.Fatalf("cached file is %q (%v), want a memfd", link, err)
	}
	return f
}

// wantRange reads n bytes at off with Seek and Read and compares them with want's.
func wantRange(t *testing.T, r io.ReadSeeker, want []byte, off, n int) {
	t.Helper()
	if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, want[off:off+n]) {
		t.Fatalf("read %d at %d: %v, equal %v", n, off, err, bytes.Equal(got, want[off:off+n]))
	}
}

func TestPerBlobLimit(t *testing.T) {
	for _, c := range []struct{ cache, want int64 }{
		{512 << 20, 256 << 20}, // the default: the bench's 256 MiB blob fits
		{4 << 30, 1 << 30},
		{1 << 30, 256 << 20},
		{100 << 20, 100 << 20},
		{1 << 20, 1 << 20},
	} {
		if got := perBlobLimit(c.cache); got != c.want {
			t.Errorf("perBlobLimit(%d) = %d, want %d", c.cache, got, c.want)
		}
	}
}

// TestMemCacheHit: the first Open decrypts and fills the cache; later ones are files of their own
// onto the sealed plaintext in memory, which seek and read ranges independently; nothing of it
// reaches the data directory.
func TestMemCacheHit(t *testing.T) {
	ctx := context.Background()
	s := newCached(t, testCache)
	b := pattern(20*segmentSize + 123)
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if s.c.cached(d) {
		t.Fatal("cached before any read")
	}
	// Opened as a HEAD request does: no read, no fill.
	r, size, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != size || size != int64(len(b)) {
		t.Fatalf("Seek(0, End) = %d, %v; size %d, want %d", end, err, size, len(b))
	}
	r.Close()
	s.c.wait()
	if _, _, _, started := s.c.stats(); started != 0 {
		t.Fatalf("%d fills after an Open with no read", started)
	}
	r, _, err = s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*os.File); ok {
		t.Fatal("the first Open is already a file")
	}
	wantRange(t, r, b, 5*segmentSize+3, 10) // a read anywhere starts the fill
	r.Close()                               // which goes on without its reader
	s.c.wait()
	if !s.c.cached(d) {
		t.Fatal("not cached after a read")
	}

	f1, f2 := openFile(t, s, d), openFile(t, s, d)
	defer f1.Close()
	defer f2.Close()
	if got, err := io.ReadAll(f1); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("cached read: %d bytes, %v", len(got), err)
	}
	// Offsets are the files' own: interleaved seeks and reads.
	for i := range 50 {
		off1, off2 := (i*7919)%(len(b)-5000), (i*104729)%(len(b)-5000)
		f1.Seek(int64(off1), io.SeekStart)
		f2.Seek(int64(off2), io.SeekStart)
		p1, p2 := make([]byte, 2000), make([]byte, 3000)
		io.ReadFull(f1, p1)
		io.ReadFull(f2, p2)
		if !bytes.Equal(p1, b[off1:off1+2000]) || !bytes.Equal(p2, b[off2:off2+3000]) {
			t.Fatalf("interleaved reads at %d and %d differ", off1, off2)
		}
	}
	if end, err := f2.Seek(0, io.SeekEnd); err != nil || end != int64(len(b)) {
		t.Fatalf("Seek(0, End) = %d, %v", end, err)
	}
	// Sealed: not even a writable descriptor can change it.
	if w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f1.Fd()), os.O_RDWR, 0); err == nil {
		if _, err := w.WriteAt([]byte("x"), 10); err == nil {
			t.Error("wrote to a cached blob")
		}
		if err := w.Truncate(0); err == nil {
			t.Error("truncated a cached blob")
		}
		w.Close()
	}
	wantRange(t, f1, b, 0, 100)
	wantNoPlaintext(t, s.root, "with the blob cached")
	if n, _ := s.Info(); n != testCache {
		t.Errorf("Info() = %d, want %d", n, testCache)
	}
}

// TestMemCacheOneFill: concurrent first Opens of a blob share one fill, and all read it right.
func TestMemCacheOneFill(t *testing.T) {
	s := newCached(t, testCache)
	b, d := putRandom(t, s, 3<<20+17)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-start
			got, err := readAll(s, d)
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("concurrent read: %d bytes, %v", len(got), err)
			}
		})
	}
	close(start)
	wg.Wait()
	s.c.wait()
	if entries, used, filling, started := s.c.stats(); started != 1 || entries != 1 || used != int64(len(b)) || filling != 0 {
		t.Errorf("after 8 concurrent first reads: %d fills, %d entries, %d bytes used, %d filling; want 1, 1, %d, 0", started, entries, used, filling, len(b))
	}
	openFile(t, s, d).Close()
}

// TestMemCacheEvict: the cache is an LRU bounded by bytes; evicting closes the cache's
// descriptor, and a reader that has the blob open reads on.
func TestMemCacheEvict(t *testing.T) {
	s := newCached(t, 1<<20) // 1 MiB, also the per-blob limit
	const n = 300 << 10
	blobs := map[string][]byte{}
	ds := map[string]oci.Digest{}
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		blobs[name], ds[name] = putRandom(t, s, n)
	}
	for _, name := range []string{"A", "B", "C"} {
		readThrough(t, s, ds[name], blobs[name])
	}
	want := func(cached ...string) {
		t.Helper()
		for name, d := range ds {
			if got, want := s.c.cached(d), strings.Contains(strings.Join(cached, ""), name); got != want {
				t.Errorf("%s cached: %v, want %v", name, got, want)
			}
		}
		if entries, used, _, _ := s.c.stats(); entries != len(cached) || used != int64(len(cached))*n {
			t.Errorf("%d entries of %d bytes, want %d of %d", entries, used, len(cached), int64(len(cached))*n)
		}
	}
	want("A", "B", "C")

	held := openFile(t, s, ds["C"]) // C, then A, are the most recently used
	defer held.Close()
	openFile(t, s, ds["A"]).Close()
	readThrough(t, s, ds["D"], blobs["D"]) // makes room: B goes
	want("A", "C", "D")

	s.c.mu.Lock()
	cacheFile := s.c.entries[ds["C"]].Value.(*cacheEntry).f
	s.c.mu.Unlock()
	readThrough(t, s, ds["E"], blobs["E"]) // C goes, though a reader holds it
	want("A", "D", "E")
	if cacheFile.Fd() != ^uintptr(0) {
		t.Error("the evicted blob's descriptor is still open in the cache")
	}
	if got, err := io.ReadAll(held); err != nil || !bytes.Equal(got, blobs["C"]) {
		t.Fatalf("reading an evicted blob: %d bytes, %v", len(got), err)
	}
	wantRange(t, held, blobs["C"], 1000, 100_000)
	wantRange(t, held, blobs["C"], n-10, 10)
}

// TestMemCacheLimits: a blob over the per-blob limit, or under the smallest size cached, is never
// cached.
func TestMemCacheLimits(t *testing.T) {
	s := newCached(t, 1<<20)
	big, bd := putRandom(t, s, 1<<20+1)
	small, sd := putRandom(t, s, minCached-1)
	for range 2 {
		readThrough(t, s, bd, big)
		readThrough(t, s, sd, small)
	}
	if entries, used, _, started := s.c.stats(); entries != 0 || used != 0 || started != 0 {
		t.Errorf("%d fills, %d entries, %d bytes; want nothing", started, entries, used)
	}
}

// TestMemCacheCorrupt: a blob that does not verify never enters the cache, and reading it fails
// as without the cache, every time.
func TestMemCacheCorrupt(t *testing.T) {
	s := newCached(t, testCache)
	b, d := putRandom(t, s, 10*segmentSize+500)
	path := blobPath(s.root, d)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flip := make([]byte, 1)
	at := int64(hdrSize + 3*(segmentSize+segOverhead) + 100) // in segment 3
	f.ReadAt(flip, at)
	flip[0] ^= 1
	f.WriteAt(flip, at)
	f.Close()
	for i := range 3 {
		got, err := readAll(s, d)
		if !errors.Is(err, sealed.ErrCorrupt) {
			t.Fatalf("read %d of a corrupt blob: %d bytes, %v; want ErrCorrupt", i, len(got), err)
		}
		if !bytes.Equal(got, b[:len(got)]) || len(got) > 3*segmentSize {
			t.Fatalf("read %d: %d bytes before the error, want at most the %d before the damage", i, len(got), 3*segmentSize)
		}
		s.c.wait()
		if entries, used, filling, _ := s.c.stats(); entries != 0 || used != 0 || filling != 0 {
			t.Fatalf("after a corrupt read: %d entries, %d bytes used, %d filling", entries, used, filling)
		}
	}
	// A range before the damage reads as it does without the cache.
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, r, b, 1000, 2*segmentSize)
	r.Close()
}

// TestMemCacheDelete: Delete drops a cached blob, and a blob deleted while its fill runs is not
// cached.
func TestMemCacheDelete(t *testing.T) {
	ctx := context.Background()
	s := newCached(t, testCache)
	b, d := putRandom(t, s, 500<<10)
	readThrough(t, s, d, b)
	held := openFile(t, s, d)
	defer held.Close()
	if err := s.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	if s.c.cached(d) {
		t.Error("cached after Delete")
	}
	if _, _, err := s.Open(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open after Delete: %v", err)
	}
	if got, err := io.ReadAll(held); err != nil || !bytes.Equal(got, b) {
		t.Errorf("a reader opened before Delete: %d bytes, %v", len(got), err)
	}

	// Deleted while the fill runs: Delete (which abandons the fill), or the file gone by the time
	// the fill ends (Delete removes it before it drops the blob from the cache).
	for _, del := range []func(d oci.Digest){
		func(d oci.Digest) { s.Delete(ctx, d) },
		func(d oci.Digest) { os.Remove(blobPath(s.root, d)) },
	} {
		b, d := putRandom(t, s, 500<<10)
		release := make(chan struct{})
		s.c.beforeFinish = func(*fill) { <-release }
		r, _, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, 1000)
		if _, err := io.ReadFull(r, first); err != nil { // starts the fill, which waits for release
			t.Fatal(err)
		}
		del(d)
		close(release)
		if rest, err := io.ReadAll(r); err != nil || !bytes.Equal(append(first, rest...), b) {
			t.Errorf("a reader opened before the delete: %d bytes, %v", len(first)+len(rest), err)
		}
		r.Close()
		s.c.wait()
		s.c.beforeFinish = nil
		if entries, used, filling, _ := s.c.stats(); entries != 0 || used != 0 || filling != 0 {
			t.Errorf("a blob deleted during its fill: %d entries, %d bytes used, %d filling", entries, used, filling)
		}
	}
}

// TestFillReader: a reader of a blob being filled reads what the fill has from its memfd, waits
// for the fill just ahead of it, and decrypts for itself far ahead of it or once it has failed.
func TestFillReader(t *testing.T) {
	s := newCached(t, testCache)
	b, d := putRandom(t, s, followGap+3*segmentSize+77)
	mf, err := newMemfd("test")
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	fl := &fill{d: d, size: int64(len(b)), mf: mf}
	fl.cond.L = &fl.mu
	// The fill has 2 segments and a bit; byte 10 of its memfd is marked to tell where a read
	// came from.
	have := 2*segmentSize + 5
	mark := bytes.Clone(b[:have])
	mark[10] ^= 0xff
	mf.WriteAt(mark, 0)
	fl.written = int64(have)
	newReader := func() *fillReader {
		sr, size, err := s.BlobStore.Open(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		f, err := reopenMemfd(mf)
		if err != nil {
			t.Fatal(err)
		}
		return &fillReader{followed: true, fl: fl, mf: f, sr: sr, size: size}
	}
	r := newReader()
	wantRange(t, r, mark, 0, have)        // from the memfd
	wantRange(t, r, b, have+followGap, 5) // far ahead: decrypted
	wantRange(t, r, b, len(b)-100, 100)

	// Following the fill as it goes: waits, then reads the memfd.
	r.Seek(0, io.SeekStart)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for off := have; off < len(b); off += 100_000 {
			end := min(len(b), off+100_000)
			mf.WriteAt(b[off:end], int64(off))
			fl.mu.Lock()
			fl.written = int64(end)
			fl.cond.Broadcast()
			fl.mu.Unlock()
		}
	}()
	got, err := io.ReadAll(r)
	<-done
	if err != nil || !bytes.Equal(got, append(mark[:have:have], b[have:]...)) {
		t.Fatalf("following the fill: %d bytes, %v", len(got), err)
	}
	r.Close()

	// A fill that ended without the whole blob: the rest is decrypted.
	fl.written = int64(have)
	fl.end()
	r = newReader()
	defer r.Close()
	got, err = io.ReadAll(r)
	if err != nil || !bytes.Equal(got, append(mark[:have:have], b[have:]...)) {
		t.Fatalf("after a failed fill: %d bytes, %v", len(got), err)
	}
}
