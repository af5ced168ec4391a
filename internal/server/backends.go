package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
)

// Metadata is what berth needs of a metadata backend: the registry's records, accounts and
// grants, and the leases of background jobs.
type Metadata interface {
	metadata.Store
	metadata.Accounts
	metadata.Leases
}

// OpenMetadata opens the metadata backend cfg configures: the SQLite database of the data
// directory (created when create is set, else it must exist), or PostgreSQL. It is the one place
// that opens one, for `berth serve` and the commands alike.
func OpenMetadata(ctx context.Context, cfg config.Config, create bool) (Metadata, error) {
	switch cfg.Metadata.Driver {
	case "postgres":
		return nil, fmt.Errorf("metadata.driver postgres: not in this build yet")
	default:
		db := filepath.Join(cfg.Data, "metadata.db")
		if !create {
			if _, err := os.Stat(db); err != nil {
				return nil, fmt.Errorf("no berth data directory at %s (use --data or --config): %w", cfg.Data, err)
			}
		}
		return sqlite.Open(ctx, db)
	}
}
