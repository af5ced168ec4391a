package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/memcache"
)

// encConfig is a configuration for data with the given key files (none: encryption off).
func encConfig(t *testing.T, data string, keyFile string, previous ...string) config.Config {
	t.Helper()
	cfg := config.Default()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = l.Addr().String()
	l.Close()
	cfg.Data, cfg.Dev = data, true
	cfg.Encryption.KeyFile, cfg.Encryption.PreviousKeyFiles = keyFile, previous
	return cfg
}

// runUntilReady runs berth on cfg; it returns Run's error if it ends before it answers, or stops
// it once it answers and returns nil.
func runUntilReady(t *testing.T, cfg config.Config) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("Run ended without an error before serving")
			}
			return err
		default:
		}
		if resp, err := http.Get("http://" + cfg.Addr + "/healthz"); err == nil {
			resp.Body.Close()
			cancel()
			if err := <-errc; err != nil {
				t.Fatalf("Run after cancel: %v", err)
			}
			return nil
		}
	}
	t.Fatal("berth neither served nor failed")
	return nil
}

// TestEncryptionStartup: a missing or wrong key, or a key on a directory of unencrypted blobs, is
// an error at start that says what to do; the right key, or a new key with the old one as a
// previous key, starts.
func TestEncryptionStartup(t *testing.T) {
	keys := t.TempDir()
	k1, k2 := filepath.Join(keys, "k1"), filepath.Join(keys, "k2")
	key1, err := crypt.GenerateKeyFile(k1)
	if err != nil {
		t.Fatal(err)
	}
	key2, err := crypt.GenerateKeyFile(k2)
	if err != nil {
		t.Fatal(err)
	}

	// An encrypted directory, made by a first start with k1.
	data := t.TempDir()
	if err := runUntilReady(t, encConfig(t, data, k1)); err != nil {
		t.Fatalf("first start with a key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "records", "encryption")); err != nil {
		t.Fatalf("no record of the encryption: %v", err)
	}
	for _, c := range []struct {
		name     string
		cfg      config.Config
		wantErrs []string
	}{
		{"no key", encConfig(t, data, ""), []string{"encrypted", key1.ID(), "encryption.key_file"}},
		{"another key", encConfig(t, data, k2), []string{key1.ID(), key2.ID(), "not configured", "rotate"}},
		{"missing key file", encConfig(t, data, filepath.Join(keys, "nope")), []string{"key file", "nope"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := runUntilReady(t, c.cfg)
			if err == nil {
				t.Fatal("berth started")
			}
			t.Logf("error: %v", err)
			for _, want := range c.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
	if err := runUntilReady(t, encConfig(t, data, k1)); err != nil {
		t.Fatalf("restart with the right key: %v", err)
	}
	if err := runUntilReady(t, encConfig(t, data, k2, k1)); err != nil {
		t.Fatalf("start with a new key and the old one as previous: %v", err)
	}
	// From now on both are needed until a rotation.
	if err := runUntilReady(t, encConfig(t, data, k2)); err == nil || !strings.Contains(err.Error(), key1.ID()) {
		t.Fatalf("start without the previous key before a rotation: %v", err)
	}

	// A directory of unencrypted blobs refuses a key.
	plain := t.TempDir()
	st, err := fs.New(plain)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("plain blob")
	if _, err := st.Put(context.Background(), digest.FromBytes(b), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	err = runUntilReady(t, encConfig(t, plain, k1))
	if err == nil || !strings.Contains(err.Error(), "unencrypted") {
		t.Fatalf("start with a key on unencrypted blobs: %v", err)
	}
	if err := runUntilReady(t, encConfig(t, plain, "")); err != nil {
		t.Fatalf("the refused directory no longer starts without a key: %v", err)
	}
}

// TestOpenBlobsMemoryCache: encryption.memory_cache reaches the encrypted store (0: off), and a
// cache larger than half of the memory berth may use is warned about.
func TestOpenBlobsMemoryCache(t *testing.T) {
	k := filepath.Join(t.TempDir(), "k")
	if _, err := crypt.GenerateKeyFile(k); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadKeyring(config.Encryption{KeyFile: k})
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	limit, _ := memoryLimit()
	if limit <= 0 {
		t.Fatal("memoryLimit() found no limit, not even the machine's memory")
	}
	for _, c := range []struct {
		size     int64
		wantWarn bool
	}{{config.DefaultMemoryCache, limit < 2*config.DefaultMemoryCache}, {0, false}, {limit, true}} {
		var logs bytes.Buffer
		b, err := fs.New(data)
		if err != nil {
			t.Fatal(err)
		}
		st, err := sealBlobs(context.Background(), b, data, keys, c.size, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		if mc, ok := st.(*memcache.Store); ok {
			got, _ = mc.Info()
		}
		if got != c.size {
			t.Errorf("memory_cache %d: the store's cache is %d bytes (%T)", c.size, got, st)
		}
		if warned := strings.Contains(logs.String(), "more than half of the memory"); warned != c.wantWarn {
			t.Errorf("memory_cache %d (limit %d): warned %v, want %v:\n%s", c.size, limit, warned, c.wantWarn, logs.String())
		}
	}
}

// TestStartConvertsV1: a data directory that an earlier berth encrypted (keys in each blob file's
// header, encryption.json) refuses to start without its key, converts at the first start with it,
// and then serves its blobs; encryption.json is gone and the record that replaces it refuses a
// start without the key as before.
func TestStartConvertsV1(t *testing.T) {
	src := filepath.Join("..", "storage", "sealed", "testdata", "v1")
	data := t.TempDir()
	if err := os.CopyFS(data, os.DirFS(filepath.Join(src, "data"))); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(src, "kek")
	if err := runUntilReady(t, encConfig(t, data, "")); err == nil || !strings.Contains(err.Error(), "encryption.json") {
		t.Fatalf("start without the key: %v", err)
	}
	if err := runUntilReady(t, encConfig(t, data, key)); err != nil {
		t.Fatalf("start with the key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "encryption.json")); !os.IsNotExist(err) {
		t.Errorf("encryption.json after the conversion: %v", err)
	}
	if err := runUntilReady(t, encConfig(t, data, "")); err == nil || !strings.Contains(err.Error(), "encryption.key_file") {
		t.Fatalf("start without the key after the conversion: %v", err)
	}
	keys, err := LoadKeyring(config.Encryption{KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	cfg := encConfig(t, data, key)
	st, err := OpenStorage(context.Background(), cfg, keys, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	digests, err := os.ReadFile(filepath.Join(src, "digests"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(digests)) {
		d := digest.Digest(strings.TrimSpace(line))
		r, _, err := st.Open(context.Background(), d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		got, err := d.Algorithm().FromReader(r)
		r.Close()
		if err != nil || got != d {
			t.Errorf("%s reads as %s, %v", d, got, err)
		}
	}
}
