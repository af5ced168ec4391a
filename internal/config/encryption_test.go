package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEncryptionConfig(t *testing.T) {
	path := writeFile(t, `
data: /var/lib/berth
encryption:
  key_file: /etc/berth/kek
  previous_key_files: [/etc/berth/kek.old]
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Encryption.KeyFile != "/etc/berth/kek" || !slices.Equal(c.Encryption.PreviousKeyFiles, []string{"/etc/berth/kek.old"}) || !c.Encryption.Enabled() {
		t.Fatalf("encryption = %+v", c.Encryption)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(writeFile(t, "encryption:\n  keyfile: /x\n")); err == nil || !strings.Contains(err.Error(), "keyfile") {
		t.Errorf("unknown key under encryption: %v", err)
	}
	if Default().Encryption.Enabled() {
		t.Error("encryption is on by default")
	}
	if c.Encryption.MemoryCache != 512<<20 || Default().Encryption.MemoryCache != 536870912 {
		t.Errorf("memory_cache = %d by default, want 512 MiB", c.Encryption.MemoryCache)
	}
	for in, want := range map[string]int64{"0": 0, "1073741824": 1 << 30} {
		c, err := Load(writeFile(t, "encryption:\n  key_file: /k\n  memory_cache: "+in+"\n"))
		if err != nil || c.Encryption.MemoryCache != want {
			t.Errorf("memory_cache: %s = %d, %v; want %d", in, c.Encryption.MemoryCache, err, want)
		}
	}

	data := t.TempDir()
	for _, c := range []struct {
		name    string
		enc     Encryption
		wantErr string
	}{
		{"previous without key", Encryption{PreviousKeyFiles: []string{"/k"}}, "needs encryption.key_file"},
		{"empty previous", Encryption{KeyFile: "/k", PreviousKeyFiles: []string{""}}, "empty file name"},
		{"twice", Encryption{KeyFile: "/k", PreviousKeyFiles: []string{"/x/../k"}}, "given twice"},
		{"inside data", Encryption{KeyFile: filepath.Join(data, "keys", "kek")}, "inside the data directory"},
		{"data itself", Encryption{KeyFile: "/k", PreviousKeyFiles: []string{data}}, "inside the data directory"},
		{"beside data", Encryption{KeyFile: data + "-keys/kek"}, ""},
		{"off", Encryption{}, ""},
		{"negative cache", Encryption{KeyFile: "/k", MemoryCache: -1}, "memory_cache -1: must not be negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := with(func(cfg *Config) { cfg.Data, cfg.Encryption = data, c.enc })
			err := cfg.Validate()
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Validate() = %v, want an error with %q", err, c.wantErr)
			}
		})
	}
}
