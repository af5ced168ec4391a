package s3

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/berth/berth/internal/oci"
)

// copyConcurrency is how many parts Commit copies at once: the copies are server-side, so this
// costs berth nothing but requests in flight, and shortens the commit of a large blob.
const copyConcurrency = 4

// assemble makes the objects of session id's state, whose content the caller has verified to be
// d, the blob d, unless it is already stored. The blob appears at once and whole: one PutObject
// or CopyObject, or a multipart upload that only its completion makes visible.
func (s *Store) assemble(ctx context.Context, id string, st state, d oci.Digest) error {
	if _, err := s.Stat(ctx, d); err == nil {
		return nil // content-addressed: what is there is these bytes
	}
	key := s.blobKey(d)
	switch len(st.Parts) {
	case 0:
		if _, err := s.putObject(ctx, key, nil, nil, nil); err != nil {
			return s.wrap(key, err)
		}
		return nil
	case 1: // at most one part size, within CopyObject's 5 GiB
		_, err := s.client.CopyObject(ctx, &s3.CopyObjectInput{
			Bucket:               &s.bucket,
			Key:                  &key,
			CopySource:           s.copySource(s.sessionPrefix(id) + st.Parts[0].Name),
			ServerSideEncryption: s.sse,
			SSEKMSKeyId:          s.kmsKeyID,
		})
		if err != nil {
			return s.wrap(key, fmt.Errorf("copying upload %s: %w", id, err))
		}
		return nil
	}
	mp, err := s.createMultipart(ctx, key)
	if err != nil {
		return err
	}
	parts := make([]types.CompletedPart, len(st.Parts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyConcurrency)
	for i, p := range st.Parts {
		g.Go(func() error {
			out, err := s.client.UploadPartCopy(gctx, &s3.UploadPartCopyInput{
				Bucket:     &s.bucket,
				Key:        &key,
				UploadId:   mp.id,
				PartNumber: aws.Int32(int32(i + 1)),
				CopySource: s.copySource(s.sessionPrefix(id) + p.Name),
			})
			if err != nil {
				return s.wrap(key, fmt.Errorf("copying part %d of upload %s: %w", i+1, id, err))
			}
			parts[i] = types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		s.abort(ctx, mp)
		return err
	}
	return s.complete(ctx, mp, parts)
}
