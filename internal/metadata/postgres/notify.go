package postgres

import (
	"context"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.AuthNotifier = (*Store)(nil)

// ListenAuth implements metadata.AuthNotifier with PostgreSQL's LISTEN on a connection of its
// own, which it holds until ctx ends or the connection fails.
func (s *Store) ListenAuth(ctx context.Context, changed func()) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return mapError(err)
	}
	// A connection that listened is not handed to anyone else: it is taken out of the pool, and
	// closed at the end.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN berth_auth"); err != nil {
		return mapError(err)
	}
	changed() // what changed while nobody listened
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return mapError(err)
		}
		changed()
	}
}
