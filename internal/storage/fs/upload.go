package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// upload is an upload session: uploads/<id>/data holds the bytes received. The running sha256 of
// those bytes is kept in memory (live), so that committing a chunked upload does not read it again.
// It is deliberately not persisted: after a restart the data is rehashed once at commit, so even
// bytes lost from the page cache by a power failure can never be committed under the wrong digest.
type upload struct {
	session
	s *Store
}

// session is what an upload holds: the session's directory, its data file, and its live state in
// the store's map of them.
type session struct {
	sessions *sync.Map // the store's live states, by upload id
	id       string
	dir      string
	live     *live
	f        *os.File
}

func (u *session) ID() string { return u.id }

// Cancel implements storage.Upload.
func (u *session) Cancel(_ context.Context) error {
	u.live.mu.Lock()
	defer u.live.mu.Unlock()
	return u.remove()
}

func (u *session) remove() error {
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	u.sessions.Delete(u.id)
	return os.RemoveAll(u.dir)
}

// Close implements storage.Upload.
func (u *session) Close() error {
	if u.f == nil {
		return nil
	}
	err := u.f.Close()
	u.f = nil
	return err
}

// live is the in-process state of an upload; mu serializes the requests that touch it.
type live struct {
	mu   sync.Mutex
	size int64
	h    hash.Hash // sha256 of data[:size], or nil when it must be recomputed
}

// NewUpload implements storage.BlobStore.
func (s *Store) NewUpload(_ context.Context) (storage.Upload, error) { return s.newUpload(false) }

// NewRawUpload implements storage.RawUploader: a session without the running hash (Commit
// would hash the data file).
func (s *Store) NewRawUpload(_ context.Context) (storage.Upload, error) { return s.newUpload(true) }

func (s *Store) newUpload(raw bool) (storage.Upload, error) {
	id := newID()
	dir := filepath.Join(s.root, "uploads", id)
	if err := os.Mkdir(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	l := &live{}
	if !raw {
		l.h = sha256.New()
	}
	s.live.Store(id, l)
	return &upload{s: s, session: session{sessions: &s.live, id: id, dir: dir, live: l, f: f}}, nil
}

// ResumeUpload implements storage.BlobStore.
func (s *Store) ResumeUpload(_ context.Context, id string) (storage.Upload, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, storage.ErrUploadUnknown)
	}
	dir, f, err := openSession(s.root, id, os.O_WRONLY)
	if err != nil {
		return nil, err
	}
	v, _ := s.live.LoadOrStore(id, &live{size: -1})
	return &upload{s: s, session: session{sessions: &s.live, id: id, dir: dir, live: v.(*live), f: f}}, nil
}

// openSession opens the data file of upload session id (checked by the caller) with flag.
func openSession(root, id string, flag int) (dir string, f *os.File, err error) {
	dir = filepath.Join(root, "uploads", id)
	f, err = os.OpenFile(filepath.Join(dir, "data"), flag, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("%s: %w", id, storage.ErrUploadUnknown)
	}
	return dir, f, err
}

// current checks that f is still session id's data file, and returns its FileInfo: the session
// may have ended through another handle, committed (f is now the blob, which must never change)
// or cancelled.
func current(id, dir string, f *os.File) (os.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	cur, err := os.Stat(filepath.Join(dir, "data"))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !os.SameFile(fi, cur)) {
		return nil, fmt.Errorf("%s: %w", id, storage.ErrUploadUnknown)
	}
	return fi, err
}

// Size implements storage.Upload.
func (u *upload) Size() int64 {
	u.live.mu.Lock()
	defer u.live.mu.Unlock()
	if err := u.sync(); err != nil {
		return 0
	}
	return u.live.size
}

// sync brings the live state in line with the data file, which another process or a failed
// request may have changed. Callers hold live.mu.
func (u *upload) sync() error {
	if u.f == nil {
		return fmt.Errorf("%s: %w", u.id, storage.ErrUploadUnknown)
	}
	if _, err := current(u.id, u.dir, u.f); err != nil {
		return err
	}
	end, err := u.f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if end != u.live.size {
		u.live.size, u.live.h = end, nil
	}
	return nil
}

// Append implements storage.Upload. Appends to one upload are serialized in this process.
func (u *upload) Append(ctx context.Context, r io.Reader) (int64, error) {
	return u.AppendAt(ctx, r, -1)
}

// AppendAt implements storage.Upload; a negative offset means wherever the upload ends.
func (u *upload) AppendAt(_ context.Context, r io.Reader, offset int64) (int64, error) {
	l := u.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := u.sync(); err != nil {
		return 0, err
	}
	if offset >= 0 && offset != l.size {
		return 0, fmt.Errorf("%w: chunk starts at %d, upload has %d bytes", storage.ErrOffset, offset, l.size)
	}
	var h io.Writer
	if l.h != nil {
		h = l.h
	}
	n, err := copyToFile(u.f, l.size, h, r)
	l.size += n
	if err != nil {
		// The bytes that did arrive stay (the client learns the offset from the Range header),
		// but a hash that may have seen bytes the file did not is dropped.
		l.h = nil
	}
	return n, err
}

// Commit implements storage.Upload.
func (u *upload) Commit(_ context.Context, want oci.Digest) error {
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
		f, err := os.Open(u.f.Name())
		if err != nil {
			return err
		}
		got, err = want.Algorithm().FromReader(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if got != want {
		u.remove()
		return fmt.Errorf("%w: got %s, want %s", storage.ErrDigestMismatch, got, want)
	}
	err := place(u.s.root, u.f, want)
	u.f = nil
	if err != nil {
		return err
	}
	return u.remove()
}

// PurgeUploads implements storage.BlobStore: it removes upload sessions whose data was last
// written before before, and the temporary files of Put that a crash left behind.
func (s *Store) PurgeUploads(_ context.Context, before time.Time) (int, error) {
	return purgeUploads(s.root, &s.live, before)
}

func purgeUploads(root string, sessions *sync.Map, before time.Time) (int, error) {
	dir := filepath.Join(root, "uploads")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir() && validID(name):
			fi, err := os.Stat(filepath.Join(dir, name, "data"))
			if errors.Is(err, fs.ErrNotExist) {
				// No data: the session is being created or committed right now, or a crash left
				// it half made. The directory's own time tells which.
				fi, err = os.Stat(filepath.Join(dir, name))
				if errors.Is(err, fs.ErrNotExist) {
					continue // ended meanwhile
				}
			}
			if err == nil && !fi.ModTime().Before(before) {
				continue
			}
			if v, ok := sessions.Load(name); ok {
				// Hold the session's lock so that no request appends while it goes.
				l := v.(*live)
				l.mu.Lock()
				err = os.RemoveAll(filepath.Join(dir, name))
				sessions.Delete(name)
				l.mu.Unlock()
			} else {
				err = os.RemoveAll(filepath.Join(dir, name))
			}
			if err != nil {
				return n, err
			}
			n++
		case strings.HasPrefix(name, "put-"):
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(before) {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}
	return n, nil
}
