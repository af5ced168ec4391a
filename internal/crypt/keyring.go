package crypt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Keyring is the primary KEK, which wraps every new data key, and previous KEKs, which only unwrap
// data keys they wrapped before a rotation. It is safe for concurrent use.
type Keyring struct {
	primary KeyWrapper
	byID    map[string]KeyWrapper
	ids     []string // primary first
}

// NewKeyring makes a keyring; two keys with one ID are an error (the same key given twice).
func NewKeyring(primary KeyWrapper, previous ...KeyWrapper) (*Keyring, error) {
	if primary == nil {
		return nil, errors.New("keyring: no primary key")
	}
	k := &Keyring{primary: primary, byID: map[string]KeyWrapper{}}
	for _, w := range append([]KeyWrapper{primary}, previous...) {
		id := w.ID()
		if id == "" || len(id) > 255 {
			return nil, fmt.Errorf("keyring: key ID %q: want 1 to 255 bytes", id)
		}
		if _, dup := k.byID[id]; dup {
			return nil, fmt.Errorf("keyring: key %s is given twice", id)
		}
		k.byID[id] = w
		k.ids = append(k.ids, id)
	}
	return k, nil
}

// LoadKeyring reads the primary key file and the previous ones.
func LoadKeyring(primary string, previous []string) (*Keyring, error) {
	p, err := LoadKeyFile(primary)
	if err != nil {
		return nil, err
	}
	var prev []KeyWrapper
	for _, path := range previous {
		k, err := LoadKeyFile(path)
		if err != nil {
			return nil, err
		}
		prev = append(prev, k)
	}
	return NewKeyring(p, prev...)
}

// Current reports whether sealed (from Seal) is sealed under the primary key; secrets sealed
// under a previous key should be sealed again before that key is retired.
func (k *Keyring) Current(sealed []byte) bool {
	id, err := SealedKeyID(sealed)
	return err == nil && id == k.PrimaryID()
}

// PrimaryID is the ID of the key that wraps new data keys.
func (k *Keyring) PrimaryID() string { return k.primary.ID() }

// IDs are the IDs of every key, the primary first.
func (k *Keyring) IDs() []string { return slices.Clone(k.ids) }

// Has reports whether the keyring holds the key id.
func (k *Keyring) Has(id string) bool { _, ok := k.byID[id]; return ok }

// WrapDEK wraps a data key with the primary key, and says which key that is.
func (k *Keyring) WrapDEK(dek []byte) (id string, wrapped []byte, err error) {
	wrapped, err = k.primary.Wrap(dek)
	return k.primary.ID(), wrapped, err
}

// UnwrapDEK unwraps a data key wrapped by the key id; ErrUnknownKey when the keyring lacks it.
func (k *Keyring) UnwrapDEK(id string, wrapped []byte) ([]byte, error) {
	w, ok := k.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, id)
	}
	dek, err := w.Unwrap(wrapped)
	if err != nil {
		return nil, err
	}
	if len(dek) != KeySize {
		return nil, fmt.Errorf("%s: %w: data key of %d bytes", id, ErrDecrypt, len(dek))
	}
	return dek, nil
}

// Sealed secrets (Seal) are an envelope:
//
//	"BKS1" | len(kek id) u8 | kek id | len(wrapped dek) u16 | wrapped dek | nonce (12) | AES-256-GCM ciphertext and tag
//
// The data key is random per secret; the ciphertext's additional data is sealDomain and the
// caller's aad, not the envelope's header, so that Rewrap can wrap the data key anew under another
// KEK without touching the ciphertext (a changed header yields a wrong data key, which fails).
const (
	sealMagic  = "BKS1"
	sealDomain = "berth sealed secret v1\x00"
)

// Seal encrypts plaintext under a new data key wrapped by the primary key, binding aad (which
// Open must be given again: say what the secret is and whose, so that a sealed value copied
// elsewhere does not open).
func (k *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	dek := NewDEK()
	id, wrapped, err := k.WrapDEK(dek)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) > 0xffff {
		return nil, fmt.Errorf("seal: wrapped key of %d bytes", len(wrapped))
	}
	out := make([]byte, 0, len(sealMagic)+1+len(id)+2+len(wrapped)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, sealMagic...)
	out = append(out, byte(len(id)))
	out = append(out, id...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(wrapped)))
	out = append(out, wrapped...)
	nonce := randBytes(aead.NonceSize())
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, sealAAD(aad)), nil
}

func sealAAD(aad []byte) []byte { return append([]byte(sealDomain), aad...) }

// envelope is a parsed sealed secret.
type envelope struct {
	id      string
	wrapped []byte
	rest    []byte // nonce || ciphertext || tag
}

func parseEnvelope(sealed []byte) (envelope, error) {
	bad := func(why string) (envelope, error) {
		return envelope{}, fmt.Errorf("sealed secret: %w: %s", ErrDecrypt, why)
	}
	b, ok := bytes.CutPrefix(sealed, []byte(sealMagic))
	if !ok {
		return bad("not a sealed secret")
	}
	if len(b) < 1 || len(b) < 1+int(b[0])+2 {
		return bad("truncated")
	}
	var e envelope
	e.id, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n+12+16 {
		return bad("truncated")
	}
	e.wrapped, e.rest = b[2:2+n], b[2+n:]
	return e, nil
}

// Open decrypts what Seal sealed, with any key of the keyring.
func (k *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	e, err := parseEnvelope(sealed)
	if err != nil {
		return nil, err
	}
	dek, err := k.UnwrapDEK(e.id, e.wrapped)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	pt, err := aead.Open(nil, e.rest[:ns], e.rest[ns:], sealAAD(aad))
	if err != nil {
		return nil, fmt.Errorf("sealed secret: %w", ErrDecrypt)
	}
	return pt, nil
}

// SealedKeyID says which KEK wraps a sealed secret's data key.
func SealedKeyID(sealed []byte) (string, error) {
	e, err := parseEnvelope(sealed)
	return e.id, err
}

// Rewrap re-wraps a sealed secret's data key under the primary key, leaving its ciphertext as it
// is (key rotation). A secret already under the primary key is returned unchanged.
func (k *Keyring) Rewrap(sealed []byte) ([]byte, error) {
	e, err := parseEnvelope(sealed)
	if err != nil {
		return nil, err
	}
	if e.id == k.PrimaryID() {
		return sealed, nil
	}
	dek, err := k.UnwrapDEK(e.id, e.wrapped)
	if err != nil {
		return nil, err
	}
	id, wrapped, err := k.WrapDEK(dek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) > 0xffff {
		return nil, fmt.Errorf("rewrap: wrapped key of %d bytes", len(wrapped))
	}
	out := make([]byte, 0, len(sealMagic)+1+len(id)+2+len(wrapped)+len(e.rest))
	out = append(out, sealMagic...)
	out = append(out, byte(len(id)))
	out = append(out, id...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(wrapped)))
	out = append(out, wrapped...)
	return append(out, e.rest...), nil
}
