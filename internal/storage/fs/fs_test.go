package fs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/storagetest"
)

func newStore(t *testing.T) storage.BlobStore {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkNoTempFiles(t, s.root) })
	return s
}

// reopen opens the same directory again, as a restarted process would.
func reopen(t *testing.T, s storage.BlobStore) storage.BlobStore {
	t.Helper()
	s2, err := New(s.(*Store).root)
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

func TestConformance(t *testing.T) {
	storagetest.RunOptions(t, newStore, storagetest.Options{Reopen: reopen})
}

// checkNoTempFiles fails if anything but complete blobs and open upload sessions is left in root.
func checkNoTempFiles(t *testing.T, root string) {
	t.Helper()
	if t.Failed() {
		return
	}
	entries, err := os.ReadDir(filepath.Join(root, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			t.Errorf("temporary file left in uploads/: %s", e.Name())
		}
	}
	err = filepath.WalkDir(filepath.Join(root, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 4 {
			t.Errorf("unexpected file in blobs/: %s", rel)
			return nil
		}
		dg := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[3])
		if _, err := oci.ParseDigest(dg.String()); err != nil || parts[2] != parts[3][:2] {
			t.Errorf("unexpected file in blobs/: %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func uploadDirs(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestLayout(t *testing.T) {
	ctx := context.Background()
	s := newStore(t).(*Store)
	b := []byte("layout")
	d := digest.FromBytes(b)
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("blob file %s: %q, %v", path, got, err)
	}
	r, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(*os.File); !ok {
		t.Errorf("Open returned a %T, want an *os.File (for sendfile)", r)
	}
}

func TestResumeUploadPathTraversal(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	s, err := New(filepath.Join(base, "data"))
	if err != nil {
		t.Fatal(err)
	}
	// A directory outside the store that looks like an upload session: uploads/<id>/data would
	// reach it through "../../" + its name, an id of exactly 32 characters.
	evilName := strings.Repeat("e", 26)
	evil := filepath.Join(base, evilName)
	if err := os.Mkdir(evil, 0o750); err != nil {
		t.Fatal(err)
	}
	evilData := filepath.Join(evil, "data")
	if err := os.WriteFile(evilData, []byte("precious"), 0o640); err != nil {
		t.Fatal(err)
	}
	// And a directory inside uploads/ reached with a slash.
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ids := []string{
		"../x",
		"../../" + evilName,
		"..%2f..%2f" + evilName[:22],
		"/" + u.ID()[1:],
		u.ID()[:31] + "/",
		u.ID()[:15] + "/" + u.ID()[16:],
		u.ID()[:13] + "/../" + u.ID()[17:],
		strings.Repeat("../", 10) + "ab",
		strings.Repeat("./", 16),
		strings.Repeat(".", 32),
		strings.ToUpper(u.ID()),
		u.ID()[:31] + "\x00",
		u.ID()[:31] + "g",
	}
	for _, id := range ids {
		if len(id) == 32 && filepath.Clean(id) == "" {
			t.Fatal("bad test id")
		}
		up, err := s.ResumeUpload(ctx, id)
		if err == nil {
			up.Append(ctx, strings.NewReader("attack"))
			up.Cancel(ctx)
		}
		if !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("ResumeUpload(%q): %v; want ErrUploadUnknown", id, err)
		}
	}
	if got, err := os.ReadFile(evilData); err != nil || string(got) != "precious" {
		t.Errorf("file outside the store: %q, %v", got, err)
	}
	if _, err := s.ResumeUpload(ctx, u.ID()); err != nil {
		t.Errorf("the real upload is gone: %v", err)
	}
}

// Digests are turned into paths too; malformed ones must never reach the filesystem.
func TestDigestPathTraversal(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	s, err := New(filepath.Join(base, "data"))
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, d := range []oci.Digest{
		"sha256:../../../victim",
		"sha256:" + oci.Digest(strings.Repeat("../", 21)+"v"),
		"../../victim",
		"sha256:",
		"",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
	} {
		if _, err := s.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat(%q): %v; want ErrNotFound", d, err)
		}
		if r, _, err := s.Open(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			if err == nil {
				r.Close()
			}
			t.Errorf("Open(%q): %v; want ErrNotFound", d, err)
		}
		if err := s.Delete(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Delete(%q): %v; want ErrNotFound", d, err)
		}
		if _, err := s.Put(ctx, d, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) succeeded", d)
		}
	}
	if got, err := os.ReadFile(victim); err != nil || string(got) != "precious" {
		t.Errorf("file outside the store: %q, %v", got, err)
	}
}

// Commit must refuse digests it cannot compute, not panic.
func TestCommitMalformedDigest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, d := range []oci.Digest{"", "sha256", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "foo:bar"} {
		u, err := s.NewUpload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Append(ctx, strings.NewReader("content")); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Commit(%q) panicked: %v", d, r)
				}
			}()
			var oe *oci.Error
			if err := u.Commit(ctx, d); !errors.As(err, &oe) || oe.Code != oci.ErrDigestInvalid {
				t.Errorf("Commit(%q) = %v, want a DIGEST_INVALID error", d, err)
			}
		}()
		u.Cancel(ctx)
	}
}

// After a restart the running hash is gone: Commit hashes the stored bytes, and so notices bytes
// that changed under it (lost from the page cache in a power failure, say).
func TestRestartRehashes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s1, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte("0123456789abcdef"), 40_000)
	u, err := s1.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	if _, err := u.Append(ctx, bytes.NewReader(b[:300_000])); err != nil {
		t.Fatal(err)
	}
	u.Close()

	// Restart: a new Store on the same directory resumes, appends and commits.
	s2, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := s2.ResumeUpload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := u2.Size(); got != 300_000 {
		t.Fatalf("Size after restart = %d, want 300000", got)
	}
	if _, err := u2.Append(ctx, bytes.NewReader(b[300_000:])); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	if err := u2.Commit(ctx, d); err != nil {
		t.Fatalf("Commit after restart: %v", err)
	}
	got, err := os.ReadFile(s2.blobPath(d))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("blob after restart: %d bytes, %v", len(got), err)
	}

	// The same, but the bytes on disk changed while the process was down.
	u, err = s2.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id = u.ID()
	c := append([]byte("other "), b...)
	if _, err := u.Append(ctx, bytes.NewReader(c)); err != nil {
		t.Fatal(err)
	}
	u.Close()
	data := filepath.Join(dir, "uploads", id, "data")
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), 1000); err != nil { // same size, other content
		t.Fatal(err)
	}
	f.Close()
	s3, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	u3, err := s3.ResumeUpload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	dc := digest.FromBytes(c)
	if err := u3.Commit(ctx, dc); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("Commit of bytes changed on disk: %v; want ErrDigestMismatch", err)
	}
	if _, err := s3.Stat(ctx, dc); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after the mismatch: %v; want ErrNotFound", err)
	}
	checkNoTempFiles(t, dir)
	if names := uploadDirs(t, dir); len(names) != 0 {
		t.Errorf("upload sessions left: %v", names)
	}
}

// An upload's data file that another process (or a failed request) lengthened invalidates the
// running hash: Commit must hash the file, not trust the hash.
func TestOutOfBandAppend(t *testing.T) {
	ctx := context.Background()
	s := newStore(t).(*Store)
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Append(ctx, strings.NewReader("hello ")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(s.root, "uploads", u.ID(), "data"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("world")
	f.Close()
	if got := u.Size(); got != 11 {
		t.Fatalf("Size = %d, want 11", got)
	}
	if err := u.Commit(ctx, digest.FromString("hello world")); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func TestNoTempFilesLeft(t *testing.T) {
	ctx := context.Background()
	s := newStore(t).(*Store)
	b := bytes.Repeat([]byte("blob"), 100_000)
	d := digest.FromBytes(b)

	// Put: good, mismatched, failing reader, already present.
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, digest.FromString("x"), bytes.NewReader(b)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, digest.FromString("y"), iotestErr{}); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}

	// Uploads: committed, committed when present, mismatched (sha256 and sha512, fresh and
	// resumed), cancelled, committed concurrently.
	commit := func(want oci.Digest, resume bool) error {
		u, err := s.NewUpload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if _, err := u.Append(ctx, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if resume {
			u.Close()
			if u, err = s.ResumeUpload(ctx, u.ID()); err != nil {
				t.Fatal(err)
			}
			defer u.Close()
		}
		return u.Commit(ctx, want)
	}
	for _, resume := range []bool{false, true} {
		if err := commit(d, resume); err != nil {
			t.Fatal(err)
		}
		if err := commit(digest.SHA512.FromBytes(b), resume); err != nil {
			t.Fatal(err)
		}
		if err := commit(digest.FromString("z"), resume); !errors.Is(err, storage.ErrDigestMismatch) {
			t.Fatal(err)
		}
		if err := commit(digest.SHA512.FromString("z"), resume); !errors.Is(err, storage.ErrDigestMismatch) {
			t.Fatal(err)
		}
	}
	u, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u.Append(ctx, bytes.NewReader(b))
	if err := u.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := commit(d, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	if names := uploadDirs(t, s.root); len(names) != 0 {
		t.Errorf("left in uploads/: %v", names)
	}
	checkNoTempFiles(t, s.root)
}

type iotestErr struct{}

func (iotestErr) Read(p []byte) (int, error) {
	n := copy(p, "partial")
	return n, errors.New("broken")
}

func TestRecords(t *testing.T) {
	storagetest.RunRecords(t, func(t *testing.T) storage.BlobStore { return newStore(t) })
}
