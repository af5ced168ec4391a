package fs

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// markerFile records in the data directory that its blobs are encrypted, and under which keys:
// a directory is never read with the wrong key, nor half encrypted.
const markerFile = "encryption.json"

const (
	markerFormat = "berth encrypted blobs v1"
	canaryText   = "berth encryption canary v1"
)

// ErrEncrypted reports a data directory that holds encrypted blobs, opened without a key.
var ErrEncrypted = errors.New("the data directory is encrypted")

// marker is encryption.json.
type marker struct {
	Format string `json:"format"`
	// Keys are the IDs of every key that may wrap a data key in this directory; the first wraps
	// new ones. A key may be left out of the configuration only once it is no longer listed here.
	Keys []string `json:"keys"`
	// Canary proves that a configured key is the one recorded, not just one with the same ID.
	Canary canary `json:"canary"`
}

// canary is a random data key wrapped by Key and, sealed with it, canaryText.
type canary struct {
	Key     string `json:"key"`
	Wrapped []byte `json:"wrapped_dek"`
	Sealed  []byte `json:"sealed"` // nonce || ciphertext || tag
}

func canaryAAD(key string) []byte { return []byte("encryption.json canary\x00" + key) }

func newCanary(keys Keys) (canary, error) {
	dek := make([]byte, dekSize)
	nonce := make([]byte, nonceSize)
	rand.Read(dek)
	rand.Read(nonce)
	id, wrapped, err := keys.WrapDEK(dek)
	if err != nil {
		return canary{}, fmt.Errorf("wrapping a data key: %w", err)
	}
	aead, err := gcm(dek)
	if err != nil {
		return canary{}, err
	}
	return canary{Key: id, Wrapped: wrapped, Sealed: aead.Seal(nonce, nonce, []byte(canaryText), canaryAAD(id))}, nil
}

func (c canary) check(keys Keys) error {
	wrong := fmt.Errorf("the configured key %s does not decrypt this data directory's canary (%s): it is not the key the directory was encrypted with, though its ID is the same", c.Key, markerFile)
	dek, err := keys.UnwrapDEK(c.Key, c.Wrapped)
	if err != nil {
		return fmt.Errorf("%w: %v", wrong, err)
	}
	aead, err := gcm(dek)
	if err != nil || len(c.Sealed) < nonceSize {
		return wrong
	}
	pt, err := aead.Open(nil, c.Sealed[:nonceSize], c.Sealed[nonceSize:], canaryAAD(c.Key))
	if err != nil || !bytes.Equal(pt, []byte(canaryText)) {
		return wrong
	}
	return nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// readMarker reads encryption.json; fs.ErrNotExist when the directory is not encrypted.
func readMarker(dir string) (*marker, error) {
	data, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		return nil, err
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, markerFile), err)
	}
	if m.Format != markerFormat || len(m.Keys) == 0 || !slices.Contains(m.Keys, m.Canary.Key) {
		return nil, fmt.Errorf("%s: not a berth encryption record of this version (format %q)", filepath.Join(dir, markerFile), m.Format)
	}
	return &m, nil
}

// writeMarker replaces encryption.json atomically and durably.
func writeMarker(dir string, m *marker) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, markerFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, markerFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", markerFile, err)
	}
	return syncDir(dir)
}

// refuseEncrypted is the check of an unencrypted store: its directory must not be encrypted.
func refuseEncrypted(dir string) error {
	m, err := readMarker(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w (%v): berth needs its key", ErrEncrypted, err)
	}
	return fmt.Errorf("%w: %s records that its blobs are encrypted under key %s; start berth with that key (encryption.key_file in the configuration, or --encryption-key-file)",
		ErrEncrypted, filepath.Join(dir, markerFile), strings.Join(m.Keys, " and "))
}

// openMarker is the check of an encrypted store. On a new directory it records the primary key;
// on an encrypted one it checks that every key the record lists is configured and that the
// canary decrypts, and records the primary key first (a new key configured with the old one as a
// previous key: new blobs go under the new key, and rotation moves the others). It returns the
// keys other than the primary that may still wrap data keys.
func openMarker(dir string, keys Keys) ([]string, error) {
	m, err := readMarker(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := refusePlain(dir); err != nil {
			return nil, err
		}
		c, err := newCanary(keys)
		if err != nil {
			return nil, err
		}
		return nil, writeMarker(dir, &marker{Format: markerFormat, Keys: []string{keys.PrimaryID()}, Canary: c})
	}
	if err != nil {
		return nil, err
	}
	if err := checkKeys(dir, m, keys); err != nil {
		return nil, err
	}
	want := append([]string{keys.PrimaryID()}, slices.DeleteFunc(slices.Clone(m.Keys), func(id string) bool { return id == keys.PrimaryID() })...)
	if !slices.Equal(want, m.Keys) {
		m.Keys = want
		if err := writeMarker(dir, m); err != nil {
			return nil, err
		}
	}
	return want[1:], nil
}

// checkKeys checks that keys hold every key m lists, and the right one under the canary's ID.
func checkKeys(dir string, m *marker, keys Keys) error {
	var missing []string
	for _, id := range m.Keys {
		if !keys.Has(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		need := fmt.Sprintf("key %s", m.Keys[0])
		if len(m.Keys) > 1 {
			need = fmt.Sprintf("keys %s (a rotation to %s has not finished)", strings.Join(m.Keys, ", "), m.Keys[0])
		}
		return fmt.Errorf("data directory %s is encrypted under %s (recorded in %s), but %s is not configured (the configured key is %s). "+
			"Configure encryption.key_file with the key it was encrypted with; to move to a new key, set the new key as key_file, "+
			"the old one in previous_key_files, and run `berth encryption rotate`",
			dir, need, markerFile, strings.Join(missing, ", "), keys.PrimaryID())
	}
	return m.Canary.check(keys)
}

// refusePlain is the check before a directory becomes encrypted: it must hold no unencrypted
// blob or upload session, which the encrypted store would take for corrupt files.
func refusePlain(dir string) error {
	found := ""
	filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		if entries, err := os.ReadDir(filepath.Join(dir, "uploads")); err == nil && len(entries) > 0 {
			found = filepath.Join(dir, "uploads", entries[0].Name())
		}
	}
	if found != "" {
		return fmt.Errorf("data directory %s already holds unencrypted blobs or uploads (%s): encryption cannot be turned on for it in place. "+
			"Start an encrypted berth on an empty data directory and copy the images into it (berth copy), or run this one without encryption.key_file",
			dir, found)
	}
	return nil
}
