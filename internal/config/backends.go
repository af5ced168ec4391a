package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Storage chooses where blob bytes live. The default is the data directory (driver fs).
type Storage struct {
	// Driver is fs (blobs under the data directory) or s3 (S3-compatible object storage).
	Driver string `yaml:"driver"`
	S3     S3     `yaml:"s3"`
}

// S3 configures the s3 storage driver.
type S3 struct {
	Bucket string `yaml:"bucket"`
	// Prefix is prepended to every key berth writes, so that one bucket can hold several things.
	Prefix string `yaml:"prefix"`
	Region string `yaml:"region"`
	// Endpoint is the URL of an S3-compatible server (MinIO, versitygw, Ceph, R2...); empty for
	// AWS, whose endpoint follows from Region.
	Endpoint string `yaml:"endpoint"`
	// PathStyle addresses the bucket as ENDPOINT/BUCKET/KEY rather than BUCKET.ENDPOINT/KEY, as
	// most S3-compatible servers want.
	PathStyle bool `yaml:"path_style"`
	// AccessKeyFile and SecretKeyFile hold static credentials. Without them, credentials come
	// from the AWS default chain: environment, shared config files, the ECS task role or the EC2
	// instance role.
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// SSE is the server-side encryption the bucket applies to what berth writes: none, AES256
	// or aws:kms (with KMSKeyID, or the bucket's default KMS key when empty).
	SSE      string `yaml:"sse"`
	KMSKeyID string `yaml:"kms_key_id"`
	// PartSize is the size of the parts of multipart uploads, at least 5 MiB (S3's minimum).
	PartSize int64 `yaml:"part_size"`
	// Redirect answers blob GETs with a 307 to a presigned URL valid for RedirectTTL, as ECR
	// does, so that blob bytes go from the bucket to the client without passing through berth.
	// Off by default; it cannot be combined with berth's own encryption at rest (the bucket
	// holds ciphertext that only berth can read).
	Redirect    bool          `yaml:"redirect"`
	RedirectTTL time.Duration `yaml:"redirect_ttl"`
}

// Metadata chooses where metadata (repositories, manifests, tags, accounts) lives. The default is
// an embedded SQLite database in the data directory.
type Metadata struct {
	// Driver is sqlite (embedded, one process) or postgres (shared by replicas).
	Driver string `yaml:"driver"`
	// DSNEnv names the environment variable holding the PostgreSQL connection string
	// (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...), DSNFile a file holding it; one of the
	// two with postgres, so that the password stays out of the configuration file.
	DSNEnv  string `yaml:"dsn_env"`
	DSNFile string `yaml:"dsn_file"`
	// MemoryCache is how many bytes of memory keep manifests that were pulled, so that pulling
	// them again costs no database query; 0 turns it off. With postgres, replicas keep each
	// other's exact through the database's notifications (internal/metadata/hot).
	MemoryCache int64 `yaml:"memory_cache"`
}

// DefaultMetadataMemoryCache is the default of metadata.memory_cache: 64 MiB.
const DefaultMetadataMemoryCache = 64 << 20

// Defaults of the backends.
const (
	MinPartSize        = 5 << 20
	DefaultPartSize    = 16 << 20
	DefaultRedirectTTL = 5 * time.Minute
	// maxRedirectTTL is what a presigned URL signed with temporary credentials can last at most.
	maxRedirectTTL = 12 * time.Hour
)

func defaultStorage() Storage {
	return Storage{Driver: "fs", S3: S3{SSE: "none", PartSize: DefaultPartSize, RedirectTTL: DefaultRedirectTTL}}
}

func defaultMetadata() Metadata {
	return Metadata{Driver: "sqlite", MemoryCache: DefaultMetadataMemoryCache}
}

func (s Storage) validate(encrypted bool) error {
	var errs []error
	switch s.Driver {
	case "fs":
	case "s3":
		c := s.S3
		if c.Bucket == "" {
			errs = append(errs, errors.New("storage.s3.bucket: required with driver s3"))
		}
		if c.Region == "" && c.Endpoint == "" {
			errs = append(errs, errors.New("storage.s3.region: required with driver s3 (or an endpoint for an S3-compatible server)"))
		}
		if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
			errs = append(errs, fmt.Errorf("storage.s3.endpoint %q: want an http:// or https:// URL", c.Endpoint))
		}
		if strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "//") || strings.Contains(c.Prefix, "..") {
			errs = append(errs, fmt.Errorf("storage.s3.prefix %q: want a relative key prefix without empty or '..' parts", c.Prefix))
		}
		if (c.AccessKeyFile == "") != (c.SecretKeyFile == "") {
			errs = append(errs, errors.New("storage.s3: access_key_file and secret_key_file go together (or neither, for the AWS default credential chain)"))
		}
		switch c.SSE {
		case "none", "AES256":
			if c.KMSKeyID != "" {
				errs = append(errs, fmt.Errorf("storage.s3.kms_key_id: only with sse aws:kms, not %q", c.SSE))
			}
		case "aws:kms":
		default:
			errs = append(errs, fmt.Errorf("storage.s3.sse %q: want none, AES256 or aws:kms", c.SSE))
		}
		if c.PartSize < MinPartSize {
			errs = append(errs, fmt.Errorf("storage.s3.part_size %d: at least %d (5 MiB, S3's smallest part)", c.PartSize, MinPartSize))
		}
		if c.Redirect && encrypted {
			errs = append(errs, errors.New("storage.s3.redirect: cannot be combined with encryption (the bucket holds ciphertext only berth can read); use sse for encryption by the bucket"))
		}
		if c.RedirectTTL < time.Second || c.RedirectTTL > maxRedirectTTL {
			errs = append(errs, fmt.Errorf("storage.s3.redirect_ttl %s: between 1s and %s", c.RedirectTTL, maxRedirectTTL))
		}
	default:
		errs = append(errs, fmt.Errorf("storage.driver %q: want fs or s3", s.Driver))
	}
	return errors.Join(errs...)
}

func (m Metadata) validate() error {
	switch m.Driver {
	case "sqlite":
		if m.DSNEnv != "" || m.DSNFile != "" {
			return errors.New("metadata: dsn_env and dsn_file are for driver postgres; sqlite lives in the data directory")
		}
	case "postgres":
		if (m.DSNEnv == "") == (m.DSNFile == "") {
			return errors.New("metadata: driver postgres needs exactly one of dsn_env (an environment variable's name) and dsn_file")
		}
	default:
		return fmt.Errorf("metadata.driver %q: want sqlite or postgres", m.Driver)
	}
	return nil
}

// Shared reports whether other berth processes (replicas) may write the same metadata store, so
// that nothing a process remembers of it is exact: PostgreSQL. The embedded SQLite database has
// one berth serving it.
func (m Metadata) Shared() bool { return m.Driver == "postgres" }

// DSN returns the PostgreSQL connection string from the environment variable or file m names.
func (m Metadata) DSN() (string, error) {
	if m.DSNEnv != "" {
		v := os.Getenv(m.DSNEnv)
		if v == "" {
			return "", fmt.Errorf("metadata.dsn_env: the environment variable %s is empty or unset", m.DSNEnv)
		}
		return v, nil
	}
	b, err := os.ReadFile(m.DSNFile)
	if err != nil {
		return "", fmt.Errorf("metadata.dsn_file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("metadata.dsn_file %s: empty", m.DSNFile)
	}
	return v, nil
}

// Credentials returns the static credentials the files of c hold, or empty strings when none are
// configured (the AWS default chain applies).
func (c S3) Credentials() (accessKey, secretKey string, err error) {
	if c.AccessKeyFile == "" {
		return "", "", nil
	}
	read := func(key, f string) (string, error) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("storage.s3.%s: %w", key, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("storage.s3.%s %s: empty", key, f)
		}
		return v, nil
	}
	if accessKey, err = read("access_key_file", c.AccessKeyFile); err != nil {
		return "", "", err
	}
	if secretKey, err = read("secret_key_file", c.SecretKeyFile); err != nil {
		return "", "", err
	}
	return accessKey, secretKey, nil
}
