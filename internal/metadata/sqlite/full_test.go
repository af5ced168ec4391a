package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
)

// TestFull: when SQLite has no room (here its page limit, as a full disk would), a write fails
// with metadata.ErrFull, which the registry answers as a full disk, and writes nothing; what was
// written before stays, and writes work again once there is room.
func TestFull(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "metadata.db"))
	defer s.Close()
	var pages int
	if err := s.w.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	// The writer is one connection, so the limit holds for every write below.
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages+2)); err != nil {
		t.Fatal(err)
	}
	var linked []digest.Digest
	var err error
	for i := 0; i < 10000; i++ {
		d := digest.FromString(fmt.Sprint(i))
		if err = s.LinkBlob(ctx, "full/repo", d, int64(i)); err != nil {
			break
		}
		linked = append(linked, d)
	}
	if !errors.Is(err, metadata.ErrFull) {
		t.Fatalf("LinkBlob past the page limit after %d links: %v, want metadata.ErrFull", len(linked), err)
	}
	refused := digest.FromString(fmt.Sprint(len(linked)))
	if _, err := s.BlobSize(ctx, "full/repo", refused); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("the refused link: %v, want ErrNotFound", err)
	}
	for i, d := range linked {
		if size, err := s.BlobSize(ctx, "full/repo", d); err != nil || size != int64(i) {
			t.Fatalf("blob %d linked before the store filled: %d, %v", i, size, err)
		}
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA max_page_count = 1073741823"); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(ctx, "full/repo", refused, 1); err != nil {
		t.Fatalf("LinkBlob once there is room again: %v", err)
	}
	t.Logf("%d links went in before the store was full", len(linked))
}
