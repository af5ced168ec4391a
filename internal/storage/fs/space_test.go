package fs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/storage"
)

// TestRemoveTemps: the temporary files a killed process leaves (an interrupted monolithic push,
// fill or spool: uploads/put-*) are removed; upload sessions, which survive restarts, and blobs
// stay.
func TestRemoveTemps(t *testing.T) {
	ctx := context.Background()
	for name, s := range map[string]storage.BlobStore{"plain": newStore(t)} {
		t.Run(name, func(t *testing.T) {
			root := s.(*Store).root
			content := []byte("a blob")
			d := digest.FromBytes(content)
			if _, err := s.Put(ctx, d, strings.NewReader(string(content))); err != nil {
				t.Fatal(err)
			}
			u, err := s.NewUpload(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Append(ctx, strings.NewReader("half a push")); err != nil {
				t.Fatal(err)
			}
			u.Close()
			// What a kill in the middle of a fill leaves: its temporary file, or its spool.
			var left []string
			if a, ok := s.(storage.FileAdopter); ok {
				f, err := a.CreateTemp()
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte("half a fill"))
				f.Close()
				left = append(left, f.Name())
			}
			if sp, ok := s.(storage.Spooler); ok {
				spool, err := sp.NewSpool(ctx)
				if err != nil {
					t.Fatal(err)
				}
				spool.Write([]byte("half a fill"))
				m, _ := filepath.Glob(filepath.Join(root, "uploads", "put-*"))
				left = append(left, m...)
				defer spool.Close()
			}
			if len(left) == 0 {
				t.Fatal("no temporary file was made")
			}
			n, err := s.(storage.TempRemover).RemoveTemps()
			if err != nil || n != len(left) {
				t.Errorf("RemoveTemps = %d, %v; want %d", n, err, len(left))
			}
			for _, f := range left {
				if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is still there: %v", f, err)
				}
			}
			if _, err := s.ResumeUpload(ctx, u.ID()); err != nil {
				t.Errorf("the upload session is gone: %v", err)
			}
			if size, err := s.Stat(ctx, d); err != nil || size != int64(len(content)) {
				t.Errorf("Stat of the blob = %d, %v", size, err)
			}
			if free, err := s.(storage.FreeSpacer).FreeSpace(); err != nil || free <= 0 {
				t.Errorf("FreeSpace = %d, %v; want a positive number", free, err)
			}
			if err := storage.CheckFree(s, 0, 1<<62); !errors.Is(err, storage.ErrInsufficientSpace) {
				t.Errorf("CheckFree with a floor of 4 EiB: %v; want ErrInsufficientSpace", err)
			}
			if err := storage.CheckFree(s, 1<<20, 1); err != nil {
				t.Errorf("CheckFree of 1 MiB with a floor of 1 byte: %v", err)
			}
			if err := storage.CheckFree(s, 1<<62, 0); err != nil {
				t.Errorf("CheckFree with no floor: %v", err)
			}
			u2, _ := s.ResumeUpload(ctx, u.ID())
			u2.Cancel(ctx)
		})
	}
}
