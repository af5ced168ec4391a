package postgres

import (
	"context"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Usage implements metadata.Store.
func (s *Store) Usage(ctx context.Context, pattern string, d oci.Digest) (int64, bool, error) {
	var (
		used int64
		has  bool
	)
	err := s.queryRow(ctx, `SELECT COALESCE(sum(size), 0)::bigint, COALESCE(bool_or(digest = $2), false) FROM (
		SELECT b.digest, max(b.size) AS size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id
		WHERE r.name LIKE $1 ESCAPE '\' GROUP BY b.digest) u`, metadata.LikePattern(pattern), d.String()).Scan(&used, &has)
	return used, has, err
}
