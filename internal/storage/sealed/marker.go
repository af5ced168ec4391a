package sealed

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/berth/berth/internal/storage"
)

// markerKey is the record that says that the storage's blobs are sealed, and under which keys: a
// storage is never read with the wrong key, nor half sealed.
const markerKey = "encryption"

const (
	markerFormat = "berth sealed blobs v2"
	canaryText   = "berth encryption canary v1"
)

// ErrEncrypted reports storage that holds sealed blobs, opened without a key.
var ErrEncrypted = errors.New("the blob storage is encrypted")

// marker is the record markerKey.
type marker struct {
	Format string `json:"format"`
	// Keys are the IDs of every key that may wrap a data key in this storage; the first wraps new
	// ones. A key may be left out of the configuration only once it is no longer listed here.
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

func canaryAAD(key string) []byte { return []byte("encryption canary\x00" + key) }

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

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

func (c canary) check(keys Keys, aadOf func(string) []byte) error {
	wrong := fmt.Errorf("the configured key %s does not decrypt the storage's canary (record %s): it is not the key the blobs were encrypted with, though its ID is the same", c.Key, markerKey)
	dek, err := keys.UnwrapDEK(c.Key, c.Wrapped)
	if err != nil {
		return fmt.Errorf("%w: %v", wrong, err)
	}
	aead, err := gcm(dek)
	if err != nil || len(c.Sealed) < nonceSize {
		return wrong
	}
	pt, err := aead.Open(nil, c.Sealed[:nonceSize], c.Sealed[nonceSize:], aadOf(c.Key))
	if err != nil || !bytes.Equal(pt, []byte(canaryText)) {
		return wrong
	}
	return nil
}

// readMarker reads the marker and its version; storage.ErrNotFound when the storage is not sealed.
func readMarker(ctx context.Context, b storage.Records) (*marker, string, error) {
	var m marker
	ver, err := getJSON(ctx, b, markerKey, &m)
	if err != nil {
		return nil, "", err
	}
	if m.Format != markerFormat || len(m.Keys) == 0 || !slices.Contains(m.Keys, m.Canary.Key) {
		return nil, "", fmt.Errorf("record %s: not a berth encryption record of this version (format %q)", markerKey, m.Format)
	}
	return &m, ver, nil
}

// Refuse is the check of storage opened without encryption: it must not hold sealed blobs.
func Refuse(ctx context.Context, b storage.Records) error {
	m, _, err := readMarker(ctx, b)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w (%v): berth needs its key", ErrEncrypted, err)
	}
	return fmt.Errorf("%w: its record %s says that its blobs are encrypted under key %s; start berth with that key (encryption.key_file in the configuration, or --encryption-key-file)",
		ErrEncrypted, markerKey, strings.Join(m.Keys, " and "))
}

// BlobLister is an optional capability of backends that Open uses to refuse to seal storage that
// already holds blobs in plaintext.
type BlobLister interface {
	// HasBlobs reports whether the storage holds any blob or upload session.
	HasBlobs(ctx context.Context) (bool, error)
}

// Open returns the layer over b after the checks of the storage's marker. On storage that is not
// sealed yet it records keys' primary key (and refuses storage that holds blobs already, when b
// can tell); on sealed storage it checks that every key the marker lists is configured and that
// the canary decrypts, and records the primary key first (a new key configured with the old one
// as a previous key: new blobs go under the new key, and Rotate moves the others). It also
// returns the keys other than the primary that may still wrap data keys.
func Open(ctx context.Context, b Backend, keys Keys) (*Store, []string, error) {
	for {
		previous, err := open(ctx, b, keys)
		if errors.Is(err, storage.ErrRecordChanged) {
			continue // another replica starting at the same time wrote the marker first: read it
		}
		if err != nil {
			return nil, nil, err
		}
		return New(b, keys), previous, nil
	}
}

func open(ctx context.Context, b Backend, keys Keys) ([]string, error) {
	m, ver, err := readMarker(ctx, b)
	if errors.Is(err, storage.ErrNotFound) {
		if l, ok := b.(BlobLister); ok {
			has, err := l.HasBlobs(ctx)
			if err != nil {
				return nil, err
			}
			if has {
				return nil, errors.New("the blob storage already holds unencrypted blobs or uploads: encryption cannot be turned on for it in place. " +
					"Start an encrypted berth on empty storage and copy the images into it (berth copy), or run this one without encryption.key_file")
			}
		}
		c, err := newCanary(keys)
		if err != nil {
			return nil, err
		}
		_, err = putJSON(ctx, b, markerKey, &marker{Format: markerFormat, Keys: []string{keys.PrimaryID()}, Canary: c}, "")
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if err := checkKeys(m, keys); err != nil {
		return nil, err
	}
	want := primaryFirst(m.Keys, keys.PrimaryID())
	if !slices.Equal(want, m.Keys) {
		m.Keys = want
		if _, err := putJSON(ctx, b, markerKey, m, ver); err != nil {
			return nil, err
		}
	}
	return want[1:], nil
}

func primaryFirst(ids []string, primary string) []string {
	return append([]string{primary}, slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == primary })...)
}

// checkKeys checks that keys hold every key m lists, and the right one under the canary's ID.
func checkKeys(m *marker, keys Keys) error { return checkKeysWith(m, keys, canaryAAD) }

// checkKeysWith is checkKeys for a canary sealed with the additional data of aadOf.
func checkKeysWith(m *marker, keys Keys, aadOf func(string) []byte) error {
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
		return fmt.Errorf("the blob storage is encrypted under %s (recorded in its record %s), but %s is not configured (the configured key is %s). "+
			"Configure encryption.key_file with the key it was encrypted with; to move to a new key, set the new key as key_file, "+
			"the old one in previous_key_files, and run `berth encryption rotate`",
			need, markerKey, strings.Join(missing, ", "), keys.PrimaryID())
	}
	return m.Canary.check(keys, aadOf)
}

// RotateResult is what Rotate did.
type RotateResult struct {
	Rewrapped int      // data keys re-wrapped under the primary key
	Current   int      // data keys already under it
	Retired   []string // keys the storage no longer needs
}

// Rotate re-wraps every data key of the sealed storage b (of blobs and upload sessions) under
// keys' primary key: it rewrites records, never a blob. keys must hold every key the marker
// lists.
//
// It is safe to interrupt and run again. It first records the primary key as the one that wraps
// new data keys while still listing the old ones, so that the marker always names every key that
// may wrap a data key; each record is rewritten only if it did not change since it was read (a
// session that took a chunk meanwhile is read again); only when every record is done does the
// marker drop the old keys. So it may run while berth serves, provided every process that writes
// already has keys' primary key as its own (else one could wrap a new data key under a key the
// marker is about to drop): the command runs it with berth stopped.
func Rotate(ctx context.Context, b Backend, keys Keys) (RotateResult, error) {
	var res RotateResult
	m, ver, err := readMarker(ctx, b)
	if errors.Is(err, storage.ErrNotFound) {
		return res, errors.New("the blob storage is not encrypted (no encryption record)")
	}
	if err != nil {
		return res, err
	}
	if err := checkKeys(m, keys); err != nil {
		return res, err
	}
	want := primaryFirst(m.Keys, keys.PrimaryID())
	if !slices.Equal(want, m.Keys) {
		m.Keys = want
		if ver, err = putJSON(ctx, b, markerKey, m, ver); err != nil {
			return res, err
		}
	}
	var errs []error
	for _, prefix := range []string{"keys/", sessionPrefix} {
		names, err := b.ListRecords(ctx, prefix)
		if err != nil {
			return res, err
		}
		for _, name := range names {
			changed, err := rewrap(ctx, b, keys, name)
			switch {
			case errors.Is(err, storage.ErrNotFound): // deleted meanwhile
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			case changed:
				res.Rewrapped++
			default:
				res.Current++
			}
		}
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("rotation incomplete (the record %s still lists keys %s; fix the records below and run it again): %w",
			markerKey, strings.Join(want, ", "), errors.Join(errs...))
	}
	c, err := newCanary(keys)
	if err != nil {
		return res, err
	}
	if _, err := putJSON(ctx, b, markerKey, &marker{Format: markerFormat, Keys: []string{keys.PrimaryID()}, Canary: c}, ver); err != nil {
		return res, err
	}
	res.Retired = want[1:]
	return res, nil
}

// rewrap re-wraps the data key of the record name (a key record or a session record) under the
// primary key, leaving every other field as it is.
func rewrap(ctx context.Context, b storage.Records, keys Keys, name string) (bool, error) {
	for {
		raw, ver, err := b.GetRecord(ctx, name)
		if err != nil {
			return false, err
		}
		var fields map[string]json.RawMessage
		var wk wrappedKey
		if err := json.Unmarshal(raw, &fields); err != nil {
			return false, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if err := json.Unmarshal(raw, &wk); err != nil {
			return false, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if wk.Key == keys.PrimaryID() {
			return false, nil
		}
		if !keys.Has(wk.Key) {
			return false, fmt.Errorf("data key wrapped by key %s, which is not configured", wk.Key)
		}
		dek, err := keys.UnwrapDEK(wk.Key, wk.Wrapped)
		if err != nil {
			return false, err
		}
		id, wrapped, err := keys.WrapDEK(dek)
		clear(dek)
		if err != nil {
			return false, err
		}
		fields["key"], _ = json.Marshal(id)
		fields["wrapped_dek"], _ = json.Marshal(wrapped)
		out, err := json.Marshal(fields)
		if err != nil {
			return false, err
		}
		_, err = b.PutRecord(ctx, name, out, ver)
		if errors.Is(err, storage.ErrRecordChanged) {
			continue // a session took a chunk meanwhile, or the record went: read it again
		}
		return err == nil, err
	}
}

// KeyUsage counts the data keys of the storage b (blobs and upload sessions) by the key that
// wraps them; records that do not parse count under "unreadable". It also returns the keys the
// marker lists (nil when the storage is not sealed).
func KeyUsage(ctx context.Context, b storage.Records) (recorded []string, byKey map[string]int, err error) {
	m, _, err := readMarker(ctx, b)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	byKey = map[string]int{}
	for _, prefix := range []string{"keys/", sessionPrefix} {
		names, err := b.ListRecords(ctx, prefix)
		if err != nil {
			return m.Keys, nil, err
		}
		for _, name := range names {
			var wk wrappedKey
			if _, err := getJSON(ctx, b, name, &wk); errors.Is(err, storage.ErrNotFound) {
				continue
			} else if err != nil || wk.Key == "" {
				byKey["unreadable"]++
			} else {
				byKey[wk.Key]++
			}
		}
	}
	return m.Keys, byKey, nil
}
