package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/postgres"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/s3"
	"github.com/berth/berth/internal/storage/sealed"
)

// Metadata is what berth needs of a metadata backend: the registry's records, accounts and
// grants, the leases of background jobs, and the login throttles that replicas share.
type Metadata interface {
	metadata.Store
	metadata.Accounts
	metadata.Leases
	metadata.Throttles
	metadata.Dumper
}

// OpenMetadata opens the metadata backend cfg configures: the SQLite database of the data
// directory (created when create is set, else it must exist), or PostgreSQL. It is the one place
// that opens one, for `berth serve` and the commands alike.
func OpenMetadata(ctx context.Context, cfg config.Config, create bool) (Metadata, error) {
	switch cfg.Metadata.Driver {
	case "postgres":
		dsn, err := cfg.Metadata.DSN()
		if err != nil {
			return nil, err
		}
		return postgres.Open(ctx, dsn)
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

// OpenStorage opens the blob store cfg configures: the data directory or S3-compatible object
// storage, sealed under keys when there are any (sealBlobs).
func OpenStorage(ctx context.Context, cfg config.Config, keys *crypt.Keyring, log *slog.Logger) (storage.BlobStore, error) {
	b, err := openBackend(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	dataDir := ""
	if cfg.Storage.Driver != "s3" {
		dataDir = cfg.Data
	}
	return sealBlobs(ctx, b, dataDir, keys, cfg.Encryption.MemoryCache, log)
}

// openBackend opens the storage backend cfg configures, without the layers above it.
func openBackend(ctx context.Context, cfg config.Config, log *slog.Logger) (sealed.Backend, error) {
	if cfg.Storage.Driver != "s3" {
		return fs.New(cfg.Data)
	}
	c := cfg.Storage.S3
	access, secret, err := c.Credentials()
	if err != nil {
		return nil, err
	}
	sse := c.SSE
	if sse == "none" {
		sse = ""
	}
	st, err := s3.New(ctx, s3.Options{Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region, Endpoint: c.Endpoint,
		PathStyle: c.PathStyle, AccessKeyID: access, SecretAccessKey: secret,
		ServerSideEncryption: sse, KMSKeyID: c.KMSKeyID, PartSize: c.PartSize})
	if err != nil {
		return nil, fmt.Errorf("storage.s3: %w", err)
	}
	log.Info("blobs are in S3-compatible storage", "bucket", c.Bucket, "prefix", c.Prefix, "endpoint", c.Endpoint)
	return st, nil
}
