package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Notifier = (*Store)(nil)

// Listen implements metadata.Notifier with PostgreSQL's LISTEN on a connection of its own, which
// it holds until ctx ends or the connection fails.
func (s *Store) Listen(ctx context.Context, channels []string, ready func(), got func(channel, payload string)) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return mapError(err)
	}
	// A connection that listened is not handed to anyone else: it is taken out of the pool, and
	// closed at the end.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	for _, c := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{c}.Sanitize()); err != nil {
			return mapError(err)
		}
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return mapError(err)
		}
		got(n.Channel, n.Payload)
	}
}

// Notify implements metadata.Notifier.
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if len(payload) > metadata.MaxPayload {
		return fmt.Errorf("notification of %d bytes on %s: at most %d", len(payload), channel, metadata.MaxPayload)
	}
	_, err := s.exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload)
	return err
}
