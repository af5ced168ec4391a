package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// cleanupTimeout bounds the requests that undo a failed write (aborts, deletes), which run even
// when the request that made the write was cancelled.
const cleanupTimeout = time.Minute

// Put implements storage.BlobStore. The digest is known before the bytes, so they go straight to
// the blob key and nothing is copied: a body of up to one part is read into memory, verified and
// written with one PutObject; a longer one is streamed part by part into a multipart upload of
// the blob key, which is completed (the object appears whole, atomically) only once the digest is
// verified, and aborted otherwise. One part is the most a Put holds in memory.
func (s *Store) Put(ctx context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	v := d.Verifier()
	if _, err := s.Stat(ctx, d); err == nil {
		// Already stored: content-addressed, so only the digest remains to be checked.
		n, err := io.Copy(v, r)
		if err != nil {
			return n, err
		}
		if !v.Verified() {
			return n, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
		}
		return n, nil
	}
	return s.put(ctx, d, r, v)
}

// PutRaw implements storage.RawPutter: Put without the check of the content against d. What is
// stored is not d's content, so another writer's blob d is never replaced: a blob of one part is
// written only if the key is free (If-None-Match), a longer one is completed only if it still is.
func (s *Store) PutRaw(ctx context.Context, d oci.Digest, r io.Reader) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	if _, err := s.Stat(ctx, d); err == nil {
		return 0, nil
	}
	return s.put(ctx, d, r, nil)
}

// put streams r to the blob key of d; v, when not nil, must verify it before it is published.
func (s *Store) put(ctx context.Context, d oci.Digest, r io.Reader, v digest.Verifier) (int64, error) {
	verified := func() bool { return v == nil || v.Verified() }
	var ifNoneMatch *string
	if v == nil {
		ifNoneMatch = aws.String("*")
	}
	write := func(b []byte) {
		if v != nil {
			v.Write(b)
		}
	}
	key := s.blobKey(d)
	bp := s.getBuf()
	defer s.putBuf(bp)
	buf, err := readPart(r, (*bp)[:0])
	write(buf)
	n := int64(len(buf))
	if err != nil {
		return n, err
	}
	if len(buf) < cap(buf) { // all of it
		if !verified() {
			return n, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
		}
		if _, err := s.putObject(ctx, key, buf, nil, ifNoneMatch); err != nil && !(v == nil && isConflict(err)) {
			return n, s.wrap(key, err)
		}
		return n, nil
	}

	mp, err := s.createMultipart(ctx, key)
	if err != nil {
		return n, err
	}
	var parts []types.CompletedPart
	for len(buf) > 0 {
		etag, err := s.uploadPart(ctx, mp, len(parts)+1, buf)
		if err != nil {
			s.abort(ctx, mp)
			return n, err
		}
		parts = append(parts, types.CompletedPart{ETag: &etag, PartNumber: aws.Int32(int32(len(parts) + 1))})
		if len(buf) < cap(buf) {
			break
		}
		if len(parts) == maxParts {
			s.abort(ctx, mp)
			return n, fmt.Errorf("blob %s is larger than %d parts of %d bytes: raise the part size", d, maxParts, s.partSize)
		}
		buf, err = readPart(r, buf[:0])
		write(buf)
		n += int64(len(buf))
		if err != nil {
			s.abort(ctx, mp)
			return n, err
		}
	}
	if !verified() {
		s.abort(ctx, mp)
		return n, fmt.Errorf("%w: %s", storage.ErrDigestMismatch, d)
	}
	if v == nil {
		if _, err := s.Stat(ctx, d); err == nil {
			s.abort(ctx, mp)
			return n, nil
		}
	}
	return n, s.complete(ctx, mp, parts)
}

// readPart fills buf up to its capacity from r, and returns it; it is short only at r's end. An
// error is r's, never io.EOF.
func readPart(r io.Reader, buf []byte) ([]byte, error) {
	n, err := io.ReadFull(r, buf[len(buf):cap(buf)])
	buf = buf[:len(buf)+n]
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return buf, err
}

// multipart is a multipart upload in progress.
type multipart struct {
	key string
	id  *string
}

func (s *Store) createMultipart(ctx context.Context, key string) (multipart, error) {
	out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:               &s.bucket,
		Key:                  &key,
		ServerSideEncryption: s.sse,
		SSEKMSKeyId:          s.kmsKeyID,
	})
	if err != nil {
		return multipart{}, s.wrap(key, err)
	}
	return multipart{key: key, id: out.UploadId}, nil
}

func (s *Store) uploadPart(ctx context.Context, mp multipart, n int, b []byte) (etag string, err error) {
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:        &s.bucket,
		Key:           &mp.key,
		UploadId:      mp.id,
		PartNumber:    aws.Int32(int32(n)),
		Body:          newBody(b),
		ContentLength: aws.Int64(int64(len(b))),
	})
	if err != nil {
		return "", s.wrap(mp.key, fmt.Errorf("part %d: %w", n, err))
	}
	return aws.ToString(out.ETag), nil
}

func (s *Store) complete(ctx context.Context, mp multipart, parts []types.CompletedPart) error {
	_, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             &mp.key,
		UploadId:        mp.id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		s.abort(ctx, mp)
		return s.wrap(mp.key, fmt.Errorf("completing multipart upload: %w", err))
	}
	return nil
}

// abort discards a multipart upload, also when ctx was cancelled. Should it fail, the upload's
// parts stay (invisible, but stored) until PurgeUploads aborts it.
func (s *Store) abort(ctx context.Context, mp multipart) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &mp.key, UploadId: mp.id})
}
