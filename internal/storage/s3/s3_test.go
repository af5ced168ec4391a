package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/storagetest"
)

// testPrefix puts the store's keys under two levels, so that every key is built with the prefix.
const testPrefix = "/berth/test/"

func options(srv enginetest.S3Server) Options {
	return Options{
		Bucket:          srv.Bucket,
		Prefix:          testPrefix,
		Region:          srv.Region,
		Endpoint:        srv.Endpoint,
		PathStyle:       true,
		AccessKeyID:     srv.AccessKey,
		SecretAccessKey: srv.SecretKey,
		PartSize:        MinPartSize, // the smallest parts, so that a few MiB take several
	}
}

func open(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newStore returns a store on a fresh bucket, and the server it is on.
func newStore(t *testing.T) (*Store, enginetest.S3Server) {
	t.Helper()
	srv := enginetest.S3(t)
	return open(t, options(srv)), srv
}

// TestMain stops the S3 server once the tests are done, rather than leave that to the end of the
// process (which kills it).
func TestMain(m *testing.M) { enginetest.Main(m) }

func TestConformance(t *testing.T) {
	// Each store's options, so that Reopen opens another store (another client, other in-process
	// state) on the same bucket, as another replica would.
	var mu sync.Mutex
	opts := map[storage.BlobStore]Options{}
	newS := func(t *testing.T) storage.BlobStore {
		s, srv := newStore(t)
		mu.Lock()
		opts[s] = options(srv)
		mu.Unlock()
		return s
	}
	reopen := func(t *testing.T, s storage.BlobStore) storage.BlobStore {
		mu.Lock()
		o := opts[s]
		mu.Unlock()
		s2 := open(t, o)
		mu.Lock()
		opts[s2] = o
		mu.Unlock()
		return s2
	}
	storagetest.RunOptions(t, newS, storagetest.Options{Reopen: reopen})
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string // in the error; "" for none
	}{
		{"minimal", Options{Bucket: "b"}, ""},
		{"no bucket", Options{}, "bucket is required"},
		{"key without secret", Options{Bucket: "b", AccessKeyID: "k"}, "go together"},
		{"unknown encryption", Options{Bucket: "b", ServerSideEncryption: "aes256"}, "server-side encryption"},
		{"kms key without kms", Options{Bucket: "b", ServerSideEncryption: "AES256", KMSKeyID: "k"}, "aws:kms"},
		{"kms", Options{Bucket: "b", ServerSideEncryption: "aws:kms", KMSKeyID: "k"}, ""},
		{"parts too small", Options{Bucket: "b", PartSize: MinPartSize - 1}, "part size"},
		{"parts too large", Options{Bucket: "b", PartSize: MaxPartSize + 1}, "part size"},
	} {
		err := tc.o.validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: validate() = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	o := Options{Bucket: "b"}
	o.validate()
	if o.PartSize != DefaultPartSize {
		t.Errorf("default part size = %d, want %d", o.PartSize, DefaultPartSize)
	}
}

// TestUnreachable: an error of S3 that is not "not found" reaches the caller as such, wrapped
// with the object it was about, never as ErrNotFound (which would make the registry answer 404).
func TestUnreachable(t *testing.T) {
	s, srv := newStore(t)
	d := digest.FromString("anything")
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// A missing blob is not a server failure.
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Stat of a missing blob: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	s.client = s3.New(s.client.Options(), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(dead)
		o.RetryMaxAttempts = 1
	})
	_, err = s.Stat(context.Background(), d)
	if err == nil || errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "s3://"+srv.Bucket+"/berth/test/blobs/sha256/") {
		t.Errorf("Stat with the server unreachable: %v; want an error naming the key, not ErrNotFound", err)
	}
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Stat with the server unreachable: %v; want ErrUnavailable (the registry answers 503)", err)
	}
	if _, err := s.ResumeUpload(context.Background(), strings.Repeat("a", 32)); err == nil || errors.Is(err, storage.ErrUploadUnknown) || !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("ResumeUpload with the server unreachable: %v; want ErrUnavailable, not ErrUploadUnknown", err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Ping with the server unreachable: %v; want ErrUnavailable", err)
	}

	o := options(srv)
	o.Endpoint = dead
	if _, err := New(context.Background(), o); err == nil || !strings.Contains(err.Error(), srv.Bucket) {
		t.Errorf("New on an unreachable server: %v; want an error naming the bucket", err)
	}
	o = options(srv)
	o.Bucket += "-absent"
	if _, err := New(context.Background(), o); err == nil {
		t.Error("New on a bucket that does not exist succeeded")
	}
}

// request is one HTTP request the store sent, as it left the client (signed).
type request struct {
	op     string
	header http.Header
}

// recordRequests makes s's client note every request it sends.
func recordRequests(s *Store) func() []request {
	var mu sync.Mutex
	var reqs []request
	record := middleware.FinalizeMiddlewareFunc("berth-record", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		if r, ok := in.Request.(*smithyhttp.Request); ok {
			mu.Lock()
			reqs = append(reqs, request{op: middleware.GetOperationName(ctx), header: r.Header.Clone()})
			mu.Unlock()
		}
		return next.HandleFinalize(ctx, in)
	})
	s.client = s3.New(s.client.Options(), func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions[:len(o.APIOptions):len(o.APIOptions)], func(st *middleware.Stack) error {
			return st.Finalize.Add(record, middleware.After)
		})
	})
	return func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), reqs...)
	}
}

// TestOpenRangedReads: a reader fetches from where it was sought to, and only that.
func TestOpenRangedReads(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	size := int64(3 << 20)
	d := putGenerated(t, s, 7, size)
	requests := recordRequests(s)
	r, n, err := s.Open(ctx, d)
	if err != nil || n != size {
		t.Fatalf("Open = %d, %v", n, err)
	}
	defer r.Close()
	if _, err := r.Seek(size-10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || len(got) != 10 {
		t.Fatalf("reading the last 10 bytes: %d bytes, %v", len(got), err)
	}
	want := make([]byte, size)
	generator(7, size).Read(want)
	if string(got) != string(want[size-10:]) {
		t.Error("the last 10 bytes differ")
	}
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read at the end: %v, want io.EOF", err)
	}
	var ranges []string
	for _, req := range requests() {
		if req.op == "GetObject" {
			ranges = append(ranges, req.header.Get("Range"))
		}
	}
	if want := []string{"bytes=3145718-"}; strings.Join(ranges, ",") != strings.Join(want, ",") {
		t.Errorf("GETs sent with ranges %q, want %q", ranges, want)
	}
}

// TestRedirectURL: a presigned URL serves the blob's bytes with no credentials, and ranges of it.
func TestRedirectURL(t *testing.T) {
	s, _ := newStore(t)
	content := []byte("fetched from the bucket directly\n")
	d := digest.FromBytes(content)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	u, err := s.RedirectURL(context.Background(), d, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Errorf("GET the presigned URL: %d %q", resp.StatusCode, got)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Range", "bytes=0-7")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(got) != "fetched " {
		t.Errorf("ranged GET of the presigned URL: %d %q", resp.StatusCode, got)
	}
	// Past its time, or altered, it serves nothing.
	resp, err = http.Get(strings.Replace(u, "X-Amz-Expires=60", "X-Amz-Expires=61", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("an altered presigned URL was served")
	}
}

func TestRecords(t *testing.T) {
	storagetest.RunRecords(t, func(t *testing.T) storage.BlobStore { s, _ := newStore(t); return s })
}
