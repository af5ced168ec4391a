package s3

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// reader reads a blob with one GET from its position to the end, started at the first Read after
// Open or after a Seek that moved it; nothing is buffered beyond what the HTTP body holds.
type reader struct {
	ctx  context.Context // of Open: the request the blob is served to
	s    *Store
	d    oci.Digest
	key  string
	size int64
	pos  int64
	body io.ReadCloser // open from pos, or nil
}

func (r *reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF // S3 answers 416 to a range that starts at the end
	}
	if r.body == nil {
		rng := fmt.Sprintf("bytes=%d-", r.pos)
		out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.s.bucket, Key: &r.key, Range: &rng})
		if isNotFound(err) {
			return 0, fmt.Errorf("%s: deleted while read: %w", r.d, storage.ErrNotFound)
		}
		if err != nil {
			return 0, r.s.wrap(r.key, err)
		}
		r.body = out.Body
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	if errors.Is(err, io.EOF) && r.pos < r.size {
		err = fmt.Errorf("s3://%s/%s: body ended at %d of %d bytes: %w", r.s.bucket, r.key, r.pos, r.size, io.ErrUnexpectedEOF)
	} else if err != nil && !errors.Is(err, io.EOF) {
		err = r.s.wrap(r.key, err)
	}
	return n, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	pos := offset
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		pos += r.pos
	case io.SeekEnd:
		pos += r.size
	default:
		return r.pos, errors.New("s3 blob: invalid whence")
	}
	if pos < 0 {
		return r.pos, errors.New("s3 blob: negative position")
	}
	if pos != r.pos && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.pos = pos
	return pos, nil
}

func (r *reader) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}
