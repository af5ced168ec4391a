package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
)

// LoadKeyring reads the configured key files: the keyring that seals blobs and the registry's
// own secrets, or nil when encryption at rest is off.
func LoadKeyring(e config.Encryption) (*crypt.Keyring, error) {
	if !e.Enabled() {
		return nil, nil
	}
	return crypt.LoadKeyring(e.KeyFile, e.PreviousKeyFiles)
}

// openBlobs opens the blob store of the data directory, encrypted under keys when there are
// any, with a memory cache of memoryCache bytes of decrypted blobs (encryption.memory_cache).
// Either way, the wrong choice for the directory is an error that says what to do: a key for a
// directory that holds unencrypted blobs, none (or another) for an encrypted one.
func openBlobs(data string, keys *crypt.Keyring, memoryCache int64, log *slog.Logger) (storage.BlobStore, error) {
	if keys == nil {
		return fs.New(data)
	}
	s, err := fs.NewEncrypted(data, keys, fs.MemoryCache(memoryCache))
	if err != nil {
		return nil, err
	}
	size, perBlob, cacheErr := s.MemoryCacheInfo()
	log.Info("blobs are encrypted at rest", "key", keys.PrimaryID(), "memory_cache", size, "memory_cache_per_blob", perBlob)
	if cacheErr != nil {
		log.Warn("the memory cache of decrypted blobs is off: every download decrypts", "err", cacheErr)
	}
	if limit, what := memoryLimit(); size > 0 && limit > 0 && size > limit/2 {
		log.Warn("encryption.memory_cache is more than half of the memory berth may use; the cache's pages cannot be reclaimed (only swapped): lower it, or set 0 to turn it off",
			"memory_cache", size, what, limit)
	}
	if prev := s.PreviousKeysInUse(); len(prev) > 0 {
		log.Warn("some data keys are still wrapped by previous keys, which must stay configured: stop berth and run `berth encryption rotate` to re-wrap them under the current key",
			"key", keys.PrimaryID(), "previous", prev)
	}
	return s, nil
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
