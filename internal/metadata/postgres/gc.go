package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/oci"
)

// queue queues the blobs ds for garbage collection's review as of at (the later of two wins).
func queue(ctx context.Context, tx pgx.Tx, ds []string, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO gc_blob_review (digest, since)
		SELECT d, $2::timestamptz FROM unnest($1::text[]) AS p (d) ORDER BY d
		ON CONFLICT (digest) DO UPDATE SET since = greatest(gc_blob_review.since, excluded.since)`, ds, at)
	return err
}

// BlobsToReview implements metadata.Store.
func (s *Store) BlobsToReview(ctx context.Context, before time.Time, after string, limit int) ([]oci.Digest, error) {
	rows, err := s.query(ctx, `SELECT digest FROM gc_blob_review WHERE since < $1 AND digest > $2
		ORDER BY digest LIMIT $3`, before, after, limit)
	if err != nil {
		return nil, err
	}
	ds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapError(err)
	}
	out := make([]oci.Digest, len(ds))
	for i, d := range ds {
		out[i] = oci.Digest(d)
	}
	return out, nil
}

// CollectBlob implements metadata.Store. The blob's links and record are locked FOR UPDATE: a
// reservation or link (which update the record), and a manifest's push (which locks the links it
// relies on, and the record through its reference's foreign key) wait for the decision, or the
// decision waits for them and then sees them.
func (s *Store) CollectBlob(ctx context.Context, d oci.Digest, before time.Time, remove func(context.Context) error) (bool, int64, error) {
	var (
		garbage bool
		size    int64 = -1
	)
	err := s.write(ctx, func(tx pgx.Tx) error {
		garbage, size = false, -1
		// Out of the queue, unless queued again since the cutoff (released by a manifest's
		// delete that committed while this decided): that entry stays for a later pass.
		const dontKeep = `DELETE FROM gc_blob_review WHERE digest = $1 AND since < $2`
		var (
			sz      *int64
			touched time.Time
		)
		// Locks in the order a manifest's push takes them (its links, then the records through
		// its references' foreign key), so that the two wait for each other, not deadlock.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM repo_blobs WHERE digest = $1 ORDER BY repo_id FOR UPDATE`, d.String()); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT size, touched FROM blobs WHERE digest = $1 FOR UPDATE`, d.String()).Scan(&sz, &touched)
		if errors.Is(err, pgx.ErrNoRows) { // no record: nothing to decide
			if remove != nil {
				_, err = tx.Exec(ctx, dontKeep, d.String(), before)
			}
			return err
		}
		if err != nil {
			return err
		}
		// Read after the lock, so that what committed while it waited is seen.
		var (
			since  *time.Time
			needed bool
		)
		if err := tx.QueryRow(ctx, `SELECT (SELECT since FROM gc_blob_review WHERE digest = $1),
			EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = $1)
			OR EXISTS (SELECT 1 FROM cache_expected WHERE digest = $1)`, d.String()).Scan(&since, &needed); err != nil {
			return err
		}
		if needed {
			if remove != nil {
				_, err = tx.Exec(ctx, dontKeep, d.String(), before)
			}
			return err
		}
		if !touched.Before(before) || since != nil && !since.Before(before) {
			return nil
		}
		garbage = true
		if sz != nil {
			size = *sz
		}
		if remove == nil {
			return nil
		}
		for _, q := range []string{`DELETE FROM gc_blob_review WHERE digest = $1`, `DELETE FROM repo_blobs WHERE digest = $1`, `DELETE FROM blobs WHERE digest = $1`} {
			if _, err := tx.Exec(ctx, q, d.String()); err != nil {
				return err
			}
		}
		return remove(ctx)
	})
	if err != nil {
		return false, -1, mapError(err)
	}
	return garbage, size, nil
}
