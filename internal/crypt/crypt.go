// Package crypt holds berth's key-encryption keys (KEKs): key files, and the small KeyWrapper
// interface through which an external KMS can stand in for one. A Keyring is the primary key,
// which wraps every new data key, and the previous keys, which only unwrap what they wrapped
// before a rotation. Data keys (DEKs) are random per blob (internal/storage/sealed) or per sealed
// secret (Keyring.Seal); only their wrapped form is ever stored.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of every key: KEKs and DEKs are AES-256 keys.
const KeySize = 32

// ErrUnknownKey reports data wrapped by a key the keyring does not hold.
var ErrUnknownKey = errors.New("key not in the keyring")

// ErrDecrypt reports a wrapped key or a sealed secret that does not decrypt: the wrong key, or
// altered bytes.
var ErrDecrypt = errors.New("decryption failed (wrong key or altered data)")

// KeyWrapper is a key-encryption key: a key file (FileKey), or a KMS key behind this interface.
// Implementations must be safe for concurrent use. A KMS implementation should cache unwrapped
// keys: the blob store unwraps a data key every time it opens a blob.
type KeyWrapper interface {
	// ID names the key; it is stored next to everything the key wraps. It must be stable for the
	// same key, different for different keys, and reveal nothing about the key (at most 255 bytes).
	ID() string
	// Wrap encrypts (and authenticates) a data key.
	Wrap(dek []byte) ([]byte, error)
	// Unwrap reverses Wrap; it fails (never returns other bytes) for the wrong key or altered input.
	Unwrap(wrapped []byte) ([]byte, error)
}

// FileKey is a KEK kept in a key file: 32 random bytes as 64 hex characters and a newline.
type FileKey struct {
	id   string
	aead cipher.AEAD
}

var _ KeyWrapper = (*FileKey)(nil)

// NewFileKey makes a KeyWrapper of a 32-byte key. Its ID is derived from the key by a one-way
// hash, so the same key always has the same ID and a different key another one.
func NewFileKey(key []byte) (*FileKey, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key: %d bytes, want %d", len(key), KeySize)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("berth key id v1\x00"), key...))
	return &FileKey{id: "file:" + hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// ID implements KeyWrapper.
func (k *FileKey) ID() string { return k.id }

// wrapAAD binds a wrapped data key to the key that wrapped it and to its purpose.
func (k *FileKey) wrapAAD() []byte { return []byte("berth wrapped dek v1\x00" + k.id) }

// Wrap implements KeyWrapper: AES-256-GCM under the key file's key, random nonce; the result is
// nonce || ciphertext || tag (60 bytes for a 32-byte data key).
func (k *FileKey) Wrap(dek []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(dek)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, dek, k.wrapAAD()), nil
}

// Unwrap implements KeyWrapper.
func (k *FileKey) Unwrap(wrapped []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(wrapped) < ns+k.aead.Overhead() {
		return nil, fmt.Errorf("%s: %w: wrapped key too short", k.id, ErrDecrypt)
	}
	dek, err := k.aead.Open(nil, wrapped[:ns], wrapped[ns:], k.wrapAAD())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.id, ErrDecrypt)
	}
	return dek, nil
}

// ParseKey reads a key file's content: 64 hex characters, surrounding white space allowed.
func ParseKey(data []byte) ([]byte, error) {
	s := strings.TrimSpace(string(data))
	if len(s) != 2*KeySize {
		return nil, fmt.Errorf("want %d hex characters (a key made by `berth encryption keygen`), found %d characters", 2*KeySize, len(s))
	}
	key, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex: %v", err)
	}
	return key, nil
}

// LoadKeyFile reads a key file.
func LoadKeyFile(path string) (*FileKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return NewFileKey(key)
}

// GenerateKeyFile writes a new random key to path (mode 0600, fsynced) and returns it. It never
// overwrites: an existing file is an error, since replacing a key makes what it wrapped unreadable.
func GenerateKeyFile(path string) (*FileKey, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s already exists: a key file is never overwritten (what it encrypted would be lost)", path)
	}
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return NewFileKey(key)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// NewDEK returns a new random data key.
func NewDEK() []byte { return randBytes(KeySize) }

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return b
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
