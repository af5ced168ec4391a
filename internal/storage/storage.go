// Package storage defines the content-addressed blob store. Blobs are global: which repository may
// see which blob is the metadata store's business, never the blob store's.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/berth/berth/internal/oci"
)

// Sentinel errors of every backend; wrap them with %w.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrUploadUnknown  = errors.New("upload unknown")
	ErrDigestMismatch = errors.New("content does not match digest")
	// ErrOffset reports a chunk that does not start where the upload ends.
	ErrOffset = errors.New("chunk does not continue the upload")
	// ErrUnavailable reports that the storage could not be reached (object storage down or
	// unreachable): nothing was made visible, and the request may be tried again.
	ErrUnavailable = errors.New("blob storage unavailable")
	// ErrInsufficientSpace reports that a write would leave less free space than the floor
	// berth keeps (min_free_space).
	ErrInsufficientSpace = errors.New("not enough free disk space")
)

// BlobStore keeps blobs by digest. Content becomes visible only once it is complete and verified.
type BlobStore interface {
	// Stat returns the size of a stored blob, or ErrNotFound.
	Stat(ctx context.Context, d oci.Digest) (int64, error)
	// Open opens a stored blob for reading and seeking and returns its size, or ErrNotFound. The
	// filesystem backend returns an *os.File, so that net/http can send it with sendfile.
	Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error)
	// Put stores r as the blob d, verifying it while it is written; ErrDigestMismatch when it is not d.
	Put(ctx context.Context, d oci.Digest, r io.Reader) (int64, error)
	// Delete removes a blob; ErrNotFound when there is none.
	Delete(ctx context.Context, d oci.Digest) error
	// NewUpload starts an upload session whose state lives in the backend.
	NewUpload(ctx context.Context) (Upload, error)
	// ResumeUpload reopens an upload by ID, in this process or after a restart; ErrUploadUnknown.
	ResumeUpload(ctx context.Context, id string) (Upload, error)
	// PurgeUploads discards upload sessions that received nothing since before, and any temporary
	// files a crash left behind; it returns how many sessions it discarded.
	PurgeUploads(ctx context.Context, before time.Time) (int, error)
}

// Upload is an upload session. Its state lives in the backend so that any process can resume it.
type Upload interface {
	ID() string
	// Size is the number of bytes received so far.
	Size() int64
	// Append adds r's bytes at the end and returns how many were written.
	Append(ctx context.Context, r io.Reader) (int64, error)
	// AppendAt is Append for a chunk that must start at offset: if the upload does not end there
	// (another chunk came first), nothing is written and the error is ErrOffset. The check and the
	// write are one step, so two chunks sent for the same offset cannot both be taken.
	AppendAt(ctx context.Context, r io.Reader, offset int64) (int64, error)
	// Commit verifies the content against want and makes it the blob want; ErrDigestMismatch (the
	// upload is then gone).
	Commit(ctx context.Context, want oci.Digest) error
	// Cancel discards the upload.
	Cancel(ctx context.Context) error
	// Close releases the session's resources without ending it.
	Close() error
}

// FileAdopter is an optional capability of stores on the local filesystem: a blob written to a
// temporary file it made can become the blob without being copied. The pull-through cache writes
// an upstream blob to such a file while clients read it as it grows.
type FileAdopter interface {
	// CreateTemp creates an empty temporary file, on the store's filesystem, that crash recovery
	// (PurgeUploads) will remove if it is never adopted.
	CreateTemp() (*os.File, error)
	// Adopt makes f, whose content the caller has verified to be d, the blob d: fsync, rename.
	// It closes f.
	Adopt(ctx context.Context, d oci.Digest, f *os.File) error
}

// Spooler is an optional capability of stores that cannot hand out plain files (the encrypted
// filesystem store, where a plain temporary file would put plaintext on the disk): the
// pull-through cache writes an upstream blob into a Spool, which clients read as it grows, and
// which then becomes the blob without being copied.
type Spooler interface {
	// NewSpool creates an empty spool, which crash recovery (PurgeUploads) removes if it is
	// never committed.
	NewSpool(ctx context.Context) (Spool, error)
}

// Spool is a temporary blob that one goroutine writes while any number read it.
type Spool interface {
	// Write appends bytes; they can be read as soon as it returns.
	io.Writer
	// ReadAt reads bytes already written, at any time until Close.
	io.ReaderAt
	// Commit makes what was written, which the caller has verified to be d, the blob d. Nothing
	// may be written after; what was written can still be read.
	Commit(ctx context.Context, d oci.Digest) error
	// Close releases the spool; one that was not committed is discarded.
	Close() error
}

// FreeSpacer is an optional capability of stores on a local filesystem: how many bytes a new
// blob may still take there, so that writers (pull-through fills; pushes could too) can stop
// before the disk fills.
type FreeSpacer interface {
	// FreeSpace returns the bytes available to berth on the filesystem that holds the blobs.
	FreeSpace() (int64, error)
}

// CheckFree returns ErrInsufficientSpace (wrapped, with the numbers) if writing n more bytes to
// s (a store, or a layer over one) would leave less than floor bytes free. A floor of 0, or a
// store without FreeSpacer, always passes.
func CheckFree(s any, n, floor int64) error {
	fs, ok := s.(FreeSpacer)
	if floor <= 0 || !ok {
		return nil
	}
	free, err := fs.FreeSpace()
	if err != nil {
		return fmt.Errorf("free space of the blob store: %w", err)
	}
	if free-n < floor {
		return fmt.Errorf("%w: %d bytes free, %d more to write would leave less than min_free_space (%d)",
			ErrInsufficientSpace, free, n, floor)
	}
	return nil
}

// TempRemover is an optional capability of stores that keep temporary files besides upload
// sessions (monolithic pushes, pull-through fills and spools): RemoveTemps deletes every one of
// them. It is only safe while nothing writes to the store, so berth calls it at start, holding
// the data directory's lock: a process killed in the middle of a fill leaves nothing behind.
type TempRemover interface {
	RemoveTemps() (int, error)
}

// Redirector is an optional capability of stores whose blobs clients can download without berth
// in between (presigned S3 URLs): RedirectURL returns a URL that serves blob d's bytes for ttl.
// It does not check that the blob exists.
type Redirector interface {
	RedirectURL(ctx context.Context, d oci.Digest, ttl time.Duration) (string, error)
}

// ErrRecordChanged reports a conditional record write whose record was changed (or created, or
// removed) by another writer since it was read: nothing was written.
var ErrRecordChanged = errors.New("record changed meanwhile")

// Records is an optional capability of backends: small values (up to a few hundred KiB) by key,
// kept next to the blobs and shared by every process on the same storage, with compare-and-swap.
// Layers that keep state of their own outside the blobs use it: the sealed layer
// (internal/storage/sealed) keeps wrapped data keys and upload sessions there. Keys are paths of
// lower-case letters, digits, '-', '_' and '.', separated by '/'.
type Records interface {
	// GetRecord returns the value under key and its version; ErrNotFound when there is none.
	GetRecord(ctx context.Context, key string) (value []byte, version string, err error)
	// PutRecord writes value under key if the record's version is still ifVersion ("" : only if
	// there is no record), and returns the new version; ErrRecordChanged otherwise.
	PutRecord(ctx context.Context, key string, value []byte, ifVersion string) (version string, err error)
	// DeleteRecord removes the record under key; ErrNotFound when there is none.
	DeleteRecord(ctx context.Context, key string) error
	// ListRecords returns the keys of the records under prefix (a key prefix ending in '/').
	ListRecords(ctx context.Context, prefix string) ([]string, error)
}

// RawPutter is an optional capability of backends for layers that store blobs in another form
// than their content (the sealed layer stores ciphertext under the digest of the plaintext):
// PutRaw stores r's bytes as the blob d without checking them against d, the layer having
// verified what it transformed. The blob appears whole or not at all, as with Put; when d is
// already stored, it is left as it is (and r is not read to its end).
type RawPutter interface {
	PutRaw(ctx context.Context, d oci.Digest, r io.Reader) (int64, error)
}

// RawCommitter is an optional capability of the Uploads of backends that are RawPutters:
// CommitRaw makes the session's bytes the blob d, unless d is stored already, without checking
// them against d, and ends the session.
type RawCommitter interface {
	CommitRaw(ctx context.Context, d oci.Digest) error
}

// RawUploader is an optional capability of backends that are RawPutters: NewRawUpload starts an
// upload session that keeps no hash of its bytes, for a layer that commits it only with CommitRaw
// and hashes what it transforms itself (hashing the ciphertext too would cost a core for nothing).
// ResumeUpload resumes it like any other session.
type RawUploader interface {
	NewRawUpload(ctx context.Context) (Upload, error)
}
