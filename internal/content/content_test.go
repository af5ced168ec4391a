package content_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/content"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
)

var ctx = context.Background()

type env struct {
	blobs *fs.Store
	meta  *sqlite.Store
	c     *content.Store
}

func newEnv(t *testing.T) env {
	t.Helper()
	dir := t.TempDir()
	blobs, err := fs.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlite.Open(ctx, filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return env{blobs, meta, content.New(blobs, meta)}
}

// linked reports whether repo links d, failing on anything but a plain "no".
func (e env) linked(t *testing.T, repo string, d oci.Digest) bool {
	t.Helper()
	_, err := e.meta.BlobSize(ctx, repo, d)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func (e env) stored(t *testing.T, d oci.Digest) bool {
	t.Helper()
	_, err := e.blobs.Stat(ctx, d)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// The blob is reserved before its bytes are stored, and linked only after: a collector that
// looks at any moment sees a reservation or a link for bytes it might delete.
func TestPublishOrder(t *testing.T) {
	e := newEnv(t)
	body := []byte("layer")
	d := digest.FromBytes(body)
	var during metadata.BlobRecord
	size, err := e.c.Publish(ctx, "repo", d, func(ctx context.Context) (int64, error) {
		rec, err := e.meta.Blob(ctx, d)
		if err != nil {
			t.Errorf("no record of the blob while its bytes are stored: %v", err)
		}
		during = rec
		if e.linked(t, "repo", d) {
			t.Error("linked before its bytes were stored")
		}
		return e.blobs.Put(ctx, d, bytes.NewReader(body))
	})
	if err != nil || size != int64(len(body)) {
		t.Fatalf("Publish = %d, %v", size, err)
	}
	if during.Size != -1 || during.Links != 0 {
		t.Errorf("record while storing = %+v; want reserved (size -1), no links", during)
	}
	if !e.linked(t, "repo", d) || !e.stored(t, d) {
		t.Error("not linked and stored after Publish")
	}
	// A publish that fails links nothing (the reservation stays, for the collector to expire).
	bad := digest.FromString("other")
	if _, err := e.c.Publish(ctx, "repo", bad, func(context.Context) (int64, error) {
		return 0, storage.ErrDigestMismatch
	}); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("failed Publish: %v", err)
	}
	if e.linked(t, "repo", bad) {
		t.Error("a failed publish linked the blob")
	}
	if rec, err := e.meta.Blob(ctx, bad); err != nil || rec.Size != -1 {
		t.Errorf("record after a failed publish = %+v, %v; want the reservation", rec, err)
	}
}

func TestPutAndCommit(t *testing.T) {
	e := newEnv(t)
	body := []byte("pushed whole")
	d := digest.FromBytes(body)
	if _, err := e.c.Put(ctx, "repo", digest.FromString("not it"), bytes.NewReader(body)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Errorf("Put under the wrong digest: %v; want ErrDigestMismatch", err)
	}
	if n, err := e.c.Put(ctx, "repo", d, bytes.NewReader(body)); err != nil || n != int64(len(body)) {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if !e.linked(t, "repo", d) {
		t.Error("Put did not link")
	}

	chunked := []byte("pushed in chunks")
	cd := digest.FromBytes(chunked)
	u, err := e.blobs.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, part := range [][]byte{chunked[:6], chunked[6:]} {
		if _, err := u.Append(ctx, bytes.NewReader(part)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.c.Commit(ctx, "repo", u, cd); err != nil || n != int64(len(chunked)) {
		t.Fatalf("Commit = %d, %v", n, err)
	}
	if !e.linked(t, "repo", cd) || !e.stored(t, cd) {
		t.Error("Commit did not store and link")
	}
	rec, err := e.meta.Blob(ctx, cd)
	if err != nil || rec.Size != int64(len(chunked)) || rec.Links != 1 {
		t.Errorf("record after Commit = %+v, %v", rec, err)
	}
}

// A mount links only what the source links and the store holds; a link of bytes that are not
// stored is refused and links nothing.
func TestMountAndLink(t *testing.T) {
	e := newEnv(t)
	body := []byte("shared")
	d := digest.FromBytes(body)
	if ok, err := e.c.Mount(ctx, "dst", "src", d); ok || err != nil {
		t.Errorf("Mount from a repository without the blob = %v, %v; want false", ok, err)
	}
	if _, err := e.c.Put(ctx, "src", d, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.c.Mount(ctx, "dst", "src", d); !ok || err != nil {
		t.Fatalf("Mount = %v, %v", ok, err)
	}
	if !e.linked(t, "dst", d) {
		t.Error("Mount did not link")
	}
	// The bytes gone from under the links (a store restored from an older backup): nothing more
	// is linked to them.
	if err := e.blobs.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.c.Mount(ctx, "third", "src", d); ok || err != nil {
		t.Errorf("Mount of bytes not stored = %v, %v; want false", ok, err)
	}
	if err := e.c.Link(ctx, "third", d, int64(len(body))); !errors.Is(err, content.ErrNotStored) {
		t.Errorf("Link of bytes not stored: %v; want ErrNotStored", err)
	}
	if e.linked(t, "third", d) {
		t.Error("bytes not stored were linked")
	}
}

// The empty config that the registry provides is stored before the manifest links it, and a
// refused manifest links nothing.
func TestPutManifestProvides(t *testing.T) {
	e := newEnv(t)
	layer := []byte("payload")
	ld := digest.FromBytes(layer)
	empty := metadata.BlobRef{Digest: oci.EmptyJSONDigest, Size: int64(len(oci.EmptyJSON))}
	m := func(name string, blobs ...oci.Digest) *metadata.NewManifest {
		nm := &metadata.NewManifest{Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageManifest,
			Content: []byte(`{"name":"` + name + `"}`)}, Blobs: blobs, Provided: []metadata.BlobRef{empty}}
		nm.Digest = digest.FromBytes(nm.Content)
		return nm
	}
	if err := e.c.PutManifest(ctx, "repo", m("refused", oci.EmptyJSONDigest, ld)); !errors.Is(err, metadata.ErrBlobUnknown) {
		t.Fatalf("PutManifest with a layer not pushed: %v; want ErrBlobUnknown", err)
	}
	if e.linked(t, "repo", oci.EmptyJSONDigest) {
		t.Error("a refused manifest linked the empty config")
	}
	if _, err := e.c.Put(ctx, "repo", ld, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.PutManifest(ctx, "repo", m("artifact", oci.EmptyJSONDigest, ld), "v1"); err != nil {
		t.Fatal(err)
	}
	if !e.linked(t, "repo", oci.EmptyJSONDigest) || !e.stored(t, oci.EmptyJSONDigest) {
		t.Error("the empty config is not stored and linked")
	}
	rec, err := e.meta.Blob(ctx, oci.EmptyJSONDigest)
	if err != nil || rec.Manifests != 1 {
		t.Errorf("record of the empty config = %+v, %v; want referenced by the manifest", rec, err)
	}
	other := &metadata.NewManifest{Manifest: metadata.Manifest{Digest: "sha256:x"},
		Provided: []metadata.BlobRef{{Digest: ld, Size: 7}}}
	if err := e.c.PutManifest(ctx, "repo", other); err == nil || !strings.Contains(err.Error(), "cannot provide") {
		t.Errorf("PutManifest providing a blob other than the empty config: %v", err)
	}
}
