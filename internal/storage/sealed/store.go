package sealed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Backend is what the layer needs of the store below: blobs, small records, and blobs stored
// without the check of their content against their digest (they hold ciphertext). Its uploads
// must be storage.RawCommitters. The filesystem and S3 stores are Backends.
type Backend interface {
	storage.BlobStore
	storage.Records
	storage.RawPutter
}

// Store is a storage.BlobStore that seals every blob before the Backend stores it (see the
// package comment), and every upload session as it arrives: nothing of a blob's plaintext reaches
// the backend. It is not a storage.Redirector (a presigned URL would serve ciphertext), nor a
// storage.FileAdopter (a plain temporary file would hold plaintext).
type Store struct {
	b    Backend
	keys Keys

	mu       sync.Mutex
	sessions map[string]*live // upload sessions with a handle open in this process

	sizes sync.Map // oci.Digest -> int64: plaintext sizes of blobs seen (see Stat)
	nsize atomic.Int64
}

// maxSizes bounds the sizes Stat remembers; past it, it forgets them all and starts again.
const maxSizes = 1 << 16

// live serializes this process's requests on one upload session, so that a status request that
// comes while a chunk is still being taken (its client gone, say) waits for it, as on one berth;
// requests of other processes are ordered by the session's record alone.
type live struct {
	mu   sync.Mutex
	refs int // handles open; guarded by Store.mu
}

// handle returns the live state of session id, for one more handle.
func (s *Store) handle(id string) *live {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.sessions[id]
	if l == nil {
		l = &live{}
		s.sessions[id] = l
	}
	l.refs++
	return l
}

// release drops a handle's hold on its session's live state.
func (s *Store) release(id string, l *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(s.sessions, id)
	}
}

var _ storage.BlobStore = (*Store)(nil)

// New returns the layer over b, sealing new data keys under keys' primary key.
func New(b Backend, keys Keys) *Store {
	return &Store{b: b, keys: keys, sessions: map[string]*live{}}
}

// FreeSpace passes the backend's storage.FreeSpacer through; over a backend without one (object
// storage), it knows no limit.
func (s *Store) FreeSpace() (int64, error) {
	if fs, ok := s.b.(storage.FreeSpacer); ok {
		return fs.FreeSpace()
	}
	return math.MaxInt64, nil
}

// Ping passes the backend's health check through.
func (s *Store) Ping(ctx context.Context) error {
	if p, ok := s.b.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

func validDigest(d oci.Digest) error {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	}
	return nil
}

// opened is a stored blob open for reading, with its key record.
type opened struct {
	src    *source
	fileID [16]byte
	rec    keyRecord
	l      *layout
}

// open opens the stored blob d and reads its header and key record. forRead says that its
// content will be read next: the header is then read as the start of a sequential read (one GET
// on S3 for the header and the content), else with a read of its bytes alone.
func (s *Store) open(ctx context.Context, d oci.Digest, forRead bool) (*opened, error) {
	if err := validDigest(d); err != nil {
		return nil, err
	}
	r, _, err := s.b.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	o := &opened{src: newSource(r)}
	hdr := make([]byte, headerSize)
	if !forRead && o.src.ra != nil {
		_, err = o.src.ra.ReadAt(hdr, 0)
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: shorter than a header", ErrCorrupt)
		}
	} else {
		err = o.src.readAt(hdr, 0)
	}
	if err == nil {
		o.fileID, err = parseHeader(hdr)
	}
	if err == nil {
		_, err = getJSON(ctx, s.b, keyRecordKey(o.fileID), &o.rec)
		if errors.Is(err, storage.ErrNotFound) {
			if _, serr := s.b.Stat(ctx, d); errors.Is(serr, storage.ErrNotFound) {
				err = fmt.Errorf("%s: deleted while opened: %w", d, storage.ErrNotFound)
			} else {
				err = fmt.Errorf("%w: no key record for it", ErrCorrupt)
			}
		}
	}
	if err == nil && o.rec.Digest != d {
		err = fmt.Errorf("%w: its key record is of %s", ErrCorrupt, o.rec.Digest)
	}
	if err == nil {
		o.l, err = newLayout(o.rec.Runs, o.rec.Size)
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	return o, nil
}

// Stat implements storage.BlobStore: the plaintext size, from the blob's key record. A blob's
// content, so its size, is the same however it was sealed (by whichever process, under whichever
// data key), so once this process has read it, Stat asks the backend only whether the blob is
// still there: one request on S3, as for an unencrypted blob.
func (s *Store) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	if v, ok := s.sizes.Load(d); ok {
		if _, err := s.b.Stat(ctx, d); err != nil {
			return 0, err
		}
		return v.(int64), nil
	}
	o, err := s.open(ctx, d, false)
	if err != nil {
		return 0, err
	}
	o.src.r.Close()
	s.rememberSize(d, o.rec.Size)
	return o.rec.Size, nil
}

func (s *Store) rememberSize(d oci.Digest, size int64) {
	if s.nsize.Add(1) > maxSizes {
		s.sizes.Clear()
		s.nsize.Store(0)
	}
	s.sizes.Store(d, size)
}

// Open implements storage.BlobStore: a reader of the plaintext that decrypts the segments it
// reads. The final segment, which binds the blob to its size and digest, is verified here, so a
// truncated, extended or misplaced blob fails before anything is served.
func (s *Store) Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	o, err := s.open(ctx, d, true)
	if err != nil {
		return nil, 0, err
	}
	c, err := o.rec.cipher(s.keys, o.fileID)
	var r *reader
	if err == nil {
		r, err = newReader(o.src, c, o.l, final{d: d, size: o.rec.Size})
	}
	if err != nil {
		o.src.r.Close()
		return nil, 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return r, o.rec.Size, nil
}

// Put implements storage.BlobStore. The key record is written before the sealed blob is
// published (when the sealer has seen the whole content and verified it), so a blob is never
// stored without the record that reads it.
func (s *Store) Put(ctx context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	v := d.Verifier()
	if _, err := s.b.Stat(ctx, d); err == nil {
		// Stored already: only the digest remains to be checked.
		n, err := io.Copy(v, r)
		if err == nil && !v.Verified() {
			err = fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
		}
		return n, err
	}
	c, wk, err := newDataKey(s.keys)
	if err != nil {
		return 0, err
	}
	var n int64
	recorded := false
	end := func(sl *sealer) ([]byte, error) {
		n = sl.n
		if sl.srcErr != nil {
			return nil, sl.srcErr
		}
		if !v.Verified() {
			return nil, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
		}
		rec := keyRecord{wrappedKey: wk, Digest: d, Size: sl.n}
		off := int64(headerSize)
		if sl.n > 0 {
			rec.Runs = append(rec.Runs, run{Off: off, Len: sl.n})
			off += rawLen(sl.n)
		}
		rec.Runs = append(rec.Runs, run{Off: off})
		if _, err := putJSON(ctx, s.b, keyRecordKey(c.fileID), rec, ""); err != nil {
			return nil, err
		}
		recorded = true
		return c.seal(nil, nil, sl.idx, &final{d: d, size: sl.n}), nil
	}
	sl := newSealer(r, c, 0, header(c.fileID), end, v)
	defer sl.release()
	if _, err := s.b.PutRaw(ctx, d, sl); err != nil {
		// The key record, if written, names no blob: remove it.
		if recorded {
			deleteRecord(context.WithoutCancel(ctx), s.b, keyRecordKey(c.fileID))
		}
		return n, err
	}
	if !sl.done { // the blob was there already (a concurrent Put): check the rest of r
		if _, err := io.Copy(io.Discard, sl); err != nil {
			return n, err
		}
		deleteRecord(ctx, s.b, keyRecordKey(c.fileID))
	}
	return n, nil
}

// Delete implements storage.BlobStore: the blob, then its key record (a crash in between leaves
// a record that names no blob, which is harmless).
func (s *Store) Delete(ctx context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	var fileID [16]byte
	known := false
	if r, _, err := s.b.Open(ctx, d); err == nil {
		hdr := make([]byte, headerSize)
		src := newSource(r)
		read := src.readAt
		if src.ra != nil {
			read = func(p []byte, off int64) error { _, err := src.ra.ReadAt(p, off); return err }
		}
		if err := read(hdr, 0); err == nil {
			if fileID, err = parseHeader(hdr); err == nil {
				known = true
			}
		}
		r.Close()
	}
	s.sizes.Delete(d)
	if err := s.b.Delete(ctx, d); err != nil {
		return err
	}
	if known {
		return deleteRecord(ctx, s.b, keyRecordKey(fileID))
	}
	return nil
}

// PurgeUploads implements storage.BlobStore: the backend's sessions, then the records of
// sessions that the backend no longer has (purged, or committed by a process that died before
// it removed the record).
func (s *Store) PurgeUploads(ctx context.Context, before time.Time) (int, error) {
	n, err := s.b.PurgeUploads(ctx, before)
	if err != nil {
		return n, err
	}
	keys, err := s.b.ListRecords(ctx, sessionPrefix)
	if err != nil {
		return n, err
	}
	for _, k := range keys {
		id := k[len(sessionPrefix):]
		u, err := s.b.ResumeUpload(ctx, id)
		if err == nil {
			u.Close()
			continue
		}
		if errors.Is(err, storage.ErrUploadUnknown) {
			if err := deleteRecord(ctx, s.b, k); err != nil {
				return n, err
			}
			continue
		}
		return n, err
	}
	return n, nil
}

// RemoveTemps passes the backend's storage.TempRemover through (a spool's temporary file is the
// backend's), and does nothing over one without it.
func (s *Store) RemoveTemps() (int, error) {
	if tr, ok := s.b.(storage.TempRemover); ok {
		return tr.RemoveTemps()
	}
	return 0, nil
}
