package sealed

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/s3"
)

// namedKeys is a Keys of named AES keys, so that tests can say which key wraps what.
type namedKeys struct {
	primary string
	keys    map[string][]byte
}

var keyMaterial = map[string][]byte{}

// keysOf makes a keyring of the named keys, the first primary; each name is one key for the whole
// test binary.
func keysOf(names ...string) *namedKeys {
	k := &namedKeys{primary: names[0], keys: map[string][]byte{}}
	for _, n := range names {
		if keyMaterial[n] == nil {
			keyMaterial[n] = make([]byte, 32)
			rand.Read(keyMaterial[n])
		}
		k.keys[n] = keyMaterial[n]
	}
	return k
}

func (k *namedKeys) PrimaryID() string  { return k.primary }
func (k *namedKeys) Has(id string) bool { return k.keys[id] != nil }

func (k *namedKeys) aead(id string) cipher.AEAD {
	b, _ := aes.NewCipher(k.keys[id])
	a, _ := cipher.NewGCM(b)
	return a
}

func (k *namedKeys) WrapDEK(dek []byte) (string, []byte, error) {
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return k.primary, k.aead(k.primary).Seal(nonce, nonce, dek, []byte(k.primary)), nil
}

func (k *namedKeys) UnwrapDEK(id string, w []byte) ([]byte, error) {
	if !k.Has(id) {
		return nil, fmt.Errorf("no key %s", id)
	}
	return k.aead(id).Open(nil, w[:12], w[12:], []byte(id))
}

// backends are the backends the marker and rotation tests run on: new, empty ones.
var backends = []struct {
	name string
	new  func(t *testing.T) Backend
}{
	{"fs", func(t *testing.T) Backend {
		b, err := fs.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}},
	{"s3", func(t *testing.T) Backend {
		srv := enginetest.S3(t)
		b, err := s3.New(context.Background(), s3.Options{Bucket: srv.Bucket, Region: srv.Region,
			Endpoint: srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}},
}

// TestMarker: how the storage's record of its keys decides what may open it.
func TestMarker(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			b := []byte("content")
			d := digest.FromBytes(b)

			// Storage with a plain blob cannot become sealed in place.
			plain := bk.new(t)
			plain.Put(ctx, d, bytes.NewReader(b))
			if _, _, err := Open(ctx, plain, keysOf("k1")); err == nil || !strings.Contains(err.Error(), "unencrypted") {
				t.Errorf("Open on storage with plain blobs: %v", err)
			}
			if err := Refuse(ctx, plain); err != nil {
				t.Errorf("the refused storage was marked encrypted: %v", err)
			}

			back := bk.new(t)
			s, prev, err := Open(ctx, back, keysOf("k1"))
			if err != nil || len(prev) != 0 {
				t.Fatal(prev, err)
			}
			s.Put(ctx, d, bytes.NewReader(b))
			if err := Refuse(ctx, back); !errors.Is(err, ErrEncrypted) || !strings.Contains(err.Error(), "k1") {
				t.Errorf("Refuse on sealed storage: %v", err)
			}
			if _, _, err := Open(ctx, back, keysOf("k2")); err == nil || !strings.Contains(err.Error(), "k1") || !strings.Contains(err.Error(), "rotate") {
				t.Errorf("Open with the wrong key: %v", err)
			}
			impostor := &namedKeys{primary: "k1", keys: map[string][]byte{"k1": make([]byte, 32)}}
			if _, _, err := Open(ctx, back, impostor); err == nil || !strings.Contains(err.Error(), "canary") {
				t.Errorf("Open with a key of the same ID but other bytes: %v", err)
			}
			// A new primary with the old key as a previous one: new blobs go under k2, and k1
			// stays needed until a rotation.
			s2, prev, err := Open(ctx, back, keysOf("k2", "k1"))
			if err != nil || len(prev) != 1 || prev[0] != "k1" {
				t.Fatalf("Open with k2, k1 = %v, %v; want previous [k1]", prev, err)
			}
			wantContent(t, s2, d, b)
			c := []byte("new content")
			s2.Put(ctx, digest.FromBytes(c), bytes.NewReader(c))
			if _, usage, err := KeyUsage(ctx, back); err != nil || usage["k1"] != 1 || usage["k2"] != 1 {
				t.Errorf("KeyUsage = %v, %v; want one data key under each key", usage, err)
			}
			if _, _, err := Open(ctx, back, keysOf("k2")); err == nil || !strings.Contains(err.Error(), "k1") {
				t.Errorf("Open without the key that still wraps a data key: %v", err)
			}
		})
	}
}

// storedBytes reads the stored (sealed) bytes of the blobs ds from the backend.
func storedBytes(t *testing.T, b Backend, ds []oci.Digest) map[oci.Digest][]byte {
	t.Helper()
	m := map[oci.Digest][]byte{}
	for _, d := range ds {
		r, _, err := b.Open(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		m[d], err = io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestRotate: rotation re-wraps every data key (blobs and upload sessions) and rewrites no blob;
// after it the old key can go; an interrupted rotation runs again.
func TestRotate(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			back := bk.new(t)
			s, _, err := Open(ctx, back, keysOf("old"))
			if err != nil {
				t.Fatal(err)
			}
			var blobs [][]byte
			var ds []oci.Digest
			for i := range 4 {
				b := pattern(i*SegmentSize + 17*i)
				blobs = append(blobs, b)
				ds = append(ds, digest.FromBytes(b))
				if _, err := s.Put(ctx, ds[i], bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			up := pattern(SegmentSize + 3)
			u, _ := s.NewUpload(ctx)
			u.Append(ctx, bytes.NewReader(up[:SegmentSize+1]))
			u.Close()
			before := storedBytes(t, back, ds)

			// Interrupted: the marker lists both keys, two records are done.
			both := keysOf("new", "old")
			m, ver, _ := readMarker(ctx, back)
			m.Keys = []string{"new", "old"}
			putJSON(ctx, back, markerKey, m, ver)
			names, _ := back.ListRecords(ctx, "keys/")
			for _, n := range names[:2] {
				if _, err := rewrap(ctx, back, both, n); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := Open(ctx, back, keysOf("new")); err == nil || !strings.Contains(err.Error(), "old") {
				t.Fatalf("opening half-rotated storage without the old key: %v", err)
			}
			if _, err := Rotate(ctx, back, keysOf("new")); err == nil {
				t.Fatal("Rotate without the old key succeeded")
			}
			res, err := Rotate(ctx, back, both)
			if err != nil {
				t.Fatal(err)
			}
			if res.Rewrapped != len(blobs)+1-2 || res.Current != 2 || len(res.Retired) != 1 || res.Retired[0] != "old" {
				t.Errorf("Rotate = %+v; want %d re-wrapped, 2 current, old retired", res, len(blobs)-1)
			}
			after := storedBytes(t, back, ds)
			for d, b := range before {
				if !bytes.Equal(after[d], b) {
					t.Errorf("%s: rotation changed the stored blob", d)
				}
			}
			s2, _, err := Open(ctx, back, keysOf("new"))
			if err != nil {
				t.Fatalf("opening with the new key alone after the rotation: %v", err)
			}
			for i, b := range blobs {
				wantContent(t, s2, ds[i], b)
			}
			u2, err := s2.ResumeUpload(ctx, u.ID())
			if err != nil {
				t.Fatal(err)
			}
			u2.Append(ctx, bytes.NewReader(up[SegmentSize+1:]))
			if err := u2.Commit(ctx, digest.FromBytes(up)); err != nil {
				t.Fatal(err)
			}
			wantContent(t, s2, digest.FromBytes(up), up)
			if _, usage, _ := KeyUsage(ctx, back); usage["old"] != 0 || usage["new"] != len(blobs)+1 {
				t.Errorf("KeyUsage after the rotation: %v", usage)
			}
			if res, err := Rotate(ctx, back, keysOf("new")); err != nil || res.Rewrapped != 0 || res.Current != len(blobs)+1 {
				t.Errorf("second Rotate = %+v, %v", res, err)
			}
		})
	}
}

// TestOpenConcurrently: replicas starting at once on new storage agree on one marker.
func TestOpenConcurrently(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			back := bk.new(t)
			errs := make(chan error, 8)
			for range 8 {
				go func() {
					_, _, err := Open(ctx, back, keysOf("k1"))
					errs <- err
				}()
			}
			for range 8 {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}
