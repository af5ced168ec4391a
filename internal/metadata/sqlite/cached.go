package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// ListManifests implements metadata.Store.
func (s *Store) ListManifests(ctx context.Context, repo string) ([]metadata.ManifestEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT m.digest, m.media_type, m.content, m.created,
		COALESCE((SELECT group_concat(name, ' ') FROM (SELECT t.name FROM tags t
			WHERE t.repo_id = m.repo_id AND t.digest = m.digest ORDER BY t.name)), '')
		FROM repositories r JOIN manifests m ON m.repo_id = r.id WHERE r.name = ? ORDER BY m.digest`, repo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metadata.ManifestEntry
	for rows.Next() {
		var (
			e       metadata.ManifestEntry
			created int64
			tags    string
		)
		if err := rows.Scan(&e.Digest, &e.MediaType, &e.Content, &created, &tags); err != nil {
			return nil, err
		}
		e.Created = time.Unix(0, created)
		e.Tags = strings.Fields(tags)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ForgetExpected implements metadata.Store.
func (s *Store) ForgetExpected(ctx context.Context, repo string, ds []oci.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, repo, false)
		if errors.Is(err, metadata.ErrRepoUnknown) {
			return nil
		}
		if err != nil {
			return err
		}
		t := now()
		for _, d := range ds {
			for _, q := range []string{`DELETE FROM cache_expected WHERE repo_id = ? AND digest = ?`,
				`DELETE FROM repo_blobs WHERE repo_id = ? AND digest = ?`} {
				if _, err := tx.ExecContext(ctx, q, id, d.String()); err != nil {
					return err
				}
			}
			// Only a blob with a record can be collected; one that was never stored has none.
			if err := tx.QueryRowContext(ctx, `SELECT 1 FROM blobs WHERE digest = ?`, d.String()).Scan(new(int)); err == nil {
				if err := queue(ctx, tx, d.String(), t); err != nil {
					return err
				}
			} else if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		return nil
	})
}
