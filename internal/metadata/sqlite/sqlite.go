// Package sqlite is the embedded metadata store: SQLite through a pure-Go driver, in WAL mode, with
// one writer connection (SQLite allows one writer; queueing in Go beats SQLITE_BUSY retries) and a
// pool of readers.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/berth/berth/internal/metadata"
)

//go:embed migrations/*.sql
var migrations embed.FS

// maxReaders bounds the reader connections; readerIdle is how long one may stay unused before it
// is closed (a variable for tests).
const maxReaders = 8

var readerIdle = time.Minute

// Store is a metadata.Store in a SQLite database file.
type Store struct {
	w, r *sql.DB
	q    queries
}

var _ metadata.Store = (*Store)(nil)

// Open opens (creating and migrating if needed) the database at path.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := func(extra string) string {
		v := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)", "foreign_keys(1)"} {
			v.Add("_pragma", p)
		}
		// Escaped, so that '?', '#' and '%' in the path stay part of the file name.
		return "file:" + (&url.URL{Path: filepath.ToSlash(path)}).EscapedPath() + "?" + v.Encode() + extra
	}
	// Page caches live outside the Go heap (modernc's libc allocator, which rounds each page of
	// 4 KiB and its header up to an 8 KiB slot). SQLite is built with
	// SQLITE_ENABLE_MEMORY_MANAGEMENT, so the connections' caches share one LRU list and together
	// hold at most the sum of their cache_size: at SQLite's default of 2 MiB each, 18 MiB, which
	// took 25 MiB of RSS once a 24 MiB database had been read through every connection
	// (TestPageCachesBounded). The writer's cache stays valid from one of its transactions to the
	// next: 1 MiB (256 pages) holds the upper levels of every index of a database of hundreds of
	// MiB, and what it misses is in the OS page cache. A reader's cache is dropped whenever
	// another connection has written since the reader's last transaction (WAL mode), so it pays
	// off only in read-only stretches; 512 KiB each. Together 5 MiB, 10 MiB of RSS at most, and
	// filled within minutes, so that memory is level after that (the soak, bench/).
	writer := dsn("&_txlock=immediate&_pragma=cache_size(-1024)")
	// Migrations go through a connection of their own, closed after them: one that sorts or
	// builds a table from a subquery opens SQLite's temporary database, whose page cache (at
	// SQLite's default size) would stay with the connection for as long as it is open.
	m, err := sql.Open("sqlite", writer)
	if err != nil {
		return nil, err
	}
	m.SetMaxOpenConns(1)
	err = migrate(ctx, m)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	w, err := sql.Open("sqlite", writer)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	// The database holds password hashes and signing keys: owner only. SQLite gives the -wal
	// and -shm files the main file's mode when it creates them.
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(f, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.Close()
			return nil, fmt.Errorf("metadata: %w", err)
		}
	}
	r, err := sql.Open("sqlite", dsn("&_pragma=query_only(1)&_pragma=cache_size(-512)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(maxReaders)
	r.SetMaxIdleConns(maxReaders)
	// Readers a burst opened are closed once it is over, and their memory (page cache, parsed
	// schema, statements) goes with them; under steady load the pool reuses the most recently
	// used connections, so only those the load needs stay open.
	r.SetConnMaxIdleTime(readerIdle)
	s := &Store{w: w, r: r}
	if err := s.q.prepare(ctx, r); err != nil {
		s.Close()
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return s, nil
}

// Close implements metadata.Store.
func (s *Store) Close() error {
	return errors.Join(s.q.close(), s.r.Close(), s.w.Close())
}

// migrate applies the embedded migrations newer than the database's user_version, each in one
// transaction with the version bump.
func migrate(ctx context.Context, db *sql.DB) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	var have int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
		return err
	}
	for _, name := range names {
		v, err := strconv.Atoi(strings.SplitN(filepath.Base(name), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", name)
		}
		if v <= have {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// queries are the read statements on hot paths, prepared once.
type queries struct {
	manifestByTag, manifestByDigest, blobSize *sql.Stmt
}

func (q *queries) prepare(ctx context.Context, db *sql.DB) error {
	var err error
	prep := func(query string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = db.PrepareContext(ctx, query)
		return st
	}
	const cols = `m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, m.content, m.created`
	q.manifestByTag = prep(`SELECT ` + cols + ` FROM repositories r
		JOIN tags t ON t.repo_id = r.id
		JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
		WHERE r.name = ? AND t.name = ?`)
	q.manifestByDigest = prep(`SELECT ` + cols + ` FROM repositories r
		JOIN manifests m ON m.repo_id = r.id
		WHERE r.name = ? AND m.digest = ?`)
	q.blobSize = prep(`SELECT b.size FROM repositories r JOIN repo_blobs b ON b.repo_id = r.id
		WHERE r.name = ? AND b.digest = ?`)
	return err
}

func (q *queries) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{q.manifestByTag, q.manifestByDigest, q.blobSize} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Ping reports whether the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}
