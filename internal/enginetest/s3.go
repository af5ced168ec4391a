package enginetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Server is an S3-compatible server and a bucket on it that belongs to one test.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT; address buckets path-style
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string // created for the test, emptied and removed when it ends
}

// Client returns an S3 client for the server, for tests that look at the bucket independently
// of the code under test.
func (s S3Server) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		UsePathStyle: true,
		// As berth's s3 store sends its requests: without the SDK's default CRC32 trailers.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// VersityInstall is how scripts/install-tools.sh installs the S3 server the tests use.
const VersityInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

const (
	s3Region    = "us-east-1"
	s3AccessKey = "berth-test"
	s3SecretKey = "berth-test-secret-key"
	versityDirs = "berth-versitygw-" // + pid: the data directories, one per test binary
)

// versity is the server of this test binary, started by the first test that asks for it.
var versity struct {
	once   sync.Once
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
	dir    string
	url    string
	err    error
	skip   string // why there is no server, when the binary is not installed
}

// S3 returns a fresh bucket on a versitygw server (posix backend in a temporary directory)
// listening on 127.0.0.1, which the first call starts and which dies with the test binary. The
// test is skipped, saying how to install it, when versitygw is neither on PATH nor in the
// repository's .tools/bin (where scripts/install-tools.sh puts it, and CI never skips).
func S3(t testing.TB) S3Server {
	t.Helper()
	srv, remove, skip, err := newBucket()
	if skip != "" {
		t.Skip(skip)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Errorf("removing bucket %s: %v", srv.Bucket, err)
		}
	})
	return srv
}

// Bucket is S3 for a program (see Program): a fresh bucket and the function that empties and
// removes it. No versitygw is an error, naming how to install it.
func Bucket() (srv S3Server, remove func() error, err error) {
	srv, remove, skip, err := newBucket()
	if skip != "" {
		err = errors.New(skip)
	}
	return srv, remove, err
}

func newBucket() (srv S3Server, remove func() error, skip string, err error) {
	versity.once.Do(startVersity)
	if versity.skip != "" {
		return srv, nil, versity.skip, nil
	}
	if versity.err != nil {
		return srv, nil, "", fmt.Errorf("starting versitygw: %v", versity.err)
	}
	srv = S3Server{Endpoint: versity.url, Region: s3Region, AccessKey: s3AccessKey, SecretKey: s3SecretKey,
		Bucket: "berth-test-" + bucketSuffix()}
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &srv.Bucket}); err != nil {
		return srv, nil, "", fmt.Errorf("creating bucket %s: %v", srv.Bucket, err)
	}
	return srv, func() error { return removeBucket(c, srv.Bucket) }, "", nil
}

// removeBucket aborts the bucket's multipart uploads, deletes its objects and then the bucket.
func removeBucket(c *s3.Client, bucket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mps := s3.NewListMultipartUploadsPaginator(c, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	for mps.HasMorePages() {
		page, err := mps.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, u := range page.Uploads {
			if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: u.Key, UploadId: u.UploadId}); err != nil {
				return err
			}
		}
	}
	objs := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket})
	for objs.HasMorePages() {
		page, err := objs.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: o.Key}); err != nil {
				return err
			}
		}
	}
	_, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
	return err
}

// StopS3 stops the server, if one was started, and removes its directory. A TestMain may call it
// after m.Run; without it the server dies with the test binary (Pdeathsig) and the next test
// binary that starts one removes the directory left behind.
func StopS3() {
	if versity.cmd == nil {
		return
	}
	versity.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-versity.exited:
	case <-time.After(10 * time.Second):
		versity.cmd.Process.Kill()
		<-versity.exited
	}
	os.RemoveAll(versity.dir)
	versity.cmd = nil
}

func startVersity() {
	bin, err := findVersity()
	if err != nil {
		versity.skip = fmt.Sprintf("no versitygw (%v): install it with scripts/install-tools.sh, or %s", err, VersityInstall)
		return
	}
	removeStaleVersityDirs()
	versity.dir, versity.err = os.MkdirTemp("", versityDirs+strconv.Itoa(os.Getpid())+"-")
	if versity.err != nil {
		return
	}
	versity.cmd, versity.exited, versity.url, versity.err = runVersity(bin, versity.dir)
	atExit(StopS3)
}

// findVersity looks on PATH, then in .tools/bin of the module this test runs in.
func findVersity() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, ".tools", "bin", "versitygw")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("not on PATH nor in %s", filepath.Dir(p))
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not on PATH, and no go.mod above the working directory")
		}
		dir = parent
	}
}

// removeStaleVersityDirs removes the data directories of test binaries that are gone (killed,
// or ended without StopS3).
func removeStaleVersityDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), versityDirs+"*"))
	for _, m := range matches {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(m), versityDirs), "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its binary still runs
		}
		os.RemoveAll(m)
	}
}

// runVersity starts versitygw on a free port of 127.0.0.1, serving dir, and waits until it answers.
func runVersity(bin, dir string) (*exec.Cmd, chan struct{}, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", err
	}
	addr := l.Addr().String()
	l.Close() // a small window in which another process could take the port: start fails then
	out := &versityOutput{}
	cmd := exec.Command(bin, "--quiet", "--access", s3AccessKey, "--secret", s3SecretKey, "--region", s3Region,
		"--port", addr, "posix", dir)
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig kills the server when the thread that started it ends: that thread is locked to a
	// goroutine that waits for the server, so it ends only with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return nil, nil, "", err
	}
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
			return cmd, exited, url, nil // any answer, 403 without credentials: it serves
		}
		select {
		case <-exited:
			return nil, nil, "", fmt.Errorf("versitygw exited: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, nil, "", fmt.Errorf("versitygw did not answer on %s within 30s: %s", addr, out.String())
		}
	}
}

// versityOutput keeps what the server prints, for the error when it does not start.
type versityOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *versityOutput) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *versityOutput) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bucketSuffix makes a bucket name that no other test of the binary has.
func bucketSuffix() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
