package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(file, []byte("addr: 127.0.0.1:7000\ndata: /srv/berth\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("addr: 127.0.0.1:7000\nlisten: oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name              string
		args              []string
		addr, data, level string
		wantErr           string
	}{
		{name: "defaults", addr: ":5000", data: "./berth-data", level: "info"},
		{name: "file", args: []string{"--config", file}, addr: "127.0.0.1:7000", data: "/srv/berth", level: "warn"},
		{name: "flag beats file", args: []string{"--config", file, "--addr", "127.0.0.1:7001"}, addr: "127.0.0.1:7001", data: "/srv/berth", level: "warn"},
		{name: "flags only", args: []string{"--data", dir, "--log-level", "debug"}, addr: ":5000", data: dir, level: "debug"},
		{name: "unknown key", args: []string{"--config", bad}, wantErr: "listen"},
		{name: "bad flag value", args: []string{"--addr", "nonsense"}, wantErr: "addr"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := serveCmd()
			if err := cmd.ParseFlags(c.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := resolveConfig(cmd.Flags())
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Addr != c.addr || cfg.Data != c.data || cfg.Log.Level != c.level {
				t.Errorf("got addr %q data %q level %q, want %q %q %q", cfg.Addr, cfg.Data, cfg.Log.Level, c.addr, c.data, c.level)
			}
		})
	}
}
