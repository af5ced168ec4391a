package s3

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// PurgeUploads implements storage.BlobStore: it ends the sessions whose state was last written
// before before, deletes objects of sessions that ended half (a process killed in endSession), and
// aborts the multipart uploads of Put and Commit started before before (a process killed in the
// middle: the parts are invisible but stored, and billed). A bucket lifecycle rule
// (AbortIncompleteMultipartUpload) does the last as well, where the server has one.
//
// A Put still streaming after before is aborted too, and fails: callers pass a time well past
// any request's duration (the registry: the upload session lifetime).
func (s *Store) PurgeUploads(ctx context.Context, before time.Time) (int, error) {
	prefix := s.prefix + "uploads/"
	type found struct {
		stateETag *string // nil: no state
		stateTime time.Time
		stale     []string // other objects last written before before
	}
	sessions := map[string]*found{}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, s.wrap(prefix, err)
		}
		for _, o := range page.Contents {
			id, name, ok := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/")
			if !ok || !validID(id) {
				continue // not ours
			}
			f := sessions[id]
			if f == nil {
				f = &found{}
				sessions[id] = f
			}
			switch {
			case name == "state":
				f.stateETag, f.stateTime = o.ETag, aws.ToTime(o.LastModified)
			case aws.ToTime(o.LastModified).Before(before):
				f.stale = append(f.stale, aws.ToString(o.Key))
			}
		}
	}
	n := 0
	for id, f := range sessions {
		if f.stateETag == nil {
			// Left by a session that ended half, or by a request that lost to the end of its
			// session; objects written since before may be a request's still in flight.
			if err := s.deleteObjects(ctx, f.stale); err != nil {
				return n, err
			}
			continue
		}
		if !f.stateTime.Before(before) {
			continue
		}
		purged, err := s.purgeSession(ctx, id, f.stateETag)
		if err != nil {
			return n, err
		}
		if purged {
			n++
		}
	}
	return n, s.abortMultipartUploads(ctx, before)
}

// purgeSession ends session id if its state is still the one listed (etag): one that a request
// wrote to since is not idle. It reports whether it ended the session.
func (s *Store) purgeSession(ctx context.Context, id string, etag *string) (bool, error) {
	// A request of this process on the session goes first, whole.
	s.mu.Lock()
	l := s.sessions[id]
	s.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	key := s.stateKey(id)
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key, IfMatch: etag})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NotImplemented" {
		// A server without conditional deletes: a request in another process that writes the
		// state right now then loses its conditional write and reports the session unknown.
		_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	}
	switch {
	case isConflict(err):
		return false, nil // written since it was listed
	case isNotFound(err):
		return false, nil // ended meanwhile
	case err != nil:
		return false, s.wrap(key, err)
	}
	keys, err := s.listKeys(ctx, s.sessionPrefix(id))
	if err != nil {
		return true, err
	}
	return true, s.deleteObjects(ctx, keys)
}

// abortMultipartUploads aborts the multipart uploads under the store's prefix started before
// before.
func (s *Store) abortMultipartUploads(ctx context.Context, before time.Time) error {
	var prefix *string
	if s.prefix != "" {
		prefix = aws.String(s.prefix)
	}
	p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.wrap(s.prefix, err)
		}
		for _, u := range page.Uploads {
			if !aws.ToTime(u.Initiated).Before(before) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
			if err != nil && !isNotFound(err) { // NoSuchUpload: completed or aborted meanwhile
				return s.wrap(aws.ToString(u.Key), err)
			}
		}
	}
	return nil
}
