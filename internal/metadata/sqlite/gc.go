package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/berth/berth/internal/oci"
)

// queue queues blob d for garbage collection's review as of at (the later of two times wins).
func queue(ctx context.Context, tx *sql.Tx, d string, at int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO gc_blob_review (digest, since) VALUES (?, ?)
		ON CONFLICT (digest) DO UPDATE SET since = max(since, excluded.since)`, d, at)
	return err
}

// BlobsToReview implements metadata.Store.
func (s *Store) BlobsToReview(ctx context.Context, before time.Time, after string, limit int) ([]oci.Digest, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT digest FROM gc_blob_review WHERE since < ? AND digest > ?
		ORDER BY digest LIMIT ?`, before.UnixNano(), after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []oci.Digest
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, oci.Digest(d))
	}
	return out, rows.Err()
}

// CollectBlob implements metadata.Store. The write transaction is the lock: nothing reserves,
// links or references the blob between the decision and the commit.
func (s *Store) CollectBlob(ctx context.Context, d oci.Digest, before time.Time, remove func(context.Context) error) (bool, int64, error) {
	var (
		garbage bool
		size    int64 = -1
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		garbage, size = false, -1
		var (
			sz       sql.NullInt64
			touched  int64
			since    sql.NullInt64
			needed   bool
			dontKeep = `DELETE FROM gc_blob_review WHERE digest = ? AND since < ?` // unless queued again since
		)
		err := tx.QueryRowContext(ctx, `SELECT b.size, b.touched, r.since,
			EXISTS (SELECT 1 FROM manifest_blobs m WHERE m.digest = b.digest)
			OR EXISTS (SELECT 1 FROM cache_expected c WHERE c.digest = b.digest)
			FROM blobs b LEFT JOIN gc_blob_review r ON r.digest = b.digest WHERE b.digest = ?`,
			d.String()).Scan(&sz, &touched, &since, &needed)
		if errors.Is(err, sql.ErrNoRows) { // no record: nothing to decide
			if remove != nil {
				_, err = tx.ExecContext(ctx, dontKeep, d.String(), before.UnixNano())
			}
			return err
		}
		if err != nil {
			return err
		}
		if needed {
			if remove != nil {
				_, err = tx.ExecContext(ctx, dontKeep, d.String(), before.UnixNano())
			}
			return err
		}
		cutoff := before.UnixNano()
		if touched >= cutoff || since.Valid && since.Int64 >= cutoff {
			return nil
		}
		garbage = true
		if sz.Valid {
			size = sz.Int64
		}
		if remove == nil {
			return nil
		}
		for _, q := range []string{`DELETE FROM gc_blob_review WHERE digest = ?`, `DELETE FROM repo_blobs WHERE digest = ?`, `DELETE FROM blobs WHERE digest = ?`} {
			if _, err := tx.ExecContext(ctx, q, d.String()); err != nil {
				return err
			}
		}
		return remove(ctx)
	})
	if err != nil {
		return false, -1, err
	}
	return garbage, size, nil
}
