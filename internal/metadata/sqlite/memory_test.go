package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/berth/berth/internal/metadata"
)

// cacheUsed is what one connection's page cache holds, as SQLite counts it.
func cacheUsed(t *testing.T, c *sql.Conn) int {
	t.Helper()
	var used int
	err := c.Raw(func(dc any) error {
		var err error
		used, _, err = dc.(sqlite.DBStatus).Status(sqlite.DBStatusCacheUsed, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// TestPageCachesBounded: SQLite's page caches (outside the Go heap) are bounded by the sum of
// the connections' cache_size, whatever the size of the database: modernc builds SQLite with
// SQLITE_ENABLE_MEMORY_MANAGEMENT, so every connection's cache recycles pages from one shared
// LRU list, and a cache allocates new pages only while it is under its own cache_size. Reading
// a 24 MiB database through the writer and every reader leaves them holding at most 1 MiB
// (writer) + 8 x 512 KiB (readers); at SQLite's default of 2 MiB each it would be 18 MiB.
func TestPageCachesBounded(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "metadata.db"))
	defer s.Close()
	// 3072 manifests of 4000 bytes, each on a page of its own plus an overflow page: 24 MiB.
	const rows, size = 3072, 4000
	err := s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, "big/repo", true)
		if err != nil {
			return err
		}
		content := []byte(strings.Repeat("x", size))
		for i := range rows {
			if _, err := tx.ExecContext(ctx, `INSERT INTO manifests (repo_id, digest, media_type, artifact_type, content, created)
				VALUES (?, ?, 'm', '', ?, 0)`, id, fmt.Sprintf("sha256:%064d", i), content); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// hex() reads every byte, overflow pages included.
	scan := func(c *sql.Conn) {
		t.Helper()
		var n, total int64
		if err := c.QueryRowContext(ctx, `SELECT count(*), sum(length(hex(content))) FROM manifests`).Scan(&n, &total); err != nil {
			t.Fatal(err)
		}
		if n != rows || total != 2*rows*size {
			t.Fatalf("scan: %d manifests, %d hex digits", n, total)
		}
	}
	// Every reader at once, so that each is a connection of its own, and the writer.
	var conns []*sql.Conn
	for range maxReaders {
		c, err := s.r.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	w, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	conns = append(conns, w)
	for _, c := range conns {
		scan(c)
	}
	var sum int
	for _, c := range conns {
		sum += cacheUsed(t, c)
	}
	// SQLite counts each page with its header (about 5%), and each connection's pager.
	const budget = 1024<<10 + maxReaders*512<<10
	t.Logf("page caches after every connection read 24 MiB: %d KiB (budget %d KiB)", sum>>10, budget>>10)
	if sum > budget*11/10 {
		t.Errorf("the page caches hold %d KiB after every connection read 24 MiB, want at most %d KiB", sum>>10, budget>>10)
	}
	if sum < budget/2 {
		t.Errorf("the page caches hold %d KiB after every connection read 24 MiB: the test did not fill them (budget %d KiB)", sum>>10, budget>>10)
	}
}

// TestIdleReadersClose: readers a burst opened are closed once they have been idle for
// readerIdle, and with them the memory they hold.
func TestIdleReadersClose(t *testing.T) {
	defer func(d time.Duration) { readerIdle = d }(readerIdle)
	readerIdle = 100 * time.Millisecond
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "metadata.db"))
	defer s.Close()
	var conns []*sql.Conn
	for range maxReaders {
		c, err := s.r.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var one int
		if err := c.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if n := s.r.Stats().OpenConnections; n != maxReaders {
		t.Fatalf("%d readers open during the burst, want %d", n, maxReaders)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.r.Stats().OpenConnections > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.r.Stats().OpenConnections; n != 0 {
		t.Errorf("%d readers still open 10 s after the burst, want 0 (idle after %s)", n, readerIdle)
	}
	// The store still reads: a reader is opened again.
	if _, _, err := s.Repositories(ctx, metadata.Page{N: -1}); err != nil {
		t.Fatal(err)
	}
}
