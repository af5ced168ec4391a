package s3

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Records (storage.Records) are objects under PREFIX/records/. A record's version is its ETag,
// and every write is conditional on it (If-Match, or If-None-Match: * for a new one), so that
// of two writers in any processes only one wins.

var (
	_ storage.Records      = (*Store)(nil)
	_ storage.RawPutter    = (*Store)(nil)
	_ storage.RawUploader  = (*Store)(nil)
	_ storage.RawCommitter = (*upload)(nil)
)

// maxRecord bounds what GetRecord reads.
const maxRecord = 4 << 20

// validRecordKey reports whether key is a path of [a-z0-9._-] names, none of them "." or "..".
func validRecordKey(key string) bool {
	if key == "" || len(key) > 512 {
		return false
	}
	for _, name := range strings.Split(key, "/") {
		if name == "" || name == "." || name == ".." {
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

func (s *Store) recordKey(key string) (string, error) {
	if !validRecordKey(key) {
		return "", fmt.Errorf("record key %q: not a valid key", key)
	}
	return s.prefix + "records/" + key, nil
}

// GetRecord implements storage.Records.
func (s *Store) GetRecord(ctx context.Context, key string) ([]byte, string, error) {
	k, err := s.recordKey(key)
	if err != nil {
		return nil, "", err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &k})
	if isNotFound(err) {
		return nil, "", fmt.Errorf("record %s: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, "", s.wrap(k, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxRecord))
	if err != nil {
		return nil, "", s.wrap(k, err)
	}
	return b, aws.ToString(out.ETag), nil
}

// PutRecord implements storage.Records.
func (s *Store) PutRecord(ctx context.Context, key string, value []byte, ifVersion string) (string, error) {
	k, err := s.recordKey(key)
	if err != nil {
		return "", err
	}
	var ifMatch, ifNoneMatch *string
	if ifVersion == "" {
		ifNoneMatch = aws.String("*")
	} else {
		ifMatch = aws.String(ifVersion)
	}
	etag, err := s.putObject(ctx, k, value, ifMatch, ifNoneMatch)
	switch {
	case err == nil:
		return etag, nil
	case isConflict(err), ifMatch != nil && isNotFound(err):
		return "", fmt.Errorf("record %s: %w", key, storage.ErrRecordChanged)
	}
	return "", s.wrap(k, err)
}

// DeleteRecord implements storage.Records. As for blobs, a HEAD first tells ErrNotFound.
func (s *Store) DeleteRecord(ctx context.Context, key string) error {
	k, err := s.recordKey(key)
	if err != nil {
		return err
	}
	if _, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &k}); isNotFound(err) {
		return fmt.Errorf("record %s: %w", key, storage.ErrNotFound)
	} else if err != nil {
		return s.wrap(k, err)
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &k}); isNotFound(err) {
		return fmt.Errorf("record %s: %w", key, storage.ErrNotFound) // deleted meanwhile
	} else if err != nil {
		return s.wrap(k, err)
	}
	return nil
}

// ListRecords implements storage.Records.
func (s *Store) ListRecords(ctx context.Context, prefix string) ([]string, error) {
	if !strings.HasSuffix(prefix, "/") || !validRecordKey(strings.TrimSuffix(prefix, "/")) {
		return nil, fmt.Errorf("record prefix %q: not a valid prefix", prefix)
	}
	base := s.prefix + "records/"
	keys, err := s.listKeys(ctx, base+prefix)
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, base)
	}
	return keys, nil
}

// CommitRaw implements storage.RawCommitter: Commit without the check of the content against d.
func (u *upload) CommitRaw(ctx context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	l, err := u.lock()
	if err != nil {
		return err
	}
	defer l.mu.Unlock()
	st, _, err := u.s.loadState(ctx, u.id)
	if err != nil {
		return err
	}
	if err := u.s.assemble(ctx, u.id, st, d); err != nil {
		return err
	}
	return u.s.endSession(ctx, u.id)
}

// ReadAt implements io.ReaderAt with one ranged GET of exactly p's bytes, for readers that jump
// (the sealed layer reads a blob's header and last segment before its content). It does not move
// the position that Read reads from.
func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.size-off)
	if want == 0 {
		return 0, nil
	}
	rng := fmt.Sprintf("bytes=%d-%d", off, off+want-1)
	out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.s.bucket, Key: &r.key, Range: &rng})
	if isNotFound(err) {
		return 0, fmt.Errorf("%s: deleted while read: %w", r.d, storage.ErrNotFound)
	}
	if err != nil {
		return 0, r.s.wrap(r.key, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p[:want])
	if err != nil {
		return n, r.s.wrap(r.key, fmt.Errorf("ranged read at %d: %w", off, err))
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// HasBlobs reports whether the prefix holds any blob or upload session (sealed.BlobLister).
func (s *Store) HasBlobs(ctx context.Context) (bool, error) {
	for _, p := range []string{"blobs/", "uploads/"} {
		out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + p), MaxKeys: aws.Int32(1)})
		if err != nil {
			return false, s.wrap(s.prefix+p, err)
		}
		if len(out.Contents) > 0 {
			return true, nil
		}
	}
	return false, nil
}
