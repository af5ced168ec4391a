// Package s3 is the blob store on S3-compatible object storage.
//
// Layout under the configured prefix:
//
//	blobs/<algorithm>/<2 hex>/<hex>    complete, verified blobs
//	uploads/<id>/state                 an upload session (JSON: size, parts, running hashes)
//	uploads/<id>/part-<gen>-<n>        the session's bytes, in objects of at least 5 MiB but the last
//
// A blob key only ever holds verified content: Put verifies while it streams and publishes with one
// PutObject or CompleteMultipartUpload, and a chunked upload is verified from its stored hash state
// before Commit copies its parts, server-side, into the blob key. S3 has no rename, and the digest
// of a chunked upload is known only at its end, so that one server-side copy is the price of the
// content-addressed layout (see upload.go).
//
// What the server must do: conditional PutObject (If-Match, If-None-Match: *; AWS S3 since 2024,
// versitygw), UploadPartCopy, and ranged GETs. Conditional DeleteObject (If-Match) is used by
// PurgeUploads where the server has it. A bucket lifecycle rule AbortIncompleteMultipartUpload is
// worth setting as well: PurgeUploads aborts what a killed process left, the rule does it too if
// berth never runs again.
//
// Limits: a blob has at most 10,000 parts (S3's limit on a multipart upload). A Put or a chunk of
// a chunked upload is cut into parts of PartSize, but a chunk's last part can be smaller (at least
// 5 MiB, or it is folded into the next chunk), so an upload sent in chunks of c bytes, with c
// between 5 MiB and PartSize, is limited to 10,000 × c.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// S3's limits on multipart uploads.
const (
	MinPartSize     = 5 << 20 // every part but the last
	MaxPartSize     = 5 << 30
	maxParts        = 10000
	DefaultPartSize = 16 << 20
)

// Options says where the store keeps its objects and how it reaches them.
type Options struct {
	Bucket string // must exist
	Prefix string // keys go under it ("" for the bucket's root); slashes at its ends are ignored
	// Region of the bucket; when empty, the AWS default chain's (AWS_REGION, ~/.aws/config), else
	// us-east-1, which is what most S3-compatible servers expect.
	Region string
	// Endpoint is the URL of an S3-compatible server; empty for AWS.
	Endpoint string
	// PathStyle addresses the bucket in the path (http://host/bucket/key) rather than in the host
	// name, as most S3-compatible servers need.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are static credentials; when both are empty the AWS default
	// chain is used (environment, shared files, web identity, instance and container roles).
	AccessKeyID     string
	SecretAccessKey string
	// ServerSideEncryption asks S3 to encrypt every object it writes: "" (the bucket's default),
	// "AES256" (SSE-S3) or "aws:kms" (SSE-KMS, with KMSKeyID or the account's default key).
	ServerSideEncryption string
	KMSKeyID             string
	// PartSize is the size of the parts that uploads are written in, and so the memory one request
	// holds: DefaultPartSize when zero, at least MinPartSize, at most MaxPartSize.
	PartSize int64
}

func (o *Options) validate() error {
	var errs []error
	if o.Bucket == "" {
		errs = append(errs, errors.New("bucket is required"))
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		errs = append(errs, errors.New("access key id and secret access key go together"))
	}
	switch o.ServerSideEncryption {
	case "", string(types.ServerSideEncryptionAes256):
		if o.KMSKeyID != "" {
			errs = append(errs, errors.New("a KMS key id needs server-side encryption aws:kms"))
		}
	case string(types.ServerSideEncryptionAwsKms):
	default:
		errs = append(errs, fmt.Errorf("server-side encryption %q: want \"\", AES256 or aws:kms", o.ServerSideEncryption))
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize || o.PartSize > MaxPartSize {
		errs = append(errs, fmt.Errorf("part size %d: want %d to %d bytes", o.PartSize, MinPartSize, MaxPartSize))
	}
	return errors.Join(errs...)
}

// Store is a BlobStore in an S3 bucket. Any number of stores, in any number of processes, may
// share a bucket and prefix: everything an upload needs is in the bucket.
type Store struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or ending in "/"
	partSize int64
	sse      types.ServerSideEncryption
	kmsKeyID *string
	bufs     sync.Pool // *[]byte of cap partSize

	mu       sync.Mutex
	sessions map[string]*live // upload sessions with a handle open in this process
}

var _ storage.BlobStore = (*Store)(nil)

// New returns a store on the bucket that o names, after checking that it can reach the bucket.
func New(ctx context.Context, o Options) (*Store, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	var loadOpts []func(*awsconfig.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// Servers that keep objects as files (versitygw's posix backend, MinIO on a plain disk) remove
	// a key's empty parent directories when it is deleted; a write under the same parent at that
	// moment fails with 409 ExistingObjectIsDirectory although nothing is wrong with it. Nothing
	// was written, so it is retried like a throttle.
	cfg.Retryer = func() aws.Retryer {
		return retry.AddWithErrorCodes(retry.NewStandard(), "ExistingObjectIsDirectory")
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		// The SDK's default (since early 2025) sends a CRC32 trailer with every upload and part,
		// in aws-chunked encoding, which several S3-compatible servers do not accept (versitygw
		// does, as long as the parts' checksums are not repeated at completion, and they are not
		// here). Without it the payload's SHA-256 is signed and checked by the server instead, and
		// every blob is verified against its digest before it is published.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &Store{
		client:   client,
		bucket:   o.Bucket,
		partSize: o.PartSize,
		sse:      types.ServerSideEncryption(o.ServerSideEncryption),
		sessions: map[string]*live{},
	}
	if p := strings.Trim(o.Prefix, "/"); p != "" {
		s.prefix = p + "/"
	}
	if o.KMSKeyID != "" {
		s.kmsKeyID = aws.String(o.KMSKeyID)
	}
	s.bufs.New = func() any { b := make([]byte, 0, s.partSize); return &b }
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(o.Bucket)}); err != nil {
		return nil, fmt.Errorf("s3 blob store: bucket %q: %w", o.Bucket, err)
	}
	return s, nil
}

// blobKey is built only from a validated digest.
func (s *Store) blobKey(d oci.Digest) string {
	enc := d.Encoded()
	return s.prefix + "blobs/" + string(d.Algorithm()) + "/" + enc[:2] + "/" + enc
}

func validDigest(d oci.Digest) error {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	}
	return nil
}

// wrap gives an S3 error the object it was about; every error that is not "not found" reaches
// the caller this way, so that a log says which request to which bucket failed.
func (s *Store) wrap(key string, err error) error {
	if unreachable(err) {
		return fmt.Errorf("s3://%s/%s: %w: %w", s.bucket, key, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("s3://%s/%s: %w", s.bucket, key, err)
}

// unreachable reports an error that says the server could not be reached or could not serve (no
// HTTP response at all, or a 5xx such as 503 SlowDown), not that the request was wrong: the caller
// answers 503, and may try again.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var re *smithyhttp.ResponseError // status 0: the request was never answered
	if errors.As(err, &re) {
		return re.HTTPStatusCode() == 0 || re.HTTPStatusCode() >= 500
	}
	var ae smithy.APIError
	return !errors.As(err, &ae)
}

// Ping implements the readiness check (server's /readyz): the bucket answers.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		return s.wrap("", err)
	}
	return nil
}

// RedirectURL implements storage.Redirector: a presigned GET of the blob's key.
func (s *Store) RedirectURL(ctx context.Context, d oci.Digest, ttl time.Duration) (string, error) {
	if err := validDigest(d); err != nil {
		return "", err
	}
	key := s.blobKey(d)
	req, err := s3.NewPresignClient(s.client).PresignGetObject(ctx,
		&s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", s.wrap(key, err)
	}
	return req.URL, nil
}

// isNotFound reports an error that means the key (not the bucket) does not exist. A HEAD cannot
// tell the two apart (its 404 has no body): New checks the bucket once.
func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchBucket":
			return false
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == 404
}

// isConflict reports a conditional write that lost: the object's ETag was not the one expected
// (412), or, on AWS, another conditional write to it was in progress (409).
func isConflict(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && (re.HTTPStatusCode() == 412 || re.HTTPStatusCode() == 409)
}

// copySource is the x-amz-copy-source of key: the bucket and key, URL-encoded segment by segment.
func (s *Store) copySource(key string) *string {
	segs := strings.Split(s.bucket+"/"+key, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return aws.String(strings.Join(segs, "/"))
}

// Stat implements storage.BlobStore.
func (s *Store) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	if err := validDigest(d); err != nil {
		return 0, err
	}
	key := s.blobKey(d)
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if isNotFound(err) {
		return 0, fmt.Errorf("%s: %w", d, storage.ErrNotFound)
	}
	if err != nil {
		return 0, s.wrap(key, err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Open implements storage.BlobStore. The reader fetches with ranged GETs from wherever it was
// sought to, so serving a Range request reads only that range.
func (s *Store) Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	size, err := s.Stat(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	return &reader{ctx: ctx, s: s, d: d, key: s.blobKey(d), size: size}, size, nil
}

// Delete implements storage.BlobStore. S3 deletes succeed whether or not the key exists, so a HEAD
// first tells ErrNotFound; two deletes racing may both succeed.
func (s *Store) Delete(ctx context.Context, d oci.Digest) error {
	if _, err := s.Stat(ctx, d); err != nil {
		return err
	}
	key := s.blobKey(d)
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		return s.wrap(key, err)
	}
	return nil
}

// putObject writes body to key, encrypted as configured. ifMatch and ifNoneMatch make it
// conditional when not nil.
func (s *Store) putObject(ctx context.Context, key string, body []byte, ifMatch, ifNoneMatch *string) (etag string, err error) {
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:               &s.bucket,
		Key:                  &key,
		Body:                 newBody(body),
		ContentLength:        aws.Int64(int64(len(body))),
		IfMatch:              ifMatch,
		IfNoneMatch:          ifNoneMatch,
		ServerSideEncryption: s.sse,
		SSEKMSKeyId:          s.kmsKeyID,
	})
	if err != nil {
		return "", err // unwrapped: callers tell conflicts apart
	}
	return aws.ToString(out.ETag), nil
}

// newBody is a seekable reader of b, so that the SDK can sign the payload's SHA-256 and retry.
func newBody(b []byte) io.ReadSeeker { return bytes.NewReader(b) }

// deleteObjects deletes keys one by one, ignoring keys already gone; it returns the first error.
// (DeleteObjects, the batch call, requires a Content-MD5 or checksum header that not every
// S3-compatible server accepts in the same form; sessions have few objects.)
func (s *Store) deleteObjects(ctx context.Context, keys []string) error {
	var first error
	for _, key := range keys {
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(key)})
		if err != nil && !isNotFound(err) && first == nil {
			first = s.wrap(key, err)
		}
	}
	return first
}

func (s *Store) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *Store) putBuf(b *[]byte) {
	*b = (*b)[:0]
	s.bufs.Put(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
