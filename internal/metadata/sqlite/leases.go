package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Leases = (*Store)(nil)

// AcquireLease implements metadata.Leases. The upsert takes the row only if it is free, expired or
// already holder's; the write transaction makes that one step.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var got bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		t := now()
		res, err := tx.ExecContext(ctx, `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
			WHERE leases.holder = excluded.holder OR leases.expires <= ?`,
			name, holder, t+int64(ttl), t)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		got = n == 1
		return err
	})
	return got, err
}

// ReleaseLease implements metadata.Leases.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
		return err
	})
}

// Leased implements metadata.Leases.
func (s *Store) Leased(ctx context.Context, prefix string) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM leases WHERE substr(name, 1, length(?)) = ? AND expires > ?`, prefix, prefix, now())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
