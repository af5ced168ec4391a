package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Leases = (*Store)(nil)

// AcquireLease implements metadata.Leases. The upsert takes the row only if it is free, expired or
// already holder's; one statement, so that of holders asking at once one gets it (the others wait
// for its insert and then find the row taken). Expiry is by the database's clock.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	tag, err := s.exec(ctx, `INSERT INTO leases (name, holder, expires)
		VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires <= now()`,
		name, holder, ttl.Microseconds())
	return tag.RowsAffected() == 1, err
}

// ReleaseLease implements metadata.Leases.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := s.exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
	return err
}

// Leased implements metadata.Leases.
func (s *Store) Leased(ctx context.Context, prefix string) ([]string, error) {
	rows, err := s.query(ctx, `SELECT name FROM leases WHERE starts_with(name, $1) AND expires > now()`, prefix)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return names, mapError(err)
}
