package sealed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Keys wraps and unwraps data keys; *crypt.Keyring implements it.
type Keys interface {
	// PrimaryID is the ID of the key that wraps new data keys.
	PrimaryID() string
	// Has reports whether the key id is available to unwrap.
	Has(id string) bool
	// WrapDEK wraps a data key with the primary key and returns that key's ID.
	WrapDEK(dek []byte) (id string, wrapped []byte, err error)
	// UnwrapDEK unwraps a data key that the key id wrapped.
	UnwrapDEK(id string, wrapped []byte) ([]byte, error)
}

// wrappedKey is a data key as records keep it: wrapped, and by which key.
type wrappedKey struct {
	Key     string `json:"key"`
	Wrapped []byte `json:"wrapped_dek"`
}

// keyRecord is keys/<file id>: what reading the blob with that file id needs.
type keyRecord struct {
	wrappedKey
	Digest oci.Digest `json:"digest"`
	Size   int64      `json:"size"`
	Runs   []run      `json:"runs"`
}

func keyRecordKey(fileID [16]byte) string { return "keys/" + hex.EncodeToString(fileID[:]) }

// newDataKey makes a random data key and file id, and wraps the key under the primary key.
func newDataKey(keys Keys) (*segCipher, wrappedKey, error) {
	dek := make([]byte, dekSize)
	var fileID [16]byte
	if _, err := rand.Read(dek); err != nil {
		return nil, wrappedKey{}, err
	}
	if _, err := rand.Read(fileID[:]); err != nil {
		return nil, wrappedKey{}, err
	}
	id, wrapped, err := keys.WrapDEK(dek)
	if err != nil {
		return nil, wrappedKey{}, fmt.Errorf("wrapping a data key: %w", err)
	}
	c, err := newSegCipher(dek, fileID)
	clear(dek)
	return c, wrappedKey{Key: id, Wrapped: wrapped}, err
}

// cipher unwraps the data key and returns the cipher of the blob or session fileID.
func (w wrappedKey) cipher(keys Keys, fileID [16]byte) (*segCipher, error) {
	if !keys.Has(w.Key) {
		return nil, fmt.Errorf("data key wrapped by key %s, which is not configured (encryption.key_file or previous_key_files)", w.Key)
	}
	dek, err := keys.UnwrapDEK(w.Key, w.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrapping the data key with key %s: %w", w.Key, err)
	}
	defer clear(dek)
	return newSegCipher(dek, fileID)
}

// getJSON reads the record key into v and returns its version.
func getJSON(ctx context.Context, rec storage.Records, key string, v any) (string, error) {
	b, ver, err := rec.GetRecord(ctx, key)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return "", fmt.Errorf("record %s: %w: %v", key, ErrCorrupt, err)
	}
	return ver, nil
}

// putJSON writes v as the record key if its version is still ifVersion.
func putJSON(ctx context.Context, rec storage.Records, key string, v any, ifVersion string) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return rec.PutRecord(ctx, key, b, ifVersion)
}

// deleteRecord removes a record that may already be gone.
func deleteRecord(ctx context.Context, rec storage.Records, key string) error {
	if err := rec.DeleteRecord(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}
