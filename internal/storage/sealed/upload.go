package sealed

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// An upload session is a session of the backend (its id is the session's) and a record,
// uploads/<id>. The backend's session holds the blob's header and then, for every chunk, one run
// of sealed segments: a chunk is sealed as it arrives, its last segment partial, so nothing is
// ever sealed twice and no plaintext waits anywhere for more bytes. The record holds the wrapped
// data key, the runs that count, the size, and the running SHA-256 and SHA-512 of the plaintext
// (sealed under the data key), so that any process continues the session and Commit does not read
// it again.
//
// The record is what makes a chunk taken: a chunk is first appended to the backend's session,
// wherever that ends, and then named in the record by a write conditional on the version the
// chunk's offset was checked against. Of two writers at one offset, in any processes, only one
// record write succeeds; the other's run (and the run of a writer that died before its record
// write) stays in the backend's session but is named by no record, so it is never read: at
// Commit it is copied into the blob with the rest, and skipped. Every acknowledged byte is in a
// run the record names; a chunk whose record write failed is not acknowledged.
//
// Commit appends the final segment (empty, bound to the digest and size) as the last run, marks
// the record as committing (which fences appends), writes the blob's key record, and has the
// backend make its session the blob (storage.RawCommitter) before the session record goes. A
// crash anywhere leaves either a session that continues (or commits again), or a record that the
// purge removes.
const sessionPrefix = "uploads/"

// sessionRecord is uploads/<id>.
type sessionRecord struct {
	wrappedKey
	File       string `json:"file"` // the file id, hex
	Runs       []run  `json:"runs,omitempty"`
	Size       int64  `json:"size"`
	Segments   int64  `json:"segments"`
	Hashes     []byte `json:"hashes"` // sealed: see sealHashes
	Committing bool   `json:"committing,omitempty"`
}

func sessionKey(id string) string { return sessionPrefix + id }

// validID reports whether id has the form of the backends' upload ids; only such ids are looked up.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hashAAD binds sealed hash states to the session and its size.
func (c *segCipher) hashAAD(size int64) []byte {
	a := append([]byte("berth hash state"), c.fileID[:]...)
	return binary.BigEndian.AppendUint64(a, uint64(size))
}

// sealHashes seals the running hashes of a session of size bytes.
func (c *segCipher) sealHashes(size int64, h256, h512 hash.Hash) ([]byte, error) {
	a, err := h256.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b, err := h512.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	pt := binary.BigEndian.AppendUint16(nil, uint16(len(a)))
	pt = append(append(pt, a...), b...)
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return c.aead.Seal(nonce, nonce, pt, c.hashAAD(size)), nil
}

// openHashes reverses sealHashes.
func (c *segCipher) openHashes(sealed []byte, size int64) (h256, h512 hash.Hash, err error) {
	bad := fmt.Errorf("%w: the session's hash state does not decrypt", ErrCorrupt)
	if len(sealed) < overhead {
		return nil, nil, bad
	}
	pt, err := c.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], c.hashAAD(size))
	if err != nil || len(pt) < 2 {
		return nil, nil, bad
	}
	n := int(binary.BigEndian.Uint16(pt))
	if len(pt) < 2+n {
		return nil, nil, bad
	}
	h256, h512 = sha256.New(), sha512.New()
	if h256.(encoding.BinaryUnmarshaler).UnmarshalBinary(pt[2:2+n]) != nil ||
		h512.(encoding.BinaryUnmarshaler).UnmarshalBinary(pt[2+n:]) != nil {
		return nil, nil, bad
	}
	return h256, h512, nil
}

type upload struct {
	s    *Store
	u    storage.Upload // the backend's session
	id   string
	c    *segCipher // once unwrapped
	live *live      // nil once closed
}

// lock locks the session for one request in this process; ErrUploadUnknown once closed.
func (u *upload) lock() (func(), error) {
	if u.live == nil {
		return nil, fmt.Errorf("%s: closed: %w", u.id, storage.ErrUploadUnknown)
	}
	u.live.mu.Lock()
	return u.live.mu.Unlock, nil
}

// NewUpload implements storage.BlobStore.
func (s *Store) NewUpload(ctx context.Context) (storage.Upload, error) {
	c, wk, err := newDataKey(s.keys)
	if err != nil {
		return nil, err
	}
	var u storage.Upload
	if ru, ok := s.b.(storage.RawUploader); ok {
		u, err = ru.NewRawUpload(ctx) // the layer hashes the plaintext; the ciphertext needs none
	} else {
		u, err = s.b.NewUpload(ctx)
	}
	if err != nil {
		return nil, err
	}
	if _, ok := u.(storage.RawCommitter); !ok {
		u.Cancel(ctx)
		return nil, errors.New("sealed: the backend's uploads cannot be committed raw (storage.RawCommitter)")
	}
	hs, err := c.sealHashes(0, sha256.New(), sha512.New())
	if err == nil {
		_, err = u.Append(ctx, bytes.NewReader(header(c.fileID)))
	}
	if err == nil {
		rec := sessionRecord{wrappedKey: wk, File: hex.EncodeToString(c.fileID[:]), Hashes: hs}
		_, err = putJSON(ctx, s.b, sessionKey(u.ID()), rec, "")
	}
	if err != nil {
		u.Cancel(context.WithoutCancel(ctx))
		return nil, err
	}
	return &upload{s: s, u: u, id: u.ID(), c: c, live: s.handle(u.ID())}, nil
}

// ResumeUpload implements storage.BlobStore.
func (s *Store) ResumeUpload(ctx context.Context, id string) (storage.Upload, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, storage.ErrUploadUnknown)
	}
	up := &upload{s: s, id: id}
	if _, _, err := up.load(ctx); err != nil {
		return nil, err
	}
	u, err := s.b.ResumeUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	up.u, up.live = u, s.handle(id)
	return up, nil
}

// load reads the session's record, and unwraps its data key the first time.
func (u *upload) load(ctx context.Context) (*sessionRecord, string, error) {
	var rec sessionRecord
	ver, err := getJSON(ctx, u.s.b, sessionKey(u.id), &rec)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", fmt.Errorf("%s: %w", u.id, storage.ErrUploadUnknown)
	}
	if err != nil {
		return nil, "", err
	}
	if u.c == nil {
		var fileID [16]byte
		if b, err := hex.DecodeString(rec.File); err != nil || len(b) != 16 {
			return nil, "", fmt.Errorf("upload %s: %w: bad file id", u.id, ErrCorrupt)
		} else {
			copy(fileID[:], b)
		}
		if u.c, err = rec.cipher(u.s.keys, fileID); err != nil {
			return nil, "", fmt.Errorf("upload %s: %w", u.id, err)
		}
	}
	return &rec, ver, nil
}

func (u *upload) ID() string { return u.id }

// Size implements storage.Upload: the size the session's record states now.
func (u *upload) Size() int64 {
	unlock, err := u.lock()
	if err != nil {
		return 0
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, _, err := u.load(ctx)
	if err != nil {
		return 0
	}
	return rec.Size
}

// Append implements storage.Upload.
func (u *upload) Append(ctx context.Context, r io.Reader) (int64, error) {
	return u.AppendAt(ctx, r, -1)
}

// land appends what r yields to the backend's session, wherever it ends, and returns where it
// went. A session that grew meanwhile (another process's chunk, or a run named by no record)
// is no conflict as long as nothing of r was read.
func (u *upload) land(ctx context.Context, r io.Reader, reads func() bool) (int64, error) {
	for attempt := 0; ; attempt++ {
		at := u.u.Size()
		_, err := u.u.AppendAt(ctx, r, at)
		if err == nil {
			return at, nil
		}
		if !errors.Is(err, storage.ErrOffset) || reads() || attempt == 3 {
			return 0, err
		}
	}
}

// AppendAt implements storage.Upload; a negative offset means wherever the upload ends. Bytes of
// a chunk that did arrive before r failed are kept, and counted.
func (u *upload) AppendAt(ctx context.Context, r io.Reader, offset int64) (int64, error) {
	unlock, err := u.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	rec, ver, err := u.load(ctx)
	if err != nil {
		return 0, err
	}
	if rec.Committing {
		return 0, fmt.Errorf("%w: upload %s is being committed", storage.ErrOffset, u.id)
	}
	if offset >= 0 && offset != rec.Size {
		return 0, fmt.Errorf("%w: chunk starts at %d, upload has %d bytes", storage.ErrOffset, offset, rec.Size)
	}
	h256, h512, err := u.c.openHashes(rec.Hashes, rec.Size)
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", u.id, err)
	}
	sl := newSealer(r, u.c, rec.Segments, nil, nil, h256, h512)
	defer sl.release()
	counted := &countingReader{r: sl}
	at, err := u.land(ctx, counted, func() bool { return counted.n > 0 || sl.done })
	if err != nil {
		return 0, err
	}
	if sl.n == 0 {
		return 0, sl.srcErr
	}
	wctx := ctx
	if sl.srcErr != nil { // the client may be gone: keep what arrived all the same
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
	}
	rec.Runs = append(rec.Runs, run{Off: at, Len: sl.n})
	rec.Size += sl.n
	rec.Segments = sl.idx
	if rec.Hashes, err = u.c.sealHashes(rec.Size, h256, h512); err != nil {
		return 0, err
	}
	if _, err := putJSON(wctx, u.s.b, sessionKey(u.id), rec, ver); err != nil {
		if errors.Is(err, storage.ErrRecordChanged) {
			if _, _, lerr := u.load(wctx); errors.Is(lerr, storage.ErrUploadUnknown) {
				return 0, lerr
			}
			return 0, fmt.Errorf("%w: another request changed upload %s first", storage.ErrOffset, u.id)
		}
		return 0, err
	}
	return sl.n, sl.srcErr
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// end discards the session: the backend's, then the record.
func (u *upload) end(ctx context.Context) error {
	err := u.u.Cancel(ctx)
	if err != nil && !errors.Is(err, storage.ErrUploadUnknown) {
		return err
	}
	if derr := deleteRecord(ctx, u.s.b, sessionKey(u.id)); derr != nil {
		return derr
	}
	return err
}

// Commit implements storage.Upload.
func (u *upload) Commit(ctx context.Context, want oci.Digest) error {
	if _, err := oci.ParseDigest(string(want)); err != nil {
		return err
	}
	unlock, err := u.lock()
	if err != nil {
		return err
	}
	defer unlock()
	rec, ver, err := u.load(ctx)
	if err != nil {
		return err
	}
	h256, h512, err := u.c.openHashes(rec.Hashes, rec.Size)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	var h hash.Hash
	switch want.Algorithm() {
	case digest.SHA256:
		h = h256
	case digest.SHA512:
		h = h512
	default:
		return fmt.Errorf("digest algorithm %s: not supported", want.Algorithm())
	}
	if got := digest.NewDigest(want.Algorithm(), h); got != want {
		if err := u.end(ctx); err != nil {
			return err
		}
		return fmt.Errorf("%w: got %s, want %s", storage.ErrDigestMismatch, got, want)
	}
	if _, err := u.s.b.Stat(ctx, want); err == nil {
		return u.end(ctx) // stored already
	}
	if !rec.Committing {
		fin := u.c.seal(nil, nil, rec.Segments, &final{d: want, size: rec.Size})
		at, err := u.land(ctx, bytes.NewReader(fin), func() bool { return false })
		if err != nil {
			return err
		}
		rec.Runs = append(rec.Runs, run{Off: at})
		rec.Committing = true
		if _, err := putJSON(ctx, u.s.b, sessionKey(u.id), rec, ver); err != nil {
			if errors.Is(err, storage.ErrRecordChanged) {
				return fmt.Errorf("%w: another request changed upload %s during its commit", storage.ErrOffset, u.id)
			}
			return err
		}
	}
	kr := keyRecord{wrappedKey: rec.wrappedKey, Digest: want, Size: rec.Size, Runs: rec.Runs}
	if _, err := putJSON(ctx, u.s.b, keyRecordKey(u.c.fileID), kr, ""); err != nil && !errors.Is(err, storage.ErrRecordChanged) {
		return err // ErrRecordChanged: a commit that was interrupted wrote it
	}
	if err := u.u.(storage.RawCommitter).CommitRaw(ctx, want); err != nil {
		return err
	}
	return deleteRecord(ctx, u.s.b, sessionKey(u.id))
}

// Cancel implements storage.Upload.
func (u *upload) Cancel(ctx context.Context) error {
	unlock, err := u.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return u.end(ctx)
}

// Close implements storage.Upload.
func (u *upload) Close() error {
	if u.live == nil {
		return nil
	}
	u.s.release(u.id, u.live)
	u.live = nil
	return u.u.Close()
}
