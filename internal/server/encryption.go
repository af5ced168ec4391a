package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/memcache"
	"github.com/berth/berth/internal/storage/sealed"
)

// LoadKeyring reads the configured key files: the keyring that seals blobs and the registry's
// own secrets, or nil when encryption at rest is off.
func LoadKeyring(e config.Encryption) (*crypt.Keyring, error) {
	if !e.Enabled() {
		return nil, nil
	}
	return crypt.LoadKeyring(e.KeyFile, e.PreviousKeyFiles)
}

// sealBlobs puts the layers of encryption at rest over the backend b: without keys, b itself,
// after checking that it holds no sealed blobs; with keys, the sealed layer (internal/storage/
// sealed) under keys, with a memory cache of memoryCache bytes of decrypted blobs over it
// (encryption.memory_cache). dataDir, for the filesystem backend, is converted first if berth
// encrypted it before the sealed layer existed. Either way, the wrong choice for the storage is an
// error that says what to do: a key for storage that holds unencrypted blobs, none (or another)
// for encrypted storage.
func sealBlobs(ctx context.Context, b sealed.Backend, dataDir string, keys *crypt.Keyring, memoryCache int64, log *slog.Logger) (storage.BlobStore, error) {
	if keys == nil {
		if dataDir != "" {
			if _, err := os.Stat(filepath.Join(dataDir, "encryption.json")); err == nil {
				return nil, fmt.Errorf("%w: %s records that its blobs are encrypted; start berth with its key (encryption.key_file in the configuration, or --encryption-key-file)",
					sealed.ErrEncrypted, filepath.Join(dataDir, "encryption.json"))
			}
		}
		if err := sealed.Refuse(ctx, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	if dataDir != "" {
		n, err := sealed.ConvertV1(ctx, dataDir, b, keys, func(done int) error {
			if done%1000 == 0 {
				log.Info("converting the encrypted data directory: keys move out of the blob files", "blobs", done)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("converting the encrypted data directory %s (start again to resume): %w", dataDir, err)
		}
		if n > 0 {
			log.Info("converted the encrypted data directory: data keys are in records now, and rotation rewrites only those", "blobs", n)
		}
	}
	s, previous, err := sealed.Open(ctx, b, keys)
	if err != nil {
		return nil, err
	}
	var out storage.BlobStore = s
	var size, perBlob int64
	if memoryCache > 0 {
		mc, err := memcache.New(s, memoryCache)
		if err != nil {
			log.Warn("the memory cache of decrypted blobs is off: every download decrypts", "err", err)
		} else {
			out = mc
			size, perBlob = mc.Info()
		}
	}
	log.Info("blobs are encrypted at rest", "key", keys.PrimaryID(), "memory_cache", size, "memory_cache_per_blob", perBlob)
	if limit, what := memoryLimit(); size > 0 && limit > 0 && size > limit/2 {
		log.Warn("encryption.memory_cache is more than half of the memory berth may use; the cache's pages cannot be reclaimed (only swapped): lower it, or set 0 to turn it off",
			"memory_cache", size, what, limit)
	}
	if len(previous) > 0 {
		log.Warn("some data keys are still wrapped by previous keys, which must stay configured: run `berth encryption rotate` to re-wrap them under the current key",
			"key", keys.PrimaryID(), "previous", previous)
	}
	return out, nil
}

// memoryLimit is the memory berth may use: its cgroup's memory.max (cgroup v2) if there is one
// and it is lower, else the machine's memory; 0 if neither can be read. what names it.
func memoryLimit() (limit int64, what string) {
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
					limit, what = kb<<10, "mem_total"
				}
			}
		}
	}
	// "0::/path" is this process's cgroup v2; /sys/fs/cgroup is its root, or (in a container
	// without a cgroup namespace) the container's own cgroup.
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.Lines(string(b)) {
			path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::")
			if !ok {
				continue
			}
			for _, f := range []string{filepath.Join("/sys/fs/cgroup", path, "memory.max"), "/sys/fs/cgroup/memory.max"} {
				if m, err := os.ReadFile(f); err == nil {
					if n, err := strconv.ParseInt(strings.TrimSpace(string(m)), 10, 64); err == nil && (limit == 0 || n < limit) {
						limit, what = n, "cgroup_memory_max"
					}
					break
				}
			}
		}
	}
	return limit, what
}

// sealer is keys as what seals the registry's own secrets (token signing keys): nil when
// encryption at rest is off.
func sealer(keys *crypt.Keyring) auth.Sealer {
	if keys == nil {
		return nil
	}
	return keys
}

// LockDataDir takes the data directory's lock, as `berth serve` does, for commands that change
// the directory while no berth may serve it (encryption rotate).
func LockDataDir(dir string) (unlock func(), err error) { return lockDir(dir) }

// RotateKeys re-wraps every data key of the configured storage under keys' primary key (`berth
// encryption rotate`): records only, never a blob. A data directory that berth encrypted before
// the sealed layer is converted first.
func RotateKeys(ctx context.Context, cfg config.Config, keys *crypt.Keyring, log *slog.Logger) (sealed.RotateResult, error) {
	b, err := openBackend(ctx, cfg, log)
	if err != nil {
		return sealed.RotateResult{}, err
	}
	if cfg.Storage.Driver != "s3" {
		if _, err := sealed.ConvertV1(ctx, cfg.Data, b, keys, nil); err != nil {
			return sealed.RotateResult{}, fmt.Errorf("converting the encrypted data directory %s: %w", cfg.Data, err)
		}
	}
	return sealed.Rotate(ctx, b, keys)
}

// KeyUsage reports the keys the configured storage needs (nil: not encrypted) and how many data
// keys each wraps (`berth encryption status`); it needs no key.
func KeyUsage(ctx context.Context, cfg config.Config, log *slog.Logger) (recorded []string, byKey map[string]int, err error) {
	if cfg.Storage.Driver != "s3" {
		// Encrypted before the sealed layer, not converted yet: the keys are in encryption.json.
		if raw, err := os.ReadFile(filepath.Join(cfg.Data, "encryption.json")); err == nil {
			var m struct {
				Keys []string `json:"keys"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", filepath.Join(cfg.Data, "encryption.json"), err)
			}
			return m.Keys, nil, nil
		}
	}
	b, err := openBackend(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return sealed.KeyUsage(ctx, b)
}
