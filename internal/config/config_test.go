package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	c := Default()
	want := Config{Addr: ":5000", Data: "./berth-data", Log: Log{Level: "info", Format: "text"},
		Uploads: Uploads{MaxIdle: 24 * time.Hour}, Encryption: Encryption{MemoryCache: 512 << 20},
		Proxy: Proxy{MaxFillSize: 16 << 30}, MinFreeSpace: 1 << 30}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if lv, err := c.Log.SlogLevel(); err != nil || lv != slog.LevelInfo {
		t.Errorf("default level = %v, %v", lv, err)
	}
}

// with returns the defaults changed by edit.
func with(edit func(*Config)) Config {
	c := Default()
	edit(&c)
	return c
}

func TestLoad(t *testing.T) {
	for _, c := range []struct {
		name, file string
		want       Config
	}{
		{"full", `
addr: 127.0.0.1:5001
data: /var/lib/berth
log:
  level: debug
  format: json
uploads:
  max_idle: 90m
`, Config{Addr: "127.0.0.1:5001", Data: "/var/lib/berth", Log: Log{Level: "debug", Format: "json"},
			Uploads: Uploads{MaxIdle: 90 * time.Minute}, Encryption: Encryption{MemoryCache: DefaultMemoryCache},
			Proxy: Proxy{MaxFillSize: DefaultMaxFillSize}, MinFreeSpace: DefaultMinFreeSpace}},
		{"fill bounds", "min_free_space: 5368709120\nproxy:\n  max_fill_size: 1073741824\n",
			with(func(c *Config) { c.MinFreeSpace, c.Proxy.MaxFillSize = 5<<30, 1<<30 })},
		{"no free-space floor", "min_free_space: 0\n", with(func(c *Config) { c.MinFreeSpace = 0 })},
		{"partial keeps the other defaults", "log:\n  format: json\n",
			with(func(c *Config) { c.Log.Format = "json" })},
		{"only addr", "addr: \"[::1]:80\"\n", with(func(c *Config) { c.Addr = "[::1]:80" })},
		{"durations", "uploads:\n  max_idle: 1h30m\n", with(func(c *Config) { c.Uploads.MaxIdle = 90 * time.Minute })},
		{"pprof", "debug:\n  pprof_addr: 127.0.0.1:6060\n", with(func(c *Config) { c.Debug.PprofAddr = "127.0.0.1:6060" })},
		{"empty file", "", Default()},
		{"only a comment", "# nothing here\n", Default()},
		{"empty document", "---\n", Default()},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Load(writeFile(t, c.file))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Load = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestLoadUnknownKey(t *testing.T) {
	for _, c := range []struct {
		file, key string
	}{
		{"addr: :5000\nlisten: :6000\n", "listen"},
		{"log:\n  level: info\n  colour: true\n", "colour"},
		{"Addr: :5000\n", "Addr"}, // keys are case-sensitive
		{"storage:\n  s3:\n    bucket: b\n", "storage"},
	} {
		path := writeFile(t, c.file)
		_, err := Load(path)
		if err == nil {
			t.Errorf("Load(%q) accepted an unknown key", c.file)
			continue
		}
		if !strings.Contains(err.Error(), c.key) {
			t.Errorf("Load(%q) error %q does not name the key %q", c.file, err, c.key)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("Load error %q does not name the file", err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v; want ErrNotExist", err)
	}
	for _, file := range []string{
		"addr: [1, 2]\n",         // wrong type
		"log: info\n",            // scalar for a mapping
		"addr: :5000\n\tdata: x", // tab indentation
		"addr: \"unterminated\n",
		"addr: :5000\naddr: :6000\n",   // duplicate key
		"- a\n- b\n",                   // not a mapping
		"uploads:\n  max_idle: soon\n", // not a duration
	} {
		if _, err := Load(writeFile(t, file)); err == nil {
			t.Errorf("Load(%q) succeeded", file)
		}
	}
}

func TestValidate(t *testing.T) {
	valid := Default()
	for _, c := range []struct {
		name string
		edit func(*Config)
		want []string // parts of the error, one per problem; none when valid
	}{
		{"default", func(*Config) {}, nil},
		{"host and port", func(c *Config) { c.Addr = "localhost:8080" }, nil},
		{"IPv6", func(c *Config) { c.Addr = "[::]:5000" }, nil},
		{"warn", func(c *Config) { c.Log.Level = "warn" }, nil},
		{"error", func(c *Config) { c.Log.Level = "error" }, nil},
		{"DEBUG", func(c *Config) { c.Log.Level = "DEBUG" }, nil},
		{"json", func(c *Config) { c.Log.Format = "json" }, nil},
		{"addr without port", func(c *Config) { c.Addr = "localhost" }, []string{"addr"}},
		{"empty addr", func(c *Config) { c.Addr = "" }, []string{"addr"}},
		{"empty data", func(c *Config) { c.Data = "" }, []string{"data"}},
		{"bad level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level "verbose"`}},
		{"empty level", func(c *Config) { c.Log.Level = "" }, []string{"log.level"}},
		{"bad format", func(c *Config) { c.Log.Format = "xml" }, []string{`log.format "xml"`}},
		{"one minute idle", func(c *Config) { c.Uploads.MaxIdle = time.Minute }, nil},
		{"short idle", func(c *Config) { c.Uploads.MaxIdle = time.Second }, []string{"uploads.max_idle"}},
		{"no idle", func(c *Config) { c.Uploads.MaxIdle = 0 }, []string{"uploads.max_idle"}},
		{"dev on loopback", func(c *Config) { c.Dev, c.Addr = true, "127.0.0.1:5000" }, nil},
		{"dev on every interface", func(c *Config) { c.Dev = true }, []string{"dev"}},
		{"max blob size", func(c *Config) { c.Uploads.MaxBlobSize = 1 << 30 }, nil},
		{"negative max blob size", func(c *Config) { c.Uploads.MaxBlobSize = -1 }, []string{"uploads.max_blob_size"}},
		{"trusted proxies", func(c *Config) { c.Auth.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"} }, nil},
		{"bad trusted proxy", func(c *Config) { c.Auth.TrustedProxies = []string{"10.0.0.0/33"} }, []string{"auth.trusted_proxies"}},
		{"token ttl", func(c *Config) { c.Auth.TokenTTL = time.Second }, []string{"auth.token_ttl"}},
		{"realm", func(c *Config) { c.Auth.Realm = "ftp://x/token" }, []string{"auth.realm"}},
		{"no free-space floor", func(c *Config) { c.MinFreeSpace = 0 }, nil},
		{"negative free-space floor", func(c *Config) { c.MinFreeSpace = -1 }, []string{"min_free_space"}},
		{"small max fill size", func(c *Config) { c.Proxy.MaxFillSize = 1 }, nil},
		{"zero max fill size", func(c *Config) { c.Proxy.MaxFillSize = 0 }, []string{"proxy.max_fill_size"}},
		{"negative max fill size", func(c *Config) { c.Proxy.MaxFillSize = -5 }, []string{"proxy.max_fill_size"}},
		{"pprof on loopback", func(c *Config) { c.Debug.PprofAddr = "127.0.0.1:6060" }, nil},
		{"pprof on localhost", func(c *Config) { c.Debug.PprofAddr = "localhost:6060" }, nil},
		{"pprof on every interface", func(c *Config) { c.Debug.PprofAddr = ":6060" }, []string{"debug.pprof_addr"}},
		{"pprof on a public address", func(c *Config) { c.Debug.PprofAddr = "192.0.2.1:6060" }, []string{"debug.pprof_addr"}},
		{"pprof without port", func(c *Config) { c.Debug.PprofAddr = "127.0.0.1" }, []string{"debug.pprof_addr"}},
		{"everything wrong", func(c *Config) {
			*c = Config{Addr: "nope", Data: "", Log: Log{Level: "loud", Format: "yaml"}, Uploads: Uploads{MaxIdle: -1}, MinFreeSpace: -1}
		}, []string{"addr", "data", "log.level", "log.format", "uploads.max_idle", "min_free_space", "proxy.max_fill_size"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid
			c.edit(&cfg)
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Errorf("Validate(%+v) = %v", cfg, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%+v) = nil", cfg)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q does not mention %q", err, w)
				}
			}
			// Each problem is reported on its own, all at once.
			var joined interface{ Unwrap() []error }
			if errors.As(err, &joined) {
				if n := len(joined.Unwrap()); n != len(c.want) {
					t.Errorf("Validate reported %d problems, want %d: %v", n, len(c.want), err)
				}
			} else if len(c.want) > 1 {
				t.Errorf("Validate error %T is not a list of problems", err)
			}
		})
	}
}

// A file that Load accepts may still be invalid: Load does not validate, Validate does.
func TestLoadThenValidate(t *testing.T) {
	c, err := Load(writeFile(t, "addr: nope\nlog:\n  format: xml\n"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "addr") || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("Validate = %v, want errors about addr and log.format", err)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	Log{Level: "warn", Format: "json"}.Logger(&buf).Info("hidden")
	Log{Level: "warn", Format: "json"}.Logger(&buf).Warn("shown", "k", "v")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) || !strings.Contains(out, `"k":"v"`) {
		t.Errorf("json logger wrote %q", out)
	}
	buf.Reset()
	Log{Level: "debug", Format: "text"}.Logger(&buf).Debug("dbg")
	if !strings.Contains(buf.String(), "level=DEBUG") || !strings.Contains(buf.String(), "msg=dbg") {
		t.Errorf("text logger wrote %q", buf.String())
	}
}
