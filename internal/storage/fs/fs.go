// Package fs is the local filesystem blob store: blobs/<algorithm>/<2 hex>/<hex>, written to a
// temporary file, fsynced and renamed into place, so a blob is either whole and verified or absent.
package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Store is a BlobStore on a local directory.
type Store struct {
	root string
	live sync.Map // upload id -> *live
}

var _ storage.BlobStore = (*Store)(nil)

// New opens (creating if needed) a blob store rooted at dir.
func New(dir string) (*Store, error) {
	for _, d := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	return &Store{root: dir}, nil
}

// blobPath is built only from a validated digest, so it cannot leave the store.
func (s *Store) blobPath(d oci.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc)
}

func validDigest(d oci.Digest) error {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	}
	return nil
}

// Stat implements storage.BlobStore.
func (s *Store) Stat(_ context.Context, d oci.Digest) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Open implements storage.BlobStore; the reader is an *os.File.
func (s *Store) Open(_ context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	if err := validDigest(d); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// Delete implements storage.BlobStore.
func (s *Store) Delete(_ context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	err := os.Remove(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	return err
}

// Put implements storage.BlobStore.
func (s *Store) Put(ctx context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "uploads"), "put-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	v := d.Verifier()
	n, err := copyBuffer(io.MultiWriter(f, v), r)
	if err != nil {
		f.Close()
		return n, err
	}
	if !v.Verified() {
		f.Close()
		return n, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
	}
	return n, s.place(f, d)
}

// place makes the complete, verified file f the blob d: fsync, rename, fsync the directory. It
// closes f. If the blob is already there, f is dropped: content-addressed files are identical.
func (s *Store) place(f *os.File, d oci.Digest) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	dst := s.blobPath(d)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// bufPool holds copy buffers: large enough to keep syscalls few, pooled to keep memory flat.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// Hide any WriterTo/ReaderFrom so that the pooled buffer is the one used.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// validID reports whether id has the form newID makes; only such ids are ever turned into paths.
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
