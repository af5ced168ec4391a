package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// ListManifests implements metadata.Store.
func (s *Store) ListManifests(ctx context.Context, repo string) ([]metadata.ManifestEntry, error) {
	rows, err := s.query(ctx, `SELECT m.digest, m.media_type, m.content, m.created,
		COALESCE((SELECT array_agg(t.name ORDER BY t.name) FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest), '{}')
		FROM repositories r JOIN manifests m ON m.repo_id = r.id WHERE r.name = $1 ORDER BY m.digest`, repo)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (metadata.ManifestEntry, error) {
		var (
			e       metadata.ManifestEntry
			d       string
			created time.Time
		)
		err := row.Scan(&d, &e.MediaType, &e.Content, &created, &e.Tags)
		e.Digest, e.Created = oci.Digest(d), created
		if len(e.Tags) == 0 {
			e.Tags = nil
		}
		return e, err
	})
	return out, mapError(err)
}

// ForgetExpected implements metadata.Store.
func (s *Store) ForgetExpected(ctx context.Context, repo string, ds []oci.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		list := digests(ds)
		if _, err := tx.Exec(ctx, `DELETE FROM cache_expected e USING repositories r
			WHERE e.repo_id = r.id AND r.name = $1 AND e.digest = ANY($2)`, repo, list); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM repo_blobs b USING repositories r
			WHERE b.repo_id = r.id AND r.name = $1 AND b.digest = ANY($2)`, repo, list); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO gc_blob_review (digest, since)
			SELECT digest, $2::timestamptz FROM blobs WHERE digest = ANY($1) ORDER BY digest
			ON CONFLICT (digest) DO UPDATE SET since = greatest(gc_blob_review.since, excluded.since)`, list, now())
		return err
	})
}
