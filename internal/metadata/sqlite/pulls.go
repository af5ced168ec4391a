package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// RecordPulls implements metadata.Store.
func (s *Store) RecordPulls(ctx context.Context, ps []metadata.Pull) error {
	if len(ps) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, p := range ps {
			if _, err := tx.ExecContext(ctx, `INSERT INTO manifest_pulls (repo_id, digest, last_pulled, pulls)
				SELECT m.repo_id, m.digest, ?, ? FROM repositories r JOIN manifests m ON m.repo_id = r.id
				WHERE r.name = ? AND m.digest = ?
				ON CONFLICT (repo_id, digest) DO UPDATE SET last_pulled = max(last_pulled, excluded.last_pulled),
					pulls = pulls + excluded.pulls`, p.At.UnixNano(), p.Count, p.Repo, p.Digest.String()); err != nil {
				return err
			}
		}
		return nil
	})
}

// LastPulled implements metadata.Store.
func (s *Store) LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error) {
	out := map[oci.Digest]time.Time{}
	err := s.pulls(ctx, repo, func(d string, last, _ int64) { out[oci.Digest(d)] = time.Unix(0, last) })
	return out, err
}

// PullCounts implements metadata.Store.
func (s *Store) PullCounts(ctx context.Context, repo string) (map[oci.Digest]int64, error) {
	out := map[oci.Digest]int64{}
	err := s.pulls(ctx, repo, func(d string, _, n int64) { out[oci.Digest(d)] = n })
	return out, err
}

func (s *Store) pulls(ctx context.Context, repo string, fn func(d string, last, n int64)) error {
	rows, err := s.r.QueryContext(ctx, `SELECT p.digest, p.last_pulled, p.pulls FROM repositories r
		JOIN manifest_pulls p ON p.repo_id = r.id WHERE r.name = ?`, repo)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			d       string
			last, n int64
		)
		if err := rows.Scan(&d, &last, &n); err != nil {
			return err
		}
		fn(d, last, n)
	}
	return rows.Err()
}
