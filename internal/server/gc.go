package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/gc"
)

// CollectGarbage runs one garbage collection pass over the storage and metadata cfg configures
// (`berth gc`), with the given grace period; dry, it deletes nothing and reports what it would.
// It may run while berth serves the same data: the store decides each blob under a lock.
func CollectGarbage(ctx context.Context, cfg config.Config, grace time.Duration, dry bool, log *slog.Logger) (gc.Stats, error) {
	meta, err := OpenMetadata(ctx, cfg, false)
	if err != nil {
		return gc.Stats{}, err
	}
	defer meta.Close()
	keys, err := LoadKeyring(cfg.Encryption)
	if err != nil {
		return gc.Stats{}, err
	}
	cfg.Encryption.MemoryCache = 0
	blobs, err := OpenStorage(ctx, cfg, keys, log)
	if err != nil {
		return gc.Stats{}, err
	}
	return gc.New(meta, blobs, grace, log).Pass(ctx, dry)
}
