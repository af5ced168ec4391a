package sealed

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/s3"
	"github.com/berth/berth/internal/storage/storagetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// testKeys is a keyring of one new key.
func testKeys(t testing.TB) *crypt.Keyring {
	t.Helper()
	k, err := crypt.GenerateKeyFile(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypt.NewKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// reopener remembers how each store was made, so that Reopen makes another store (another
// backend object, other in-process state) on the same storage with the same keys, as another
// process would.
type reopener struct {
	mu   sync.Mutex
	open map[storage.BlobStore]func(t *testing.T) storage.BlobStore
}

func (r *reopener) add(s storage.BlobStore, open func(t *testing.T) storage.BlobStore) storage.BlobStore {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[storage.BlobStore]func(t *testing.T) storage.BlobStore{}
	}
	r.open[s] = open
	return s
}

func (r *reopener) reopen(t *testing.T, s storage.BlobStore) storage.BlobStore {
	r.mu.Lock()
	open := r.open[s]
	r.mu.Unlock()
	return r.add(open(t), open)
}

// overFS is a new sealed store over a new filesystem store.
func overFS(t *testing.T, r *reopener) storage.BlobStore {
	dir, keys := t.TempDir(), testKeys(t)
	open := func(t *testing.T) storage.BlobStore {
		b, err := fs.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		return New(b, keys)
	}
	return r.add(open(t), open)
}

// overS3 is a new sealed store over an S3 store on a new bucket of versitygw.
func overS3(t *testing.T, r *reopener) storage.BlobStore {
	srv := enginetest.S3(t)
	keys := testKeys(t)
	open := func(t *testing.T) storage.BlobStore {
		b, err := s3.New(context.Background(), s3.Options{Bucket: srv.Bucket, Prefix: "sealed", Region: srv.Region,
			Endpoint: srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
			PartSize: s3.MinPartSize})
		if err != nil {
			t.Fatal(err)
		}
		return New(b, keys)
	}
	return r.add(open(t), open)
}

func TestConformanceFS(t *testing.T) {
	var r reopener
	storagetest.RunOptions(t, func(t *testing.T) storage.BlobStore { return overFS(t, &r) },
		storagetest.Options{Reopen: r.reopen})
}

func TestConformanceS3(t *testing.T) {
	var r reopener
	storagetest.RunOptions(t, func(t *testing.T) storage.BlobStore {
		s := overS3(t, &r)
		// A presigned URL would hand out ciphertext: the layer must not offer one, although the
		// store below does.
		if _, ok := s.(storage.Redirector); ok {
			t.Fatal("the sealed layer is a storage.Redirector")
		}
		return s
	}, storagetest.Options{Reopen: r.reopen})
}
