package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/migrate"
)

// Migrate moves the embedded installation in the data directory from (its blobs and SQLite
// database, encrypted under cfg's keys if it was) into the backends cfg configures, for
// `berth migrate`. It holds the directory's lock, so no berth serves it meanwhile.
func Migrate(ctx context.Context, from string, cfg config.Config, log *slog.Logger) (migrate.Report, error) {
	if cfg.Storage.Driver != "s3" || cfg.Metadata.Driver != "postgres" {
		return migrate.Report{}, errors.New("the target must be storage.driver s3 and metadata.driver postgres (the configuration berth's replicas share)")
	}
	if _, err := os.Stat(filepath.Join(from, "metadata.db")); err != nil {
		return migrate.Report{}, fmt.Errorf("no berth data directory at %s: %w", from, err)
	}
	unlock, err := lockDir(from)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("%s: %w (is a berth serving it? stop it first)", from, err)
	}
	defer unlock()
	keys, err := LoadKeyring(cfg.Encryption)
	if err != nil {
		return migrate.Report{}, err
	}
	src := cfg
	src.Data, src.Storage, src.Metadata = from, config.Storage{Driver: "fs"}, config.Metadata{Driver: "sqlite"}
	src.Encryption.MemoryCache = 0 // every blob is read once
	srcMeta, err := OpenMetadata(ctx, src, false)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("source: %w", err)
	}
	defer srcMeta.Close()
	srcBlobs, err := OpenStorage(ctx, src, keys, log)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("source: %w", err)
	}
	dstMeta, err := OpenMetadata(ctx, cfg, true)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("target: %w", err)
	}
	defer dstMeta.Close()
	dstBlobs, err := OpenStorage(ctx, cfg, keys, log)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("target: %w", err)
	}
	return migrate.Run(ctx, migrate.Side{Blobs: srcBlobs, Meta: srcMeta}, migrate.Side{Blobs: dstBlobs, Meta: dstMeta}, log)
}
