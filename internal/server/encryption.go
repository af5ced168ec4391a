package server

import (
	"log/slog"

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
// any. Either way, the wrong choice for the directory is an error that says what to do: a key
// for a directory that holds unencrypted blobs, none (or another) for an encrypted one.
func openBlobs(data string, keys *crypt.Keyring, log *slog.Logger) (storage.BlobStore, error) {
	if keys == nil {
		return fs.New(data)
	}
	s, err := fs.NewEncrypted(data, keys)
	if err != nil {
		return nil, err
	}
	log.Info("blobs are encrypted at rest", "key", keys.PrimaryID())
	if prev := s.PreviousKeysInUse(); len(prev) > 0 {
		log.Warn("some data keys are still wrapped by previous keys, which must stay configured: stop berth and run `berth encryption rotate` to re-wrap them under the current key",
			"key", keys.PrimaryID(), "previous", prev)
	}
	return s, nil
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
