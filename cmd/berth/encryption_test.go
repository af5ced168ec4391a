package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/server"
	"github.com/berth/berth/internal/storage"
)

// encCLI runs the berth command line in process and returns its standard output.
func encCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	out, err := encCLI(t, "encryption", "keygen", path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(data) {
		t.Errorf("key file holds %q, want 64 hex characters and a newline", data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k, err := crypt.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, k.ID()) {
		t.Errorf("keygen said %q, not the key's ID %s", out, k.ID())
	}
	if _, err := encCLI(t, "encryption", "keygen", path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("keygen over an existing file: %v", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Error("keygen changed an existing key file")
	}
}

// TestRotateCommand: rotate re-wraps under the new key (the old one can then go), refuses to run
// without the old key or while berth holds the directory, and status shows the keys.
func TestRotateCommand(t *testing.T) {
	keys, data := t.TempDir(), t.TempDir()
	oldKey, newKey := filepath.Join(keys, "old"), filepath.Join(keys, "new")
	for _, p := range []string{oldKey, newKey} {
		if _, err := encCLI(t, "encryption", "keygen", p); err != nil {
			t.Fatal(err)
		}
	}
	ring := func(primary string, previous ...string) *crypt.Keyring {
		k, err := crypt.LoadKeyring(primary, previous)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	open := func(keys *crypt.Keyring) storage.BlobStore {
		t.Helper()
		cfg := config.Default()
		cfg.Data = data
		st, err := server.OpenStorage(context.Background(), cfg, keys, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open(ring(oldKey))
	b := []byte("a blob under the old key")
	d := digest.FromBytes(b)
	if _, err := st.Put(context.Background(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	blobFile := filepath.Join(data, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	stored, err := os.ReadFile(blobFile)
	if err != nil {
		t.Fatal(err)
	}
	oldID, newID := ring(oldKey).PrimaryID(), ring(newKey).PrimaryID()
	// The token signing keys in the metadata store, sealed under the old key.
	meta, err := sqlite.Open(context.Background(), filepath.Join(data, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.ResealKeys(context.Background(), meta, ring(oldKey)); err != nil {
		t.Fatal(err)
	}
	meta.Close()

	if _, err := encCLI(t, "encryption", "rotate", "--data", data, "--key-file", newKey); err == nil || !strings.Contains(err.Error(), oldID) {
		t.Errorf("rotate without the old key: %v", err)
	}
	unlock, err := server.LockDataDir(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := encCLI(t, "encryption", "rotate", "--data", data, "--key-file", newKey, "--previous-key-file", oldKey); err == nil || !strings.Contains(err.Error(), "stop it") {
		t.Errorf("rotate while berth holds the directory: %v", err)
	}
	unlock()

	out, err := encCLI(t, "encryption", "rotate", "--data", data, "--key-file", newKey, "--previous-key-file", oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "re-wrapped 1 data keys under "+newID) || !strings.Contains(out, oldID) {
		t.Errorf("rotate said %q", out)
	}
	// Only the key records changed: the blob's stored bytes are as they were.
	if after, _ := os.ReadFile(blobFile); !bytes.Equal(after, stored) {
		t.Error("the rotation rewrote the blob")
	}
	st2 := open(ring(newKey))
	meta, err = sqlite.Open(context.Background(), filepath.Join(data, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	if _, err := auth.ListKeys(context.Background(), meta, ring(newKey)); err != nil {
		t.Fatalf("token signing keys with the new key alone after the rotation: %v", err)
	}
	r, _, err := st2.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, b) {
		t.Fatalf("blob after the rotation: %q", got)
	}
	out, err = encCLI(t, "encryption", "status", "--data", data)
	if err != nil || !strings.Contains(out, "needs key "+newID) || !regexp.MustCompile(newID+` +1 data keys`).MatchString(out) {
		t.Errorf("status = %q, %v", out, err)
	}
	if out, err := encCLI(t, "encryption", "status", "--data", t.TempDir()); err != nil || !strings.Contains(out, "not encrypted") {
		t.Errorf("status of a plain directory = %q, %v", out, err)
	}
}
