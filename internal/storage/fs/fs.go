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

	"golang.org/x/sys/unix"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Store is a BlobStore on a local directory.
type Store struct {
	root string
	live sync.Map // upload id -> *live
}

var (
	_ storage.BlobStore   = (*Store)(nil)
	_ storage.FileAdopter = (*Store)(nil)
)

// New opens (creating if needed) a blob store rooted at dir. Whether its blobs are sealed is the
// sealed layer's record to tell (internal/storage/sealed).
func New(dir string) (*Store, error) {
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	return &Store{root: dir}, nil
}

func makeDirs(dir string) error {
	for _, d := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			return fmt.Errorf("blob store: %w", err)
		}
	}
	return nil
}

func (s *Store) blobPath(d oci.Digest) string { return blobPath(s.root, d) }

// blobPath is built only from a validated digest, so it cannot leave the store.
func blobPath(root string, d oci.Digest) string {
	enc := d.Encoded()
	return filepath.Join(root, "blobs", string(d.Algorithm()), enc[:2], enc)
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
func (s *Store) Delete(_ context.Context, d oci.Digest) error { return deleteBlob(s.root, d) }

func deleteBlob(root string, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	err := os.Remove(blobPath(root, d))
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
	n, err := copyToFile(f, 0, v, r)
	if err != nil {
		f.Close()
		return n, err
	}
	if !v.Verified() {
		f.Close()
		return n, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
	}
	return n, place(s.root, f, d)
}

// CreateTemp implements storage.FileAdopter.
func (s *Store) CreateTemp() (*os.File, error) {
	return os.CreateTemp(filepath.Join(s.root, "uploads"), "put-*")
}

// Adopt implements storage.FileAdopter.
func (s *Store) Adopt(_ context.Context, d oci.Digest, f *os.File) error {
	if err := validDigest(d); err != nil {
		f.Close()
		return err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	return place(s.root, f, d)
}

// place makes the complete, verified file f the blob d: fsync, rename, fsync the directory. It
// closes f. If the blob is already there, f is dropped: content-addressed files are identical.
func place(root string, f *os.File, d oci.Digest) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return install(root, f.Name(), d)
}

// install renames the complete, verified, fsynced file name to the blob d, unless it is there.
func install(root, name string, d oci.Digest) error {
	dst := blobPath(root, d)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := os.Rename(name, dst); err != nil {
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

// writeback is how much written data may wait in the page cache before the kernel is asked to
// start writing it out. By the time a blob is committed most of it is on disk, so the fsync that
// makes it durable is short, and disk writes overlap with receiving the body.
const writeback = 1 << 20

// copyToFile appends src to f, which is at offset off, and feeds every byte written to h (if not
// nil). It returns the number of bytes written to f.
func copyToFile(f *os.File, off int64, h io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n, started int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			w, err := f.Write(buf[:k])
			n += int64(w)
			if err != nil {
				return n, err
			}
			if h != nil {
				h.Write(buf[:k])
			}
			if n-started >= writeback {
				// Only a hint: failing to start writeback early costs time at fsync, nothing else.
				unix.SyncFileRange(int(f.Fd()), off+started, n-started, unix.SYNC_FILE_RANGE_WRITE)
				started = n
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
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

// Ping reports whether the store's directory can be read: a disk that went away, or a mount that
// went stale, makes berth unready (/readyz).
func (s *Store) Ping(context.Context) error { return ping(s.root) }

func ping(root string) error {
	d, err := os.Open(filepath.Join(root, "blobs"))
	if err != nil {
		return err
	}
	defer d.Close()
	_, err = d.Readdirnames(1)
	if err == io.EOF {
		err = nil
	}
	return err
}
