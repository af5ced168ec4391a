package fs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

func TestPurgeUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Append(ctx, strings.NewReader("old bytes")); err != nil {
		t.Fatal(err)
	}
	idle.Close()
	active, err := s.NewUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer active.Close()
	// A crash can leave a temporary file of Put behind.
	tmp := filepath.Join(dir, "uploads", "put-123")
	if err := os.WriteFile(tmp, []byte("partial"), 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{filepath.Join(dir, "uploads", idle.ID(), "data"), tmp} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}

	n, err := s.PurgeUploads(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PurgeUploads = %d, %v; want 1 session purged", n, err)
	}
	if _, err := s.ResumeUpload(ctx, idle.ID()); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("idle upload after purge: %v, want ErrUploadUnknown", err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("stale temporary file survived the purge: %v", err)
	}
	u, err := s.ResumeUpload(ctx, active.ID())
	if err != nil {
		t.Fatalf("active upload was purged: %v", err)
	}
	u.Close()
}

func TestAdopt(t *testing.T) {
	ctx := context.Background()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.CreateTemp()
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("adopted bytes")
	d := oci.Digest("sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("adopted bytes"))))
	if err := s.Adopt(ctx, d, f); err != nil {
		t.Fatal(err)
	}
	if size, err := s.Stat(ctx, d); err != nil || size != int64(len("adopted bytes")) {
		t.Fatalf("Stat after Adopt = %d, %v", size, err)
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Errorf("temporary file still there after Adopt: %v", err)
	}
}
