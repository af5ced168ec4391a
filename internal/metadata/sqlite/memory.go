package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"modernc.org/sqlite"
)

// ConnMemory is what one SQLite connection holds in memory outside the Go heap (modernc's libc
// allocates it), in bytes.
type ConnMemory struct {
	Cache  int `json:"cache"`  // page cache (bounded by PRAGMA cache_size)
	Schema int `json:"schema"` // the parsed schema
	Stmt   int `json:"stmt"`   // prepared statements
}

// Memory is the store's SQLite memory, for diagnostics (/debug/memory).
type Memory struct {
	Writer ConnMemory `json:"writer"`
	// Reader is one idle reader connection; every open reader holds about as much once warm.
	Reader      ConnMemory `json:"reader"`
	OpenReaders int        `json:"open_readers"`
}

// Memory reports what the writer and one reader hold. It waits for each connection as a query
// would; ctx bounds the wait.
func (s *Store) Memory(ctx context.Context) (Memory, error) {
	var m Memory
	w, err1 := connMemory(ctx, s.w)
	r, err2 := connMemory(ctx, s.r)
	m.Writer, m.Reader, m.OpenReaders = w, r, s.r.Stats().OpenConnections
	return m, errors.Join(err1, err2)
}

func connMemory(ctx context.Context, db *sql.DB) (ConnMemory, error) {
	var m ConnMemory
	c, err := db.Conn(ctx)
	if err != nil {
		return m, err
	}
	defer c.Close()
	err = c.Raw(func(dc any) error {
		st, ok := dc.(sqlite.DBStatus)
		if !ok {
			return errors.New("sqlite driver without DBStatus")
		}
		for _, f := range []struct {
			op  sqlite.DBStatusOp
			dst *int
		}{{sqlite.DBStatusCacheUsed, &m.Cache}, {sqlite.DBStatusSchemaUsed, &m.Schema}, {sqlite.DBStatusStmtUsed, &m.Stmt}} {
			cur, _, err := st.Status(f.op, false)
			if err != nil {
				return err
			}
			*f.dst = cur
		}
		return nil
	})
	return m, err
}
