package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// EncryptedStore is the filesystem blob store with encryption at rest: the same layout as Store
// (blobs/<algorithm>/<2 hex>/<hex>, uploads/<id>/), but every file is sealed with AES-256-GCM in
// 64 KiB segments under a data key of its own, wrapped by the keys of Keys (encformat.go).
// Blobs stay addressed by the digest of their plaintext, and reads decrypt only the segments
// they touch. No plaintext of a blob reaches the disk: upload sessions and the temporary files of
// Put and of pull-through fills (NewSpool) are sealed the same way. With a MemoryCache, the
// plaintext of recently read blobs is kept in memory, never on disk (encmemcache.go).
//
// It is deliberately not a storage.FileAdopter: a plain temporary file would hold plaintext.
type EncryptedStore struct {
	root     string
	keys     Keys
	live     sync.Map // upload id -> *live
	previous []string
	cache    *memCache // nil: off
	cacheErr error     // why the cache asked for is off
}

var (
	_ storage.BlobStore = (*EncryptedStore)(nil)
	_ storage.Spooler   = (*EncryptedStore)(nil)
)

// EncryptedOption is an option of NewEncrypted.
type EncryptedOption func(*encryptedOptions)

type encryptedOptions struct {
	memoryCache int64
}

// MemoryCache keeps the plaintext of recently read blobs in up to bytes of memory (memfds, never
// on disk), so that repeated reads of a blob are sent with sendfile instead of decrypted again
// (encmemcache.go). 0, the default, turns it off.
func MemoryCache(bytes int64) EncryptedOption {
	return func(o *encryptedOptions) { o.memoryCache = bytes }
}

// NewEncrypted opens (creating if needed) an encrypted blob store rooted at dir. A new directory
// is recorded as encrypted under keys' primary key (encryption.json); an encrypted directory must
// be opened with every key its record lists (see openMarker), and a directory that already holds
// unencrypted blobs is an error.
//
// A memory cache that the system cannot provide (no memfd_create, no /proc) is left off, not an
// error: MemoryCacheInfo says so.
func NewEncrypted(dir string, keys Keys, opts ...EncryptedOption) (*EncryptedStore, error) {
	var o encryptedOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	previous, err := openMarker(dir, keys)
	if err != nil {
		return nil, err
	}
	s := &EncryptedStore{root: dir, keys: keys, previous: previous}
	if o.memoryCache > 0 {
		s.cache, s.cacheErr = newMemCache(o.memoryCache, s.openSealed, s.exists)
	}
	return s, nil
}

// MemoryCacheInfo reports the size of the memory cache in bytes (0: off) and the largest blob it
// keeps, or why a cache that was asked for is off.
func (s *EncryptedStore) MemoryCacheInfo() (size, perBlob int64, err error) {
	if s.cache == nil {
		return 0, 0, s.cacheErr
	}
	return s.cache.max, s.cache.perBlob, nil
}

// PreviousKeysInUse lists the keys other than the primary that may still wrap data keys in the
// store: until a rotation (Rotate) has re-wrapped them, they must stay configured.
func (s *EncryptedStore) PreviousKeysInUse() []string { return slices.Clone(s.previous) }

// Stat implements storage.BlobStore: the plaintext size, from the file size alone.
func (s *EncryptedStore) Stat(_ context.Context, d oci.Digest) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(blobPath(s.root, d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	_, _, size, err := layout(fi.Size(), segmentSize)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return size, nil
}

// Open implements storage.BlobStore: a reader of the plaintext that decrypts the segments it
// reads. The final segment, which binds the file to its size and digest, is verified here, so a
// truncated, extended or misplaced blob fails before anything is served.
//
// With the memory cache, a blob it holds is an *os.File onto its plaintext in memory (which
// net/http sends with sendfile), and a blob it does not hold yet is read while a fill puts it
// there (encmemcache.go).
func (s *EncryptedStore) Open(_ context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	if err := validDigest(d); err != nil {
		return nil, 0, err
	}
	if f, size, ok := s.cache.get(d); ok {
		return f, size, nil
	}
	r, err := s.openSealed(d)
	if err != nil {
		return nil, 0, err
	}
	return s.cache.reader(d, r), r.size, nil
}

// openSealed opens a reader of the blob d that decrypts it.
func (s *EncryptedStore) openSealed(d oci.Digest) (*segReader, error) {
	f, err := os.Open(blobPath(s.root, d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	r, err := newSegReader(f, s.keys, d)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	return r, nil
}

// exists reports whether the blob d is in the store.
func (s *EncryptedStore) exists(d oci.Digest) bool {
	_, err := os.Stat(blobPath(s.root, d))
	return err == nil
}

// Delete implements storage.BlobStore. It drops the blob from the memory cache too; readers that
// have it open keep reading it, as they keep reading a deleted file.
func (s *EncryptedStore) Delete(_ context.Context, d oci.Digest) error {
	err := deleteBlob(s.root, d)
	s.cache.drop(d)
	return err
}

// Put implements storage.BlobStore.
func (s *EncryptedStore) Put(_ context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "uploads"), "put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	w, err := s.newSealedFile(f)
	if err != nil {
		f.Close()
		return 0, err
	}
	defer w.release()
	v := d.Verifier()
	n, err := copyThrough(w, v, r)
	if err == nil && !v.Verified() {
		err = fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
	}
	if err == nil {
		err = w.finish(d)
	}
	if err != nil {
		f.Close()
		return n, err
	}
	return n, place(s.root, f, d)
}

// PurgeUploads implements storage.BlobStore.
func (s *EncryptedStore) PurgeUploads(_ context.Context, before time.Time) (int, error) {
	return purgeUploads(s.root, &s.live, before)
}

// newSealedFile writes a new header (a new data key) to the empty file f and returns a writer of
// its segments.
func (s *EncryptedStore) newSealedFile(f *os.File) (*segWriter, error) {
	hdr, c, err := newHeader(s.keys)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return nil, err
	}
	return newSegWriter(f, c, 0), nil
}

// copyThrough copies src to w, feeding every byte to h too.
func copyThrough(w io.Writer, h io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// writeBatch is how many sealed segments a writer gathers before it writes them.
const writeBatch = 4

// Pools of the buffers of a segment's plaintext, and of a batch of sealed segments.
var (
	plainPool = sync.Pool{New: func() any { b := make([]byte, segmentSize); return &b }}
	batchPool = sync.Pool{New: func() any { b := make([]byte, 0, writeBatch*(segmentSize+segOverhead)); return &b }}
)

// segWriter seals a stream of plaintext into the segments of f, from segment idx on. It holds a
// full segment back until more bytes come: only finish knows which segment is the final one.
type segWriter struct {
	f         *os.File
	c         *segCipher
	idx       int64  // the segment being filled
	pt        []byte // its plaintext
	out       []byte // sealed segments not yet written
	off       int64  // where out goes in f
	synced    int64  // offset up to which writeback was started
	ptp, outp *[]byte
}

func newSegWriter(f *os.File, c *segCipher, idx int64) *segWriter {
	ptp, outp := plainPool.Get().(*[]byte), batchPool.Get().(*[]byte)
	off := c.segOffset(idx)
	return &segWriter{f: f, c: c, idx: idx, pt: (*ptp)[:0], out: (*outp)[:0], off: off, synced: off, ptp: ptp, outp: outp}
}

// release returns the buffers; the writer is unusable after.
func (w *segWriter) release() {
	if w.ptp != nil {
		clear(*w.ptp) // plaintext does not linger in pooled memory
		plainPool.Put(w.ptp)
		batchPool.Put(w.outp)
		w.ptp, w.outp = nil, nil
	}
}

// Write implements io.Writer.
func (w *segWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if len(w.pt) == w.c.seg {
			w.out = w.c.seal(w.out, w.pt, w.idx, false, "")
			w.idx++
			w.pt = w.pt[:0]
			if len(w.out)+w.c.raw() > cap(w.out) {
				if err := w.flush(); err != nil {
					return n, err
				}
			}
		}
		k := copy(w.pt[len(w.pt):w.c.seg], p)
		w.pt = w.pt[:len(w.pt)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

func (w *segWriter) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(w.out, w.off); err != nil {
		return err
	}
	w.off += int64(len(w.out))
	w.out = w.out[:0]
	if w.off-w.synced >= writeback {
		// Only a hint, as in copyToFile.
		unix.SyncFileRange(int(w.f.Fd()), w.synced, w.off-w.synced, unix.SYNC_FILE_RANGE_WRITE)
		w.synced = w.off
	}
	return nil
}

// finish seals what is left as the final segment, bound to the digest d, and writes it.
func (w *segWriter) finish(d oci.Digest) error {
	w.out = w.c.seal(w.out, w.pt, w.idx, true, d)
	w.pt = w.pt[:0]
	return w.flush()
}
