// Package postgres is the metadata store that replicas share: PostgreSQL through pgx. Each method
// is one statement, or one transaction at READ COMMITTED. Writers that meet do so in upserts
// (INSERT ... ON CONFLICT), in row locks and in foreign keys, which PostgreSQL resolves by making
// one wait for the other; a transaction it aborts instead (a deadlock) is run again. Names, tags
// and digests sort in byte order whatever the database's collation. Tested with PostgreSQL 15.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth/berth/internal/metadata"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is a metadata.Store, metadata.Accounts and metadata.Leases in a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
}

var (
	_ metadata.Store    = (*Store)(nil)
	_ metadata.Accounts = (*Store)(nil)
)

// Open connects to the database that dsn names (a postgres:// URL or libpq's key=value form; pgx's
// pool_max_conns and the like are read from it too) and migrates it to the newest schema.
// Replicas may open one database at the same time: one of them migrates, the others wait for it.
// A database migrated by a newer berth is left as it is.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A database that does not answer fails requests (503) within this, rather than hold
		// them until the client gives up; connect_timeout in the DSN overrides it.
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("metadata: %w", mapError(err))
	}
	return &Store{pool: pool}, nil
}

// defaultConnectTimeout bounds a new connection when the DSN does not.
const defaultConnectTimeout = 5 * time.Second

// Close implements metadata.Store; it waits for the connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrationLock is the key of the advisory lock that one migration at a time holds ("berth").
const migrationLock = 0x6265727468

type migration struct {
	version int
	name    string
}

// migrations lists the embedded migrations by version; a file is VERSION_what.sql.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		v, err := strconv.Atoi(strings.SplitN(path.Base(name), "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad name", name)
		}
		out = append(out, migration{v, name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies the migrations newer than the database's, in one transaction with their rows in
// schema_migrations. The transaction first takes an advisory lock, which PostgreSQL holds until it
// ends: a second process migrating at the same time waits there, and then finds nothing to do.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	list, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY,
			applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return err
		}
		for _, m := range list {
			if m.version <= have {
				continue
			}
			body, err := migrationFiles.ReadFile(m.name)
			if err != nil {
				return err
			}
			// No arguments: pgx sends it by the simple protocol, which takes several statements.
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.version); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxAttempts bounds how often write runs a transaction that met a concurrent one and must start
// again.
const maxAttempts = 8

// errRetry is what a transaction returns when a concurrent one changed what it relied on (a
// manifest deleted under a tag being pushed): it runs again.
var errRetry = errors.New("a concurrent transaction changed the rows this one relied on")

// write runs fn in one transaction, again when PostgreSQL aborted it for a deadlock or a
// serialization failure, or fn asked for it with errRetry.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt == maxAttempts || !retryable(err) {
			return mapError(err)
		}
		// A little jitter, so that the same transactions do not meet again the same way.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*(1+rand.IntN(4))) * time.Millisecond):
		}
	}
}

// exec runs one statement, which is a transaction of its own; again, as write does, when
// PostgreSQL aborted it for a deadlock.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	for attempt := 1; ; attempt++ {
		tag, err := s.pool.Exec(ctx, sql, args...)
		if err == nil || attempt == maxAttempts || !retryable(err) {
			return tag, mapError(err)
		}
		select {
		case <-ctx.Done():
			return tag, ctx.Err()
		case <-time.After(time.Duration(attempt*(1+rand.IntN(4))) * time.Millisecond):
		}
	}
}

// queryRow is pool.QueryRow whose Scan maps errors as mapError does.
func (s *Store) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return mappedRow{s.pool.QueryRow(ctx, sql, args...)}
}

type mappedRow struct{ pgx.Row }

func (r mappedRow) Scan(dest ...any) error { return mapError(r.Row.Scan(dest...)) }

// query is pool.Query with its error mapped as mapError does.
func (s *Store) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	return rows, mapError(err)
}

// Ping reports whether the database answers; metadata.ErrUnavailable when it does not.
func (s *Store) Ping(ctx context.Context) error {
	return mapError(s.pool.Ping(ctx))
}

// SQLSTATE codes (PostgreSQL, Appendix A).
const (
	serializationFailure = "40001"
	deadlockDetected     = "40P01"
	foreignKeyViolation  = "23503"
	diskFull             = "53100"
	tooManyConnections   = "53300"
	adminShutdown        = "57P01"
	crashShutdown        = "57P02"
	cannotConnectNow     = "57P03"
)

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func retryable(err error) bool {
	switch sqlState(err) {
	case serializationFailure, deadlockDetected:
		return true
	}
	return errors.Is(err, errRetry)
}

// mapError marks a full disk as metadata.ErrFull, and a database that cannot be reached (down,
// restarting, out of connections, the network between) as metadata.ErrUnavailable: in both
// cases PostgreSQL rolled the transaction back, or never began it, so nothing of it was written.
func mapError(err error) error {
	switch {
	case err == nil, errors.Is(err, pgx.ErrNoRows):
		return err
	case sqlState(err) == diskFull:
		return fmt.Errorf("%w: %v", metadata.ErrFull, err)
	case unavailable(err):
		return fmt.Errorf("%w: %v", metadata.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller gave up: the database may be fine
	}
	if code := sqlState(err); code != "" {
		switch code {
		case tooManyConnections, adminShutdown, crashShutdown, cannotConnectNow:
			return true
		}
		return strings.HasPrefix(code, "08") // connection exceptions
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// now is the time the store records for "now": the replica's clock, as the times callers pass
// (UploadsBefore, RefreshToken expiries) are.
func now() time.Time { return time.Now() }

// ceilMicro rounds t up to timestamptz's microsecond, so that a stored time is never earlier than
// the one given.
func ceilMicro(t time.Time) time.Time {
	if r := t.Truncate(time.Microsecond); !r.Equal(t) {
		return r.Add(time.Microsecond)
	}
	return t
}
