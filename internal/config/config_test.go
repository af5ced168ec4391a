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
		Proxy: Proxy{MaxFillSize: 16 << 30}, MinFreeSpace: 1 << 30,
		Storage:  Storage{Driver: "fs", S3: S3{SSE: "none", PartSize: 16 << 20, RedirectTTL: 5 * time.Minute}},
		Metadata: Metadata{Driver: "sqlite", MemoryCache: 64 << 20}, Shutdown: Shutdown{Timeout: 30 * time.Second},
		GC: GC{Grace: 24 * time.Hour, Interval: time.Minute}}
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
			Proxy: Proxy{MaxFillSize: DefaultMaxFillSize}, MinFreeSpace: DefaultMinFreeSpace,
			Storage: defaultStorage(), Metadata: defaultMetadata(), Shutdown: Shutdown{Timeout: DefaultShutdownTimeout},
			GC: GC{Grace: DefaultGCGrace, Interval: DefaultGCInterval}}},
		{"quotas", "quotas:\n  - repositories: team/*\n    max_bytes: 1073741824\n",
			with(func(c *Config) { c.Quotas = []Quota{{Repositories: "team/*", MaxBytes: 1 << 30}} })},
		{"gc", "gc:\n  grace: 72h\n  interval: 0s\n", with(func(c *Config) { c.GC = GC{Grace: 72 * time.Hour} })},
		{"replicas", `
storage:
  driver: s3
  s3:
    bucket: registry
    prefix: berth
    region: eu-west-1
    endpoint: http://127.0.0.1:7070
    path_style: true
    sse: aws:kms
    kms_key_id: alias/berth
    part_size: 33554432
    redirect: true
    redirect_ttl: 2m
metadata:
  driver: postgres
  dsn_env: BERTH_DSN
shutdown:
  drain: 5s
  timeout: 1m
`, with(func(c *Config) {
			c.Storage = Storage{Driver: "s3", S3: S3{Bucket: "registry", Prefix: "berth", Region: "eu-west-1",
				Endpoint: "http://127.0.0.1:7070", PathStyle: true, SSE: "aws:kms", KMSKeyID: "alias/berth",
				PartSize: 32 << 20, Redirect: true, RedirectTTL: 2 * time.Minute}}
			c.Metadata = Metadata{Driver: "postgres", DSNEnv: "BERTH_DSN", MemoryCache: DefaultMetadataMemoryCache}
			c.Shutdown = Shutdown{Drain: 5 * time.Second, Timeout: time.Minute}
		})},
		{"fill bounds", "min_free_space: 5368709120\nproxy:\n  max_fill_size: 1073741824\n",
			with(func(c *Config) { c.MinFreeSpace, c.Proxy.MaxFillSize = 5<<30, 1<<30 })},
		{"no free-space floor", "min_free_space: 0\n", with(func(c *Config) { c.MinFreeSpace = 0 })},
		{"no manifest memory cache", "metadata:\n  memory_cache: 0\n", with(func(c *Config) { c.Metadata.MemoryCache = 0 })},
		{"manifest memory cache", "metadata:\n  memory_cache: 1048576\n", with(func(c *Config) { c.Metadata.MemoryCache = 1 << 20 })},
		{"partial keeps the other defaults", "log:\n  format: json\n",
			with(func(c *Config) { c.Log.Format = "json" })},
		{"only addr", "addr: \"[::1]:80\"\n", with(func(c *Config) { c.Addr = "[::1]:80" })},
		{"durations", "uploads:\n  max_idle: 1h30m\n", with(func(c *Config) { c.Uploads.MaxIdle = 90 * time.Minute })},
		{"events", `
events:
  source: https://registry.example.com
  webhooks:
    - name: ci
      url: https://ci.example.com/hooks/berth
      secret_file: /run/secrets/berth-webhook
      repositories: [team/*, tools]
      types: [io.berth.manifest.pushed, io.berth.tag.moved]
      timeout: 5s
      max_attempts: 20
`, with(func(c *Config) {
			c.Events = Events{Source: "https://registry.example.com", Webhooks: []Webhook{{Name: "ci", URL: "https://ci.example.com/hooks/berth",
				SecretFile: "/run/secrets/berth-webhook", Repositories: []string{"team/*", "tools"},
				Types: []string{"io.berth.manifest.pushed", "io.berth.tag.moved"}, Timeout: 5 * time.Second, MaxAttempts: 20}}}
		})},
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
		{"storage:\n  s4:\n    bucket: b\n", "s4"},
		{"metadata:\n  dsn: postgres://x\n", "dsn"},
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
		{"s3", func(c *Config) { c.Storage = s3Storage(func(*S3) {}) }, nil},
		{"s3 with sse", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.SSE, s.KMSKeyID = "aws:kms", "k" }) }, nil},
		{"s3 with static credentials", func(c *Config) {
			c.Storage = s3Storage(func(s *S3) { s.AccessKeyFile, s.SecretKeyFile = "/run/secrets/a", "/run/secrets/s" })
		}, nil},
		{"s3 on an endpoint, no region", func(c *Config) {
			c.Storage = s3Storage(func(s *S3) { s.Region, s.Endpoint = "", "http://127.0.0.1:9000" })
		}, nil},
		{"s3 without bucket", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.Bucket = "" }) }, []string{"storage.s3.bucket"}},
		{"s3 without region", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.Region = "" }) }, []string{"storage.s3.region"}},
		{"s3 endpoint not a URL", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.Endpoint = "minio:9000" }) }, []string{"storage.s3.endpoint"}},
		{"s3 prefix absolute", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.Prefix = "/berth" }) }, []string{"storage.s3.prefix"}},
		{"s3 prefix dots", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.Prefix = "a/../b" }) }, []string{"storage.s3.prefix"}},
		{"s3 half the credentials", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.AccessKeyFile = "/a" }) }, []string{"secret_key_file"}},
		{"s3 bad sse", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.SSE = "aes" }) }, []string{"storage.s3.sse"}},
		{"s3 kms key without kms", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.SSE, s.KMSKeyID = "AES256", "k" }) }, []string{"kms_key_id"}},
		{"s3 small parts", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.PartSize = 1 << 20 }) }, []string{"storage.s3.part_size"}},
		{"s3 redirect ttl", func(c *Config) { c.Storage = s3Storage(func(s *S3) { s.RedirectTTL = 24 * time.Hour }) }, []string{"storage.s3.redirect_ttl"}},
		{"s3 redirect with encryption", func(c *Config) {
			c.Storage = s3Storage(func(s *S3) { s.Redirect = true })
			c.Encryption.KeyFile = "/etc/berth/key"
		}, []string{"storage.s3.redirect"}},
		{"s3 with encryption", func(c *Config) {
			c.Storage = s3Storage(func(*S3) {})
			c.Encryption.KeyFile = "/etc/berth/key"
		}, nil},
		{"unknown storage", func(c *Config) { c.Storage.Driver = "gcs" }, []string{`storage.driver "gcs"`}},
		{"postgres from env", func(c *Config) { c.Metadata = Metadata{Driver: "postgres", DSNEnv: "DSN"} }, nil},
		{"postgres from file", func(c *Config) { c.Metadata = Metadata{Driver: "postgres", DSNFile: "/run/secrets/dsn"} }, nil},
		{"postgres without dsn", func(c *Config) { c.Metadata = Metadata{Driver: "postgres"} }, []string{"exactly one of dsn_env"}},
		{"postgres with two dsns", func(c *Config) { c.Metadata = Metadata{Driver: "postgres", DSNEnv: "A", DSNFile: "/b"} }, []string{"exactly one of dsn_env"}},
		{"sqlite with a dsn", func(c *Config) { c.Metadata.DSNEnv = "DSN" }, []string{"driver postgres"}},
		{"unknown metadata", func(c *Config) { c.Metadata.Driver = "mysql" }, []string{`metadata.driver "mysql"`}},
		{"no manifest cache", func(c *Config) { c.Metadata.MemoryCache = 0 }, nil},
		{"negative manifest cache", func(c *Config) { c.Metadata.MemoryCache = -1 }, []string{"metadata.memory_cache -1"}},
		{"negative manifest cache and unknown metadata", func(c *Config) { c.Metadata = Metadata{Driver: "mysql", MemoryCache: -1} },
			[]string{"metadata.memory_cache -1", `metadata.driver "mysql"`}},
		{"drain", func(c *Config) { c.Shutdown.Drain = 10 * time.Second }, nil},
		{"gc off", func(c *Config) { c.GC.Interval = 0 }, nil},
		{"lifecycle", func(c *Config) {
			c.Lifecycle = []LifecyclePolicy{{Repositories: "team/*", Policy: `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}`}}
		}, nil},
		{"bad lifecycle", func(c *Config) {
			c.Lifecycle = []LifecyclePolicy{{Repositories: "team/*", Policy: `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":7},"action":{"type":"expire"}}]}`},
				{Repositories: "x"}}
		}, []string{"lifecycle[0] (team/*): invalid lifecycle policy: rules[1].selection.countUnit", "lifecycle[1] (x): set one of policy"}},
		{"quotas", func(c *Config) { c.Quotas = []Quota{{"team/*", 10 << 30}, {"*", 1 << 40}, {"a_b/c", 1}} }, nil},
		{"bad quotas", func(c *Config) {
			c.Quotas = []Quota{{"Team/*", 1}, {"", 1}, {"x/*", 0}, {"y", 5}, {"y", 6}}
		}, []string{`quotas[0].repositories "Team/*"`, `quotas[1].repositories ""`, "quotas[2].max_bytes 0", `quotas[4].repositories "y": a second quota`}},
		{"webhooks", func(c *Config) {
			c.Events.Webhooks = []Webhook{{Name: "a", URL: "http://127.0.0.1:9000/x", Secret: "k"},
				{Name: "b", URL: "https://h.example", SecretFile: "/s", Repositories: []string{"*", "team/*"}, Types: []string{"io.berth.cache.evicted"}}}
		}, nil},
		{"bad webhooks", func(c *Config) {
			c.Events.Webhooks = []Webhook{
				{Name: "a", URL: "ftp://h/x", Secret: "k"},
				{Name: "a", URL: "https://h", Secret: "k", SecretFile: "/s"},
				{Name: "", URL: "https://h", Secret: "k", Repositories: []string{"Team/*"}},
				{Name: "d", URL: "https://h", Secret: "k", Types: []string{"io.berth.pushed"}, MaxAttempts: -1},
				{Name: "e", URL: "https://h"},
			}
		}, []string{`events.webhooks[0] (a): url "ftp://h/x": want an http(s) URL`, "events.webhooks[1] (a): name: a second webhook",
			"events.webhooks[1] (a): set one of secret and secret_file", "events.webhooks[2] (): name: must not be empty",
			`events.webhooks[2] (): repositories: repository pattern "Team/*"`, `events.webhooks[3] (d): types: unknown event type "io.berth.pushed"`,
			"events.webhooks[3] (d): timeout and max_attempts must not be negative", "events.webhooks[4] (e): set one of secret"}},
		{"short gc grace", func(c *Config) { c.GC.Grace = 30 * time.Second }, []string{"gc.grace 30s: must be at least 1m"}},
		{"negative gc interval", func(c *Config) { c.GC.Interval = -time.Second }, []string{"gc.interval"}},
		{"negative drain", func(c *Config) { c.Shutdown.Drain = -time.Second }, []string{"shutdown.drain"}},
		{"no shutdown timeout", func(c *Config) { c.Shutdown.Timeout = 0 }, []string{"shutdown.timeout"}},
		{"everything wrong", func(c *Config) {
			*c = Config{Addr: "nope", Data: "", Log: Log{Level: "loud", Format: "yaml"}, Uploads: Uploads{MaxIdle: -1}, MinFreeSpace: -1}
		}, []string{"addr", "data", "log.level", "log.format", "uploads.max_idle", "min_free_space", "proxy.max_fill_size",
			"storage.driver", "metadata.driver", "shutdown.timeout", "gc.grace"}},
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

// s3Storage is a valid s3 storage configuration changed by edit.
func s3Storage(edit func(*S3)) Storage {
	s := defaultStorage()
	s.Driver = "s3"
	s.S3.Bucket, s.S3.Region = "registry", "eu-west-1"
	edit(&s.S3)
	return s
}

func TestMetadataDSN(t *testing.T) {
	t.Setenv("BERTH_TEST_DSN", "postgres://u:p@127.0.0.1/berth")
	if got, err := (Metadata{Driver: "postgres", DSNEnv: "BERTH_TEST_DSN"}).DSN(); err != nil || got != "postgres://u:p@127.0.0.1/berth" {
		t.Errorf("DSN from env = %q, %v", got, err)
	}
	if _, err := (Metadata{Driver: "postgres", DSNEnv: "BERTH_TEST_UNSET_DSN"}).DSN(); err == nil || !strings.Contains(err.Error(), "BERTH_TEST_UNSET_DSN") {
		t.Errorf("DSN from an unset variable: %v", err)
	}
	f := writeFile(t, "postgres://u:p@db/berth\n")
	if got, err := (Metadata{Driver: "postgres", DSNFile: f}).DSN(); err != nil || got != "postgres://u:p@db/berth" {
		t.Errorf("DSN from file = %q, %v", got, err)
	}
	if _, err := (Metadata{Driver: "postgres", DSNFile: writeFile(t, " \n")}).DSN(); err == nil {
		t.Error("an empty DSN file was taken")
	}
}

func TestS3Credentials(t *testing.T) {
	if a, s, err := (S3{}).Credentials(); a != "" || s != "" || err != nil {
		t.Errorf("no files: %q %q %v, want the default chain", a, s, err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("AKIA\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "s"), []byte("secret\n"), 0o600)
	a, s, err := (S3{AccessKeyFile: filepath.Join(dir, "a"), SecretKeyFile: filepath.Join(dir, "s")}).Credentials()
	if a != "AKIA" || s != "secret" || err != nil {
		t.Errorf("from files: %q %q %v", a, s, err)
	}
	if _, _, err := (S3{AccessKeyFile: filepath.Join(dir, "a"), SecretKeyFile: filepath.Join(dir, "missing")}).Credentials(); err == nil || !strings.Contains(err.Error(), "secret_key_file") {
		t.Errorf("a missing secret file: %v", err)
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

func TestWebhookKey(t *testing.T) {
	if k, err := (Webhook{Secret: "inline"}).Key(); string(k) != "inline" || err != nil {
		t.Errorf("inline secret: %q %v", k, err)
	}
	if k, err := (Webhook{SecretFile: writeFile(t, "from-file\n")}).Key(); string(k) != "from-file" || err != nil {
		t.Errorf("secret file: %q %v", k, err)
	}
	if _, err := (Webhook{Name: "w", SecretFile: writeFile(t, "\n")}).Key(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty secret file: %v", err)
	}
	if _, err := (Webhook{Name: "w", SecretFile: "/nonexistent/secret"}).Key(); err == nil || !strings.Contains(err.Error(), "secret_file") {
		t.Errorf("a missing secret file: %v", err)
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

func TestValidateACME(t *testing.T) {
	roots := filepath.Join(t.TempDir(), "roots.pem")
	notPEM := filepath.Join(t.TempDir(), "roots.txt")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	// A self-signed certificate as the private directory's root.
	if err := os.WriteFile(roots, []byte(testRootPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	acme := func(edit func(a *ACME)) func(*Config) {
		return func(c *Config) {
			c.TLS.ACME = &ACME{Domains: []string{"registry.example.com"}}
			edit(c.TLS.ACME)
		}
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want []string // parts of the error; none when valid
	}{
		{"let's encrypt", acme(func(a *ACME) { a.Email = "ops@example.com" }), nil},
		{"private directory", acme(func(a *ACME) {
			a.Directory, a.CARoots, a.HTTPAddr, a.RenewBefore = "https://ca.internal:14000/dir", roots, ":80", 72*time.Hour
		}), nil},
		{"several domains", acme(func(a *ACME) {
			a.Domains = []string{"registry.example.com", "Mirror.Example.com", "xn--bcher-kva.example"}
		}), nil},
		{"no domains", acme(func(a *ACME) { a.Domains = nil }), []string{"tls.acme.domains: name at least one"}},
		{"single label", acme(func(a *ACME) { a.Domains = []string{"registry"} }), []string{`domains[0] "registry": want a fully qualified name`}},
		{"IP address", acme(func(a *ACME) { a.Domains = []string{"192.0.2.1"} }), []string{"an IP address"}},
		{"wildcard", acme(func(a *ACME) { a.Domains = []string{"*.example.com"} }), []string{"DNS-01"}},
		{"trailing dot", acme(func(a *ACME) { a.Domains = []string{"registry.example.com."} }), []string{"trailing dot"}},
		{"bad label", acme(func(a *ACME) { a.Domains = []string{"-a.example.com", "a_b.example.com", "bücher.example"} }),
			[]string{`domains[0] "-a.example.com"`, `domains[1] "a_b.example.com"`, `domains[2] "bücher.example": label "bücher"`}},
		{"twice", acme(func(a *ACME) { a.Domains = []string{"a.example.com", "A.example.com"} }), []string{`domains[1] "A.example.com": listed twice`}},
		{"bad email", acme(func(a *ACME) { a.Email = "ops at example" }), []string{`tls.acme.email "ops at example"`}},
		{"plain http directory", acme(func(a *ACME) { a.Directory = "http://ca.internal/dir" }), []string{"tls.acme.directory"}},
		{"missing roots", acme(func(a *ACME) { a.CARoots = "/nonexistent/roots.pem" }), []string{"tls.acme.ca_roots"}},
		{"roots not PEM", acme(func(a *ACME) { a.CARoots = notPEM }), []string{"no PEM certificate"}},
		{"http addr without port", acme(func(a *ACME) { a.HTTPAddr = "80" }), []string{"tls.acme.http_addr"}},
		{"renew before too long", acme(func(a *ACME) { a.RenewBefore = 60 * 24 * time.Hour }), []string{"tls.acme.renew_before"}},
		{"negative renew before", acme(func(a *ACME) { a.RenewBefore = -time.Hour }), []string{"tls.acme.renew_before"}},
		{"acme and files", func(c *Config) {
			acme(func(*ACME) {})(c)
			c.TLS.Cert, c.TLS.Key = "/c.pem", "/k.pem"
		}, []string{"tls: acme excludes cert/key"}},
		{"acme and self-signed", func(c *Config) {
			acme(func(*ACME) {})(c)
			c.TLS.SelfSigned = true
		}, []string{"tls: acme excludes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Default()
			c.edit(&cfg)
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Errorf("Validate = %v", err)
				}
				if !cfg.TLS.Enabled() {
					t.Error("tls.acme does not turn TLS on")
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q does not mention %q", err, w)
				}
			}
		})
	}
	if d := (ACME{}).DirectoryURL(); d != LetsEncrypt {
		t.Errorf("default directory %q, want Let's Encrypt's %q", d, LetsEncrypt)
	}
}

// testRootPEM is a self-signed certificate (any will do as a root to trust).
const testRootPEM = `-----BEGIN CERTIFICATE-----
MIIBWzCCAQGgAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDEwl0ZXN0IHJv
b3QwIBcNNzAwMTAxMDAwMDAwWhgPMjA5OTAxMDEwMDAwMDBaMBQxEjAQBgNVBAMT
CXRlc3Qgcm9vdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABMpxXuQZ6XYBE1JR
subzP4355/zhkjbRbpuxbBP0izSNNw+KoN7R8MhaL5rE4+VTGxFrzgwizZZOAjKG
hFQXjM2jQjBAMA4GA1UdDwEB/wQEAwICBDAPBgNVHRMBAf8EBTADAQH/MB0GA1Ud
DgQWBBSlQy2Md0LjkAhr3CUi+5lPafj+BjAKBggqhkjOPQQDAgNIADBFAiEAwlG8
AjNpprpHsyGR8WYVbhgGGM7c5jOxEGXaUgj/gLkCIGFTze/x+F5V5mH5INuEqGGd
f+RF81EVjktl2Gebdqqw
-----END CERTIFICATE-----
`
