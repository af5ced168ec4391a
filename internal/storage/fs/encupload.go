package fs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// An encrypted upload session is uploads/<id>/data, the header and the full segments received
// so far (all sealed as not final), and uploads/<id>/tail, the bytes after the last full segment
// sealed as one segment: index u64 | nonce | ciphertext | tag. Chunks arrive at any size, so the
// trailing partial segment is sealed again (with a fresh nonce) on every append, but never in
// place, where a crash in the middle of the write would lose bytes already acknowledged:
//
//  1. the full segments the append completes (the first of them begins with the old tail's
//     bytes) are appended to data, which is only ever appended to;
//  2. the new tail is written to tail.tmp and renamed over tail (or tail is removed when the
//     upload ends on a segment boundary).
//
// A crash before 1 completes leaves a partial segment at the end of data, which is not counted
// (and is cut off before the next write), and the old tail. A crash between 1 and 2 leaves a
// tail whose index is below the number of full segments: its bytes are in the data file, so it
// is stale and is dropped. Either way every acknowledged byte is there once. Like the plain
// store, appends are not fsynced (a power failure may lose the session's last bytes; the
// acknowledged ones survive a process crash): Commit re-verifies the content when the running
// hash is not known, and a segment that does not decrypt is a digest mismatch, so lost bytes can
// never be committed. Commit appends the final segment (the tail's bytes, sealed as final with the
// digest) to data, fsyncs it and renames it into blobs/: the blob keeps the session's data key.
const (
	tailFile    = "tail"
	tailTmpFile = "tail.tmp"
)

// encUpload is an upload session of an EncryptedStore.
type encUpload struct {
	session // f is opened read-write
	s       *EncryptedStore
}

// NewUpload implements storage.BlobStore.
func (s *EncryptedStore) NewUpload(_ context.Context) (storage.Upload, error) {
	id := newID()
	dir := filepath.Join(s.root, "uploads", id)
	if err := os.Mkdir(dir, 0o750); err != nil {
		return nil, err
	}
	hdr, c, err := newHeader(s.keys)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o640)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	l := &live{h: sha256.New(), c: c}
	s.live.Store(id, l)
	return &encUpload{s: s, session: session{sessions: &s.live, id: id, dir: dir, live: l, f: f}}, nil
}

// ResumeUpload implements storage.BlobStore.
func (s *EncryptedStore) ResumeUpload(_ context.Context, id string) (storage.Upload, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, storage.ErrUploadUnknown)
	}
	dir, f, err := openSession(s.root, id, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	v, _ := s.live.LoadOrStore(id, &live{size: -1})
	return &encUpload{s: s, session: session{sessions: &s.live, id: id, dir: dir, live: v.(*live), f: f}}, nil
}

// Size implements storage.Upload.
func (u *encUpload) Size() int64 {
	u.live.mu.Lock()
	defer u.live.mu.Unlock()
	if err := u.sync(); err != nil {
		return 0
	}
	return u.live.size
}

// sync brings the live state in line with the files (a restart, a failed request). Callers hold
// live.mu.
func (u *encUpload) sync() error {
	if u.f == nil {
		return fmt.Errorf("%s: %w", u.id, storage.ErrUploadUnknown)
	}
	// As in the plain store: only the current data file is the upload.
	fi, err := current(u.id, u.dir, u.f)
	if err != nil {
		return err
	}
	l := u.live
	if l.c == nil {
		if l.c, err = openCipher(u.f, u.s.keys); err != nil {
			return fmt.Errorf("upload %s: %w", u.id, err)
		}
	}
	if fi.Size() < hdrSize {
		return fmt.Errorf("upload %s: %w: data file of %d bytes", u.id, ErrCorrupt, fi.Size())
	}
	full := (fi.Size() - hdrSize) / int64(l.c.raw())
	tail, err := u.tailLen(full)
	if err != nil {
		return err
	}
	l.full, l.tail = full, tail
	if size := full*int64(l.c.seg) + int64(tail); size != l.size {
		l.size, l.h = size, nil
	}
	return nil
}

// tailLen is the plaintext size of the tail that follows full segments; a stale tail (see above)
// is removed.
func (u *encUpload) tailLen(full int64) (int, error) {
	path := filepath.Join(u.dir, tailFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var ib [8]byte
	n := fi.Size() - 8 - segOverhead
	if _, err := f.ReadAt(ib[:], 0); err != nil || n <= 0 || n >= int64(u.live.c.seg) || binary.BigEndian.Uint64(ib[:]) != uint64(full) {
		// Stale (its bytes are in the data file), or left by a power failure that lost data
		// segments: either way not the upload's end. The client learns the size from the Range
		// header and goes on from there.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		return 0, nil
	}
	return int(n), nil
}

// readTail decrypts the tail (of l.tail bytes after l.full segments) into dst.
func (u *encUpload) readTail(dst []byte) ([]byte, error) {
	l := u.live
	raw, err := os.ReadFile(filepath.Join(u.dir, tailFile))
	if err != nil {
		return nil, err
	}
	if len(raw) != 8+l.tail+segOverhead || binary.BigEndian.Uint64(raw) != uint64(l.full) {
		return nil, fmt.Errorf("upload %s: tail changed: %w", u.id, ErrCorrupt)
	}
	pt, err := l.c.open(raw[8:], l.full, false, "")
	if err != nil {
		return nil, fmt.Errorf("upload %s: tail: %w", u.id, err)
	}
	dst = append(dst[:0], pt...)
	clear(raw)
	return dst, nil
}

// Append implements storage.Upload.
func (u *encUpload) Append(ctx context.Context, r io.Reader) (int64, error) {
	return u.AppendAt(ctx, r, -1)
}

// AppendAt implements storage.Upload; a negative offset means wherever the upload ends.
func (u *encUpload) AppendAt(_ context.Context, r io.Reader, offset int64) (int64, error) {
	l := u.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := u.sync(); err != nil {
		return 0, err
	}
	if offset >= 0 && offset != l.size {
		return 0, fmt.Errorf("%w: chunk starts at %d, upload has %d bytes", storage.ErrOffset, offset, l.size)
	}
	before := l.size
	n, err := u.append(r)
	if err != nil {
		// The bytes that reached the files stay (the client learns the offset from the Range
		// header); the hash, which may have seen others, is dropped.
		l.h = nil
		if serr := u.sync(); serr == nil {
			n = max(l.size-before, 0)
		}
	}
	return n, err
}

// append is AppendAt's work (see the comment at the top).
func (u *encUpload) append(r io.Reader) (int64, error) {
	l := u.live
	c := l.c
	if err := u.cutStray(); err != nil {
		return 0, err
	}
	w := newSegWriter(u.f, c, l.full)
	defer w.release()
	if l.tail > 0 {
		var err error
		if w.pt, err = u.readTail(w.pt); err != nil {
			return 0, err
		}
	}
	var h io.Writer = io.Discard
	if l.h != nil {
		h = l.h
	}
	n, rerr := copyThrough(w, h, r)
	if len(w.pt) == c.seg { // uploads seal no final segment: a full one is just full
		w.out = c.seal(w.out, w.pt, w.idx, false, "")
		w.idx++
		w.pt = w.pt[:0]
	}
	if err := w.flush(); err != nil {
		return n, err
	}
	if err := u.writeTail(w); err != nil {
		return n, err
	}
	l.full, l.tail = w.idx, len(w.pt)
	l.size = l.full*int64(c.seg) + int64(l.tail)
	return n, rerr
}

// cutStray cuts off what follows the full segments in the data file: a partial segment of a
// write that a crash or an error interrupted, or the final segment of an interrupted Commit.
func (u *encUpload) cutStray() error {
	fi, err := u.f.Stat()
	if err != nil {
		return err
	}
	if want := u.live.c.segOffset(u.live.full); fi.Size() != want {
		return u.f.Truncate(want)
	}
	return nil
}

// writeTail replaces the tail file with w's partial segment (none when it is empty).
func (u *encUpload) writeTail(w *segWriter) error {
	path := filepath.Join(u.dir, tailFile)
	if len(w.pt) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	buf := binary.BigEndian.AppendUint64(w.out[:0], uint64(w.idx))
	buf = w.c.seal(buf, w.pt, w.idx, false, "")
	tmp := filepath.Join(u.dir, tailTmpFile)
	if err := os.WriteFile(tmp, buf, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Commit implements storage.Upload.
func (u *encUpload) Commit(_ context.Context, want oci.Digest) error {
	if _, err := oci.ParseDigest(string(want)); err != nil {
		return err // go-digest panics on algorithms it cannot compute
	}
	l := u.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := u.sync(); err != nil {
		return err
	}
	var got digest.Digest
	if l.h != nil && want.Algorithm() == digest.SHA256 {
		got = digest.NewDigest(digest.SHA256, l.h)
	} else {
		var err error
		got, err = u.hashStored(want.Algorithm())
		if errors.Is(err, ErrCorrupt) {
			u.remove()
			return fmt.Errorf("%w: upload %s does not decrypt: %v", storage.ErrDigestMismatch, u.id, err)
		}
		if err != nil {
			return err
		}
	}
	if got != want {
		u.remove()
		return fmt.Errorf("%w: got %s, want %s", storage.ErrDigestMismatch, got, want)
	}
	if err := u.cutStray(); err != nil {
		return err
	}
	w := newSegWriter(u.f, l.c, l.full)
	defer w.release()
	if l.tail > 0 {
		var err error
		if w.pt, err = u.readTail(w.pt); err != nil {
			u.remove()
			return fmt.Errorf("%w: %v", storage.ErrDigestMismatch, err)
		}
	}
	if err := w.finish(want); err != nil {
		return err
	}
	err := place(u.s.root, u.f, want)
	u.f = nil
	if err != nil {
		return err
	}
	return u.remove()
}

// hashStored decrypts the session's content and hashes it.
func (u *encUpload) hashStored(alg digest.Algorithm) (digest.Digest, error) {
	l := u.live
	h := alg.Hash()
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	raw := l.c.raw()
	for i := int64(0); i < l.full; i += writeBatch {
		n := int(min(writeBatch, l.full-i))
		buf := (*bp)[:n*raw]
		if _, err := u.f.ReadAt(buf, l.c.segOffset(i)); err != nil {
			return "", err
		}
		for j := range n {
			pt, err := l.c.open(buf[j*raw:(j+1)*raw], i+int64(j), false, "")
			if err != nil {
				return "", err
			}
			h.Write(pt)
		}
	}
	if l.tail > 0 {
		pp := plainPool.Get().(*[]byte)
		defer plainPool.Put(pp)
		pt, err := u.readTail((*pp)[:0])
		if err != nil {
			return "", err
		}
		h.Write(pt)
		clear(pt)
	}
	return digest.NewDigest(alg, h), nil
}
