package sealed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage/fs"
)

// v1Dir copies testdata/v1, a data directory written by berth's encrypted filesystem store before
// the sealed layer (blobs of 0, 1, 65536, 65537 and 197385 bytes, one committed from an upload in
// two chunks, one upload in progress), and returns it, its key and its digests.
func v1Dir(t *testing.T) (string, *crypt.Keyring, []oci.Digest) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("testdata", "v1", "data")
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := crypt.LoadKeyFile(filepath.Join("testdata", "v1", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypt.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", "v1", "digests"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ds []oci.Digest
	for sc := bufio.NewScanner(f); sc.Scan(); {
		ds = append(ds, oci.Digest(sc.Text()))
	}
	return dir, keys, ds
}

// TestConvertV1: a v1 data directory converts once, to blobs that read back whole and verified,
// with their keys in records; a conversion cut short (a crash) after any blob goes on from there;
// the old upload session is gone; the wrong key converts nothing.
func TestConvertV1(t *testing.T) {
	ctx := context.Background()
	errCrash := errors.New("crash")
	_, _, all := v1Dir(t)
	for crashAfter := 0; crashAfter <= len(all); crashAfter++ {
		dir, keys, ds := v1Dir(t)
		b, err := fs.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ConvertV1(ctx, dir, b, keysOf("other"), nil); err == nil || !strings.Contains(err.Error(), keys.PrimaryID()) {
			t.Fatalf("ConvertV1 with another key: %v", err)
		}
		if crashAfter < len(ds) {
			_, err := ConvertV1(ctx, dir, b, keys, func(done int) error {
				if done > crashAfter {
					return errCrash
				}
				return nil
			})
			if !errors.Is(err, errCrash) {
				t.Fatalf("crash after %d: %v", crashAfter, err)
			}
		}
		n, err := ConvertV1(ctx, dir, b, keys, nil)
		want := len(ds)
		if crashAfter < len(ds) {
			want -= crashAfter + 1
		}
		if err != nil || n != want {
			t.Fatalf("crash after %d: ConvertV1 = %d, %v; want %d converted", crashAfter, n, err, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "encryption.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("encryption.json is still there: %v", err)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "uploads")); len(entries) != 0 {
			t.Errorf("uploads/ still holds %d entries", len(entries))
		}
		s, _, err := Open(ctx, b, keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			r, size, err := s.Open(ctx, d)
			if err != nil {
				t.Fatalf("%s: %v", d, err)
			}
			got, err := d.Algorithm().FromReader(r)
			r.Close()
			if err != nil || got != d {
				t.Fatalf("%s reads as %s (%d bytes), %v", d, got, size, err)
			}
		}
		if _, usage, err := KeyUsage(ctx, b); err != nil || usage[keys.PrimaryID()] < len(ds) {
			t.Errorf("KeyUsage = %v, %v; want %d data keys under %s", usage, err, len(ds), keys.PrimaryID())
		}
		if n, err := ConvertV1(ctx, dir, b, keys, nil); n != 0 || err != nil {
			t.Errorf("a second ConvertV1 = %d, %v", n, err)
		}
	}
	// The v1 directory's blobs are what the new ones replace: check the test reads the real thing.
	dir, _, ds := v1Dir(t)
	old, _ := os.ReadFile(blobFile(dir, ds[len(ds)-1]))
	if !bytes.HasPrefix(old, []byte("BERTHENC")) || bytes.Contains(old, []byte("BERTH-PLAINTEXT")) {
		t.Fatal("testdata/v1 is not a v1 encrypted directory")
	}
}
