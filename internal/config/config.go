// Package config is berth's typed configuration: defaults, a strict YAML file (unknown keys are
// errors) and validation that reports every problem at once.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/oci"
)

// Config is everything `berth serve` needs.
type Config struct {
	// Addr is the address to listen on, host:port.
	Addr string `yaml:"addr"`
	// Data is the directory for blobs, metadata and upload sessions (with the default fs and
	// sqlite backends), the TLS certificate files berth makes, and the audit log.
	Data    string  `yaml:"data"`
	Log     Log     `yaml:"log"`
	Uploads Uploads `yaml:"uploads"`
	Proxy   Proxy   `yaml:"proxy"`
	TLS     TLS     `yaml:"tls"`
	Auth    Auth    `yaml:"auth"`
	// Dev serves without authentication, for local use; it requires a loopback Addr.
	Dev bool `yaml:"dev"`
	// MinFreeSpace is how many bytes berth leaves free on the data directory's filesystem:
	// pull-through fills stop before they would go below it, and pushes that would are refused
	// (507), while pulls of what is stored go on. 0 turns the floor off.
	MinFreeSpace int64 `yaml:"min_free_space"`

	// Storage and Metadata choose the backends: the data directory by default, S3-compatible
	// object storage and PostgreSQL for replicas.
	Storage  Storage  `yaml:"storage"`
	Metadata Metadata `yaml:"metadata"`

	// Encryption is encryption at rest of blobs.
	Encryption Encryption `yaml:"encryption"`

	Shutdown Shutdown `yaml:"shutdown"`

	// GC is online garbage collection.
	GC GC `yaml:"gc"`

	// Quotas bound the storage of the repositories their patterns match.
	Quotas []Quota `yaml:"quotas"`

	// Lifecycle assigns lifecycle policies (Amazon ECR's JSON grammar) to repository patterns;
	// the first that matches a repository applies (before those set with berth lifecycle set).
	Lifecycle []LifecyclePolicy `yaml:"lifecycle"`

	// Immutability says which tags may not move to another manifest once pushed, by repository
	// pattern; the first rule that matches a repository decides. Pull-through caches follow
	// their upstream whatever it says.
	Immutability TagRules `yaml:"immutability"`

	// Events are the webhooks told of pushes, deletes, fills and the like (none by default).
	Events Events `yaml:"events"`

	// Metrics are the Prometheus metrics at /metrics.
	Metrics Metrics `yaml:"metrics"`

	// Debug holds diagnostics, off by default.
	Debug Debug `yaml:"debug"`
}

// GC configures online garbage collection (internal/gc).
type GC struct {
	// Grace is how long a blob must have been unneeded (pushed and not referenced, released by
	// a deleted manifest) before it is deleted. It must be longer than any push takes from its
	// first blob to its manifest: a blob pushed whose manifest has not come yet is unneeded too.
	Grace time.Duration `yaml:"grace"`
	// Interval is how often a pass runs, on one replica at a time; 0 turns online collection
	// off (berth gc still runs a pass).
	Interval time.Duration `yaml:"interval"`
}

// Quota bounds the bytes of the blobs linked to the repositories Repositories matches ('*' any
// run of characters, slashes included, as grants match), each blob counted once: a push that
// would go over it is refused before its bytes are stored.
type Quota struct {
	Repositories string `yaml:"repositories"`
	MaxBytes     int64  `yaml:"max_bytes"`
}

// LifecyclePolicy is a lifecycle policy for the repositories Repositories matches: the JSON text
// inline (Policy) or in a file (PolicyFile).
type LifecyclePolicy struct {
	Repositories string `yaml:"repositories"`
	Policy       string `yaml:"policy"`
	PolicyFile   string `yaml:"policy_file"`
}

// Text returns the policy's JSON text.
func (l LifecyclePolicy) Text() ([]byte, error) {
	if l.PolicyFile != "" {
		return os.ReadFile(l.PolicyFile)
	}
	return []byte(l.Policy), nil
}

// DefaultGCGrace and DefaultGCInterval are the defaults of gc.grace and gc.interval.
const (
	DefaultGCGrace    = 24 * time.Hour
	DefaultGCInterval = time.Minute
)

// Uploads configures upload sessions.
type Uploads struct {
	// MaxIdle is how long an upload session may receive nothing before it is discarded.
	MaxIdle time.Duration `yaml:"max_idle"`
	// MaxBlobSize bounds one blob's size in bytes (413 beyond it); 0 means no bound.
	MaxBlobSize int64 `yaml:"max_blob_size"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error; debug logs every request.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns the configuration used where neither file nor flags say otherwise.
func Default() Config {
	return Config{
		Addr:         ":5000",
		Data:         "./berth-data",
		Log:          Log{Level: "info", Format: "text"},
		Uploads:      Uploads{MaxIdle: 24 * time.Hour},
		Encryption:   Encryption{MemoryCache: DefaultMemoryCache},
		Proxy:        Proxy{MaxFillSize: DefaultMaxFillSize},
		MinFreeSpace: DefaultMinFreeSpace,
		Storage:      defaultStorage(),
		Metadata:     defaultMetadata(),
		Shutdown:     Shutdown{Timeout: DefaultShutdownTimeout},
		GC:           GC{Grace: DefaultGCGrace, Interval: DefaultGCInterval},
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors.
func Load(path string) (Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %v", c.Addr, err))
	}
	if c.Data == "" {
		errs = append(errs, errors.New("data: must not be empty"))
	}
	if c.GC.Grace < time.Minute {
		errs = append(errs, fmt.Errorf("gc.grace %s: must be at least 1m (longer than any push takes from its first blob to its manifest)", c.GC.Grace))
	}
	seen := map[string]bool{}
	for i, q := range c.Quotas {
		switch {
		case q.Repositories == "" || q.Repositories != "*" && !oci.ValidName(strings.ReplaceAll(q.Repositories, "*", "x")):
			errs = append(errs, fmt.Errorf("quotas[%d].repositories %q: want a repository name or pattern ('*' any run of characters)", i, q.Repositories))
		case seen[q.Repositories]:
			errs = append(errs, fmt.Errorf("quotas[%d].repositories %q: a second quota for the same pattern", i, q.Repositories))
		}
		seen[q.Repositories] = true
		if q.MaxBytes <= 0 {
			errs = append(errs, fmt.Errorf("quotas[%d].max_bytes %d: must be positive", i, q.MaxBytes))
		}
	}
	for i, l := range c.Lifecycle {
		where := fmt.Sprintf("lifecycle[%d] (%s)", i, l.Repositories)
		if l.Repositories == "" || l.Repositories != "*" && !oci.ValidName(strings.ReplaceAll(l.Repositories, "*", "x")) {
			errs = append(errs, fmt.Errorf("%s: repositories: want a repository name or pattern ('*' any run of characters)", where))
		}
		if (l.Policy == "") == (l.PolicyFile == "") {
			errs = append(errs, fmt.Errorf("%s: set one of policy (the JSON inline) and policy_file", where))
			continue
		}
		text, err := l.Text()
		if err == nil {
			_, err = lifecycle.Parse(text)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if c.GC.Interval < 0 {
		errs = append(errs, fmt.Errorf("gc.interval %s: must not be negative (0 turns online collection off)", c.GC.Interval))
	}
	if c.Uploads.MaxIdle < time.Minute {
		errs = append(errs, fmt.Errorf("uploads.max_idle %s: must be at least 1m", c.Uploads.MaxIdle))
	}
	if c.MinFreeSpace < 0 {
		errs = append(errs, fmt.Errorf("min_free_space %d: must not be negative (0 turns the floor off)", c.MinFreeSpace))
	}
	if c.Uploads.MaxBlobSize < 0 {
		errs = append(errs, fmt.Errorf("uploads.max_blob_size %d: must not be negative", c.Uploads.MaxBlobSize))
	}
	if err := c.TLS.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Encryption.validate(c.Data); err != nil {
		errs = append(errs, err)
	}
	if err := c.Storage.validate(c.Encryption.Enabled()); err != nil {
		errs = append(errs, err)
	}
	if err := c.Metadata.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Metadata.MemoryCache < 0 {
		errs = append(errs, fmt.Errorf("metadata.memory_cache %d: must not be negative (0 turns the cache off)", c.Metadata.MemoryCache))
	}
	if err := c.Proxy.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Auth.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Shutdown.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Immutability.validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Events.validate()...) // one problem each
	if err := c.Debug.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Metrics.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Dev && !IsLoopback(c.Addr) {
		errs = append(errs, fmt.Errorf("dev: serving without authentication is allowed on loopback only, not on %q (use --addr 127.0.0.1:PORT)", c.Addr))
	}
	if _, err := c.Log.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// SlogLevel parses Level.
func (l Log) SlogLevel() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", l.Level)
	}
	return lv, nil
}

// Logger builds the logger l describes, writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	lv, _ := l.SlogLevel()
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
