package crypt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKey(t *testing.T) *FileKey {
	t.Helper()
	k, err := NewFileKey(NewDEK())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestFileKey(t *testing.T) {
	raw := NewDEK()
	k, err := NewFileKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	same, _ := NewFileKey(raw)
	other := mustKey(t)
	if k.ID() != same.ID() || k.ID() == other.ID() || !strings.HasPrefix(k.ID(), "file:") {
		t.Errorf("IDs: %s, same key %s, other key %s", k.ID(), same.ID(), other.ID())
	}
	if strings.Contains(k.ID(), hex.EncodeToString(raw)[:8]) {
		t.Errorf("the ID %s shows the key", k.ID())
	}
	dek := NewDEK()
	w, err := k.Wrap(dek)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w, dek) {
		t.Fatal("the wrapped key holds the key")
	}
	if got, err := same.Unwrap(w); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap = %x, %v", got, err)
	}
	if _, err := other.Unwrap(w); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Unwrap with another key: %v", err)
	}
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 1
		if _, err := k.Unwrap(bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Unwrap of a wrapped key changed at byte %d: %v", i, err)
		}
	}
	if _, err := k.Unwrap(w[:10]); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Unwrap of a short input: %v", err)
	}
	if _, err := NewFileKey(raw[:16]); err == nil {
		t.Error("a 16-byte key was taken")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	k, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if len(data) != 65 || data[64] != '\n' {
		t.Errorf("key file content %q: want 64 hex characters and a newline", data)
	}
	loaded, err := LoadKeyFile(path)
	if err != nil || loaded.ID() != k.ID() {
		t.Fatalf("LoadKeyFile = %v, %v; want ID %s", loaded, err, k.ID())
	}
	if _, err := GenerateKeyFile(path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("GenerateKeyFile over an existing file: %v", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Error("the existing key file changed")
	}
	for _, c := range []struct{ name, content, want string }{
		{"short", "abcd\n", "64 hex"},
		{"not hex", strings.Repeat("zz", 32), "not hex"},
		{"empty", "", "64 hex"},
	} {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, []byte(c.content), 0o600)
		if _, err := LoadKeyFile(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s key file: %v", c.name, err)
		}
	}
	spaced := filepath.Join(dir, "spaced")
	os.WriteFile(spaced, []byte("  "+strings.TrimSpace(string(data))+"\r\n\n"), 0o600)
	if k2, err := LoadKeyFile(spaced); err != nil || k2.ID() != k.ID() {
		t.Errorf("key file with white space around: %v", err)
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing key file loaded")
	}
}

// kms is a KeyWrapper as an external KMS would be: opaque wrapped keys of another length.
type kms struct {
	id  string
	key *FileKey
}

func (k kms) ID() string { return k.id }
func (k kms) Wrap(dek []byte) ([]byte, error) {
	w, err := k.key.Wrap(dek)
	return append([]byte("kms-envelope:"), w...), err
}
func (k kms) Unwrap(w []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(w, []byte("kms-envelope:"))
	if !ok {
		return nil, ErrDecrypt
	}
	return k.key.Unwrap(rest)
}

func TestKeyring(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	if _, err := NewKeyring(k1, k1); err == nil {
		t.Error("a keyring with one key twice")
	}
	if _, err := NewKeyring(nil); err == nil {
		t.Error("a keyring without a primary key")
	}
	old, _ := NewKeyring(k1)
	dek := NewDEK()
	id, w, err := old.WrapDEK(dek)
	if err != nil || id != k1.ID() {
		t.Fatalf("WrapDEK = %s, %v", id, err)
	}
	rotated, _ := NewKeyring(k2, k1)
	if rotated.PrimaryID() != k2.ID() || !rotated.Has(k1.ID()) || rotated.Has("file:none") || len(rotated.IDs()) != 2 {
		t.Errorf("keyring: primary %s, IDs %v", rotated.PrimaryID(), rotated.IDs())
	}
	if got, err := rotated.UnwrapDEK(id, w); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("UnwrapDEK by a previous key: %v", err)
	}
	if id, _, _ := rotated.WrapDEK(dek); id != k2.ID() {
		t.Errorf("new data keys wrapped by %s, not the primary", id)
	}
	only2, _ := NewKeyring(k2)
	if _, err := only2.UnwrapDEK(id, w); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("UnwrapDEK without the key: %v", err)
	}
	// A KMS stands in for a key file.
	ext, err := NewKeyring(kms{id: "kms:alias/berth", key: k1}, k2)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := ext.Seal([]byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ext.Open(sealed, nil); err != nil || string(got) != "secret" {
		t.Errorf("Seal/Open through a KMS: %q, %v", got, err)
	}
}

func TestSealOpen(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	ring1, _ := NewKeyring(k1)
	secret := []byte("-----BEGIN PRIVATE KEY----- token signing key")
	aad := []byte("token signing key abc")
	sealed, err := ring1.Seal(secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret[:16]) {
		t.Fatal("the sealed secret shows the plaintext")
	}
	if again, _ := ring1.Seal(secret, aad); bytes.Equal(again, sealed) {
		t.Error("sealing twice gave the same bytes")
	}
	if got, err := ring1.Open(sealed, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := ring1.Open(sealed, []byte("another secret")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open with other additional data: %v", err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x10
		if got, err := ring1.Open(bad, aad); err == nil {
			t.Fatalf("Open of a sealed secret changed at byte %d gave %q", i, got)
		}
	}
	for _, n := range []int{0, 3, 5, 20, len(sealed) - 1} {
		if _, err := ring1.Open(sealed[:n], aad); err == nil {
			t.Fatalf("Open of %d bytes succeeded", n)
		}
	}
	if id, err := SealedKeyID(sealed); err != nil || id != k1.ID() {
		t.Errorf("SealedKeyID = %s, %v", id, err)
	}

	// Rotation: the new primary with the old key opens it; Rewrap moves it under the new key,
	// which then opens it alone; the ciphertext is the same.
	ring21, _ := NewKeyring(k2, k1)
	if got, err := ring21.Open(sealed, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open by a previous key: %v", err)
	}
	rewrapped, err := ring21.Rewrap(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := SealedKeyID(rewrapped); id != k2.ID() {
		t.Errorf("rewrapped under %s", id)
	}
	if !bytes.HasSuffix(rewrapped, sealed[len(sealed)-len(secret)-16:]) {
		t.Error("Rewrap changed the ciphertext")
	}
	ring2, _ := NewKeyring(k2)
	if got, err := ring2.Open(rewrapped, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open of the rewrapped secret by the new key alone: %v", err)
	}
	if _, err := ring2.Open(sealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Open of the old sealed secret without the old key: %v", err)
	}
	if same, err := ring2.Rewrap(rewrapped); err != nil || !bytes.Equal(same, rewrapped) {
		t.Errorf("Rewrap of a secret under the primary: changed or %v", err)
	}
}
