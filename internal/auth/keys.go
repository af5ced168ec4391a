package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// Sealer encrypts the registry's own secrets under the key-encryption key (package crypt's
// Keyring implements it). Without one, secrets are stored as they are.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// keysSetting is where the token signing keys live in the metadata store, so that every replica
// of a registry signs and verifies with the same keys.
const keysSetting = "token_signing_keys"

// signingKey is an ECDSA P-256 key that signs tokens (ES256). A retired key still verifies
// tokens until RetireAfter, so that rotation does not cut off tokens already handed out.
type signingKey struct {
	ID          string
	Created     time.Time
	RetireAfter time.Time // zero: the key is current
	priv        *ecdsa.PrivateKey
}

type storedKey struct {
	ID          string    `json:"kid"`
	Created     time.Time `json:"created"`
	RetireAfter time.Time `json:"retire_after,omitzero"`
	Private     []byte    `json:"private"` // PKCS #8, sealed when Sealed
	Sealed      bool      `json:"sealed"`
}

func keyAAD(kid string) []byte { return []byte("berth token signing key " + kid) }

func newSigningKey() (signingKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return signingKey{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return signingKey{}, err
	}
	sum := sha256.Sum256(der)
	return signingKey{ID: hex.EncodeToString(sum[:12]), Created: time.Now().UTC(), priv: priv}, nil
}

func encodeKeys(keys []signingKey, sealer Sealer) ([]byte, error) {
	out := make([]storedKey, 0, len(keys))
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.priv)
		if err != nil {
			return nil, err
		}
		sk := storedKey{ID: k.ID, Created: k.Created, RetireAfter: k.RetireAfter, Private: der}
		if sealer != nil {
			if sk.Private, err = sealer.Seal(der, keyAAD(k.ID)); err != nil {
				return nil, err
			}
			sk.Sealed = true
		}
		out = append(out, sk)
	}
	return json.Marshal(out)
}

func decodeKeys(b []byte, sealer Sealer) (keys []signingKey, resealed bool, err error) {
	var stored []storedKey
	if err := json.Unmarshal(b, &stored); err != nil {
		return nil, false, fmt.Errorf("token signing keys: %w", err)
	}
	for _, sk := range stored {
		der := sk.Private
		if sk.Sealed {
			if sealer == nil {
				return nil, false, fmt.Errorf("token signing key %s is sealed with an encryption key, and none is configured (encryption.key_file)", sk.ID)
			}
			if der, err = sealer.Open(sk.Private, keyAAD(sk.ID)); err != nil {
				return nil, false, fmt.Errorf("token signing key %s: %w", sk.ID, err)
			}
		} else if sealer != nil {
			resealed = true
		}
		if c, ok := sealer.(interface{ Current(sealed []byte) bool }); ok && sk.Sealed && !c.Current(sk.Private) {
			resealed = true // sealed under a key that is being rotated out
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, false, fmt.Errorf("token signing key %s: %w", sk.ID, err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, false, fmt.Errorf("token signing key %s is not an ECDSA key", sk.ID)
		}
		keys = append(keys, signingKey{ID: sk.ID, Created: sk.Created, RetireAfter: sk.RetireAfter, priv: ec})
	}
	return keys, resealed, nil
}

// loadKeys reads the signing keys, creating the first one on a new registry. Keys stored before
// an encryption key was configured are sealed now.
func loadKeys(ctx context.Context, acc metadata.Accounts, sealer Sealer) ([]signingKey, error) {
	b, err := acc.Setting(ctx, keysSetting)
	if errors.Is(err, metadata.ErrNotFound) {
		k, err := newSigningKey()
		if err != nil {
			return nil, err
		}
		enc, err := encodeKeys([]signingKey{k}, sealer)
		if err != nil {
			return nil, err
		}
		if err := acc.CreateSetting(ctx, keysSetting, enc); err != nil && !errors.Is(err, metadata.ErrExists) {
			return nil, err
		}
		b, err = acc.Setting(ctx, keysSetting) // whoever created it first wins
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	keys, resealed, err := decodeKeys(b, sealer)
	if err != nil {
		return nil, err
	}
	if resealed {
		enc, err := encodeKeys(keys, sealer)
		if err != nil {
			return nil, err
		}
		if err := acc.SetSetting(ctx, keysSetting, enc); err != nil {
			return nil, err
		}
	}
	if current(keys) == nil {
		return nil, fmt.Errorf("no current token signing key (run berth keys rotate)")
	}
	return keys, nil
}

// ResealKeys seals the token signing keys and the console's session key under the sealer's
// current key (after an encryption key rotation), or for the first time (when encryption is
// turned on).
func ResealKeys(ctx context.Context, acc metadata.Accounts, sealer Sealer) error {
	if _, err := loadKeys(ctx, acc, sealer); err != nil {
		return err
	}
	return resealSessionKey(ctx, acc, sealer)
}

// current is the newest key that is not retired.
func current(keys []signingKey) *signingKey {
	var c *signingKey
	for i := range keys {
		if keys[i].RetireAfter.IsZero() && (c == nil || keys[i].Created.After(c.Created)) {
			c = &keys[i]
		}
	}
	return c
}

// KeyInfo describes a token signing key.
type KeyInfo struct {
	ID          string
	Created     time.Time
	RetireAfter time.Time
}

// ListKeys lists the token signing keys, newest first.
func ListKeys(ctx context.Context, acc metadata.Accounts, sealer Sealer) ([]KeyInfo, error) {
	keys, err := loadKeys(ctx, acc, sealer)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(keys))
	for _, k := range keys {
		out = append(out, KeyInfo{k.ID, k.Created, k.RetireAfter})
	}
	slices.SortFunc(out, func(a, b KeyInfo) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// RotateKeys makes a new signing key current. The previous ones keep verifying tokens for
// overlap (at least a token's lifetime), and keys retired longer ago are dropped. Running
// registries pick the new key up within a minute, or at once when they see a token it signed.
func RotateKeys(ctx context.Context, acc metadata.Accounts, sealer Sealer, overlap time.Duration) (KeyInfo, error) {
	keys, err := loadKeys(ctx, acc, sealer)
	if err != nil {
		return KeyInfo{}, err
	}
	now := time.Now().UTC()
	keys = slices.DeleteFunc(keys, func(k signingKey) bool { return !k.RetireAfter.IsZero() && k.RetireAfter.Before(now) })
	for i := range keys {
		if keys[i].RetireAfter.IsZero() {
			keys[i].RetireAfter = now.Add(overlap)
		}
	}
	k, err := newSigningKey()
	if err != nil {
		return KeyInfo{}, err
	}
	keys = append(keys, k)
	enc, err := encodeKeys(keys, sealer)
	if err != nil {
		return KeyInfo{}, err
	}
	return KeyInfo{k.ID, k.Created, k.RetireAfter}, acc.SetSetting(ctx, keysSetting, enc)
}
