package postgres

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// RecordPulls implements metadata.Store. Rows are written in key order, so that two replicas'
// batches lock them in the same order.
func (s *Store) RecordPulls(ctx context.Context, ps []metadata.Pull) error {
	if len(ps) == 0 {
		return nil
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b metadata.Pull) int {
		return strings.Compare(a.Repo+"@"+string(a.Digest), b.Repo+"@"+string(b.Digest))
	})
	repos, ds, ats, ns := make([]string, len(ps)), make([]string, len(ps)), make([]time.Time, len(ps)), make([]int64, len(ps))
	for i, p := range ps {
		repos[i], ds[i], ats[i], ns[i] = p.Repo, p.Digest.String(), p.At, p.Count
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO manifest_pulls (repo_id, digest, last_pulled, pulls)
			SELECT m.repo_id, m.digest, max(p.at), sum(p.n)::bigint
			FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[]) AS p (repo, d, at, n)
			JOIN repositories r ON r.name = p.repo JOIN manifests m ON m.repo_id = r.id AND m.digest = p.d
			GROUP BY m.repo_id, m.digest ORDER BY m.repo_id, m.digest
			ON CONFLICT (repo_id, digest) DO UPDATE SET last_pulled = greatest(manifest_pulls.last_pulled, excluded.last_pulled),
				pulls = manifest_pulls.pulls + excluded.pulls`, repos, ds, ats, ns)
		return err
	})
}

// LastPulled implements metadata.Store.
func (s *Store) LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error) {
	out := map[oci.Digest]time.Time{}
	err := s.pulls(ctx, repo, func(d string, last time.Time, _ int64) { out[oci.Digest(d)] = last })
	return out, err
}

// PullCounts implements metadata.Store.
func (s *Store) PullCounts(ctx context.Context, repo string) (map[oci.Digest]int64, error) {
	out := map[oci.Digest]int64{}
	err := s.pulls(ctx, repo, func(d string, _ time.Time, n int64) { out[oci.Digest(d)] = n })
	return out, err
}

func (s *Store) pulls(ctx context.Context, repo string, fn func(d string, last time.Time, n int64)) error {
	rows, err := s.query(ctx, `SELECT p.digest, p.last_pulled, p.pulls FROM repositories r
		JOIN manifest_pulls p ON p.repo_id = r.id WHERE r.name = $1`, repo)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			d    string
			last time.Time
			n    int64
		)
		if err := rows.Scan(&d, &last, &n); err != nil {
			return mapError(err)
		}
		fn(d, last, n)
	}
	return mapError(rows.Err())
}
