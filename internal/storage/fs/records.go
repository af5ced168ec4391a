package fs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Records (storage.Records) are files under records/, replaced atomically (temporary file, fsync,
// rename, fsync of the directory). A record's version is the SHA-256 of its content. A
// compare-and-swap holds an exclusive flock on records/.lock for its read and its write, so that
// two writers, in this process or another on the same directory, never both win.

var (
	_ storage.Records      = (*Store)(nil)
	_ storage.RawPutter    = (*Store)(nil)
	_ storage.RawUploader  = (*Store)(nil)
	_ storage.RawCommitter = (*upload)(nil)
)

const recordsDir = "records"

// validRecordKey reports whether key is a path of [a-z0-9._-] names, none of them "." or "..".
func validRecordKey(key string) bool {
	if key == "" || len(key) > 512 {
		return false
	}
	for _, name := range strings.Split(key, "/") {
		if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") {
			return false
		}
		for _, c := range name {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
				return false
			}
		}
	}
	return true
}

func (s *Store) recordPath(key string) (string, error) {
	if !validRecordKey(key) {
		return "", fmt.Errorf("record key %q: not a valid key", key)
	}
	return filepath.Join(s.root, recordsDir, filepath.FromSlash(key)), nil
}

func recordVersion(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// GetRecord implements storage.Records.
func (s *Store) GetRecord(_ context.Context, key string) ([]byte, string, error) {
	path, err := s.recordPath(key)
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("record %s: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, "", err
	}
	return b, recordVersion(b), nil
}

// lockRecords takes the records' lock; the returned function releases it.
func (s *Store) lockRecords() (func(), error) {
	dir := filepath.Join(s.root, recordsDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}

// PutRecord implements storage.Records.
func (s *Store) PutRecord(_ context.Context, key string, value []byte, ifVersion string) (string, error) {
	path, err := s.recordPath(key)
	if err != nil {
		return "", err
	}
	unlock, err := s.lockRecords()
	if err != nil {
		return "", err
	}
	defer unlock()
	cur, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ifVersion != "" {
			return "", fmt.Errorf("record %s: %w (it is gone)", key, storage.ErrRecordChanged)
		}
	case err != nil:
		return "", err
	case ifVersion != recordVersion(cur):
		return "", fmt.Errorf("record %s: %w", key, storage.ErrRecordChanged)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	_, err = f.Write(value)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return "", fmt.Errorf("record %s: %w", key, err)
	}
	return recordVersion(value), nil
}

// DeleteRecord implements storage.Records.
func (s *Store) DeleteRecord(_ context.Context, key string) error {
	path, err := s.recordPath(key)
	if err != nil {
		return err
	}
	unlock, err := s.lockRecords()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("record %s: %w", key, storage.ErrNotFound)
	} else if err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// ListRecords implements storage.Records.
func (s *Store) ListRecords(_ context.Context, prefix string) ([]string, error) {
	if !strings.HasSuffix(prefix, "/") || !validRecordKey(strings.TrimSuffix(prefix, "/")) {
		return nil, fmt.Errorf("record prefix %q: not a valid prefix", prefix)
	}
	root := filepath.Join(s.root, recordsDir)
	var keys []string
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	return keys, err
}

// PutRaw implements storage.RawPutter: Put without the check of the content against d.
func (s *Store) PutRaw(_ context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	if _, err := os.Stat(s.blobPath(d)); err == nil {
		return 0, nil
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "uploads"), "put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	n, err := copyToFile(f, 0, nil, r)
	if err != nil {
		f.Close()
		return n, err
	}
	return n, place(s.root, f, d)
}

// CommitRaw implements storage.RawCommitter: Commit without the check of the content against d.
func (u *upload) CommitRaw(_ context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	l := u.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := u.sync(); err != nil {
		return err
	}
	err := place(u.s.root, u.f, d)
	u.f = nil
	if err != nil {
		return err
	}
	return u.remove()
}

// HasBlobs reports whether the directory holds any blob or upload session (sealed.BlobLister).
func (s *Store) HasBlobs(context.Context) (bool, error) {
	found := false
	err := filepath.WalkDir(filepath.Join(s.root, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil || found {
		return found, err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, "uploads"))
	return len(entries) > 0, err
}
