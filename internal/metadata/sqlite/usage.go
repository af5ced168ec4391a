package sqlite

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
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0), COALESCE(MAX(digest = ?), 0) FROM (
		SELECT b.digest, MAX(b.size) AS size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id
		WHERE r.name LIKE ? ESCAPE '\' GROUP BY b.digest)`, d.String(), metadata.LikePattern(pattern)).Scan(&used, &has)
	return used, has, err
}
