package sealed

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/storage"
)

// TestSpool: readers read a spool while it is written, in pieces of any size; a committed spool is
// the blob; one closed without a commit leaves nothing; on both backends (the filesystem adopts
// the spool's file, S3 gets a copy of it).
func TestSpool(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			t.Setenv("TMPDIR", t.TempDir())
			s, _, err := Open(ctx, bk.new(t), keysOf("k1"))
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 20*SegmentSize+12345)
			rand.Read(b)
			d := digest.FromBytes(b)
			sp, err := s.NewSpool(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			written := 0
			var wg sync.WaitGroup
			for r := range 4 {
				wg.Go(func() {
					rng := mrand.New(mrand.NewPCG(uint64(r), 1))
					got := 0
					for got < len(b) {
						mu.Lock()
						avail := written
						mu.Unlock()
						if r == 3 && got == 0 && avail < len(b) {
							continue // one reader starts late, from the file
						}
						if avail <= got {
							continue
						}
						n := min(avail-got, 1+rng.IntN(100_000))
						buf := make([]byte, n)
						k, err := sp.ReadAt(buf, int64(got))
						if err != nil || k != n || !bytes.Equal(buf, b[got:got+n]) {
							t.Errorf("reader %d: ReadAt(%d, %d) = %d, %v, equal %v", r, n, got, k, err, bytes.Equal(buf[:k], b[got:got+k]))
							return
						}
						got += n
					}
				})
			}
			for off := 0; off < len(b); {
				n := min(len(b)-off, 1+mrand.IntN(50_000))
				if k, err := sp.Write(b[off : off+n]); err != nil || k != n {
					t.Fatal(err)
				}
				off += n
				mu.Lock()
				written = off
				mu.Unlock()
			}
			wg.Wait()
			if err := sp.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1000)
			if _, err := sp.ReadAt(buf, int64(len(b)-1000)); err != nil || !bytes.Equal(buf, b[len(b)-1000:]) {
				t.Fatalf("ReadAt after Commit: %v", err)
			}
			sp.Close()
			wantContent(t, s, d, b)

			sp, err = s.NewSpool(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sp.Write(b[:1000])
			sp.Close()
			if _, err := s.Stat(ctx, digest.FromBytes(b[:1000])); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("an uncommitted spool became a blob: %v", err)
			}
			if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-sealed-fill-*")); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}
