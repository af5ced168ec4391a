package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/metadatatest"
	"github.com/berth/berth/internal/metadata/postgres"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/migrate"
	"github.com/berth/berth/internal/storage"
	"github.com/berth/berth/internal/storage/fs"
	"github.com/berth/berth/internal/storage/s3"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

var ctx = context.Background()

type installation struct {
	dir   string
	blobs *fs.Store
	meta  *sqlite.Store
}

// embedded returns an embedded installation (filesystem + SQLite) holding one of everything
// (metadatatest.FillAll) with the bytes of its blobs, and a big blob of several S3 parts.
func embedded(t *testing.T) installation {
	t.Helper()
	dir := t.TempDir()
	blobs, err := fs.New(dir) // the data directory, as berth serve has it
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlite.Open(ctx, filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	metadatatest.FillAll(t, meta)
	// FillAll links blob "config"; its bytes are the six letters.
	if _, err := blobs.Put(ctx, digest.FromString("config"), strings.NewReader("config")); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	d := digest.FromBytes(big)
	if _, err := blobs.Put(ctx, d, bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if err := meta.LinkBlob(ctx, "library/big", d, int64(len(big))); err != nil {
		t.Fatal(err)
	}
	return installation{dir, blobs, meta}
}

// shared returns empty S3 + PostgreSQL backends.
func shared(t *testing.T) (*s3.Store, *postgres.Store) {
	t.Helper()
	srv := enginetest.S3(t)
	blobs, err := s3.New(ctx, s3.Options{Bucket: srv.Bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := postgres.Open(ctx, enginetest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	return blobs, meta
}

var quiet = slog.New(slog.DiscardHandler)

func TestMigrate(t *testing.T) {
	src := embedded(t)
	blobs, meta := shared(t)
	rep, err := migrate.Run(ctx, migrate.Side{Blobs: src.blobs, Meta: src.meta}, migrate.Side{Blobs: blobs, Meta: meta}, quiet)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Blobs != 2 || rep.BlobsCopied != 2 || rep.BlobsPresent != 0 || rep.BytesCopied != 6+8<<20 {
		t.Errorf("report %+v; want 2 blobs copied, %d bytes", rep, 6+8<<20)
	}
	if len(rep.Tables) != len(metadata.Tables) {
		t.Errorf("report counts %d tables, want %d", len(rep.Tables), len(metadata.Tables))
	}
	if diff := metadatatest.DiffDumps(metadatatest.Dumped(t, src.meta), metadatatest.Dumped(t, meta)); diff != "" {
		t.Errorf("the target's metadata differs from the source's:\n%s", diff)
	}
	metadatatest.CheckAll(t, meta)
	for _, d := range []digest.Digest{digest.FromString("config")} {
		r, _, err := blobs.Open(ctx, d)
		if err != nil {
			t.Fatalf("the target does not hold %s: %v", d, err)
		}
		r.Close()
	}

	// Again (a migration that stopped and is run again): nothing copied twice, nothing changed.
	rep, err = migrate.Run(ctx, migrate.Side{Blobs: src.blobs, Meta: src.meta}, migrate.Side{Blobs: blobs, Meta: meta}, quiet)
	if err != nil {
		t.Fatalf("Run again: %v", err)
	}
	if rep.BlobsCopied != 0 || rep.BlobsPresent != 2 {
		t.Errorf("second run %+v; want every blob there already", rep)
	}
	if diff := metadatatest.DiffDumps(metadatatest.Dumped(t, src.meta), metadatatest.Dumped(t, meta)); diff != "" {
		t.Errorf("the second run changed the target:\n%s", diff)
	}
}

// A source whose blob store lacks or garbles a blob its metadata links moves no metadata: the
// target never links bytes it does not hold.
func TestMigrateBrokenSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, dir string, d digest.Digest)
		want    string
	}{
		{"missing", func(t *testing.T, dir string, d digest.Digest) {
			if err := os.Remove(filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())); err != nil {
				t.Fatal(err)
			}
		}, "not in its blob store"},
		{"garbled", func(t *testing.T, dir string, d digest.Digest) {
			if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded()), []byte("CONFIG"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := embedded(t)
			d := digest.FromString("config")
			tc.breakIt(t, src.dir, d)
			blobs, meta := shared(t)
			_, err := migrate.Run(ctx, migrate.Side{Blobs: src.blobs, Meta: src.meta}, migrate.Side{Blobs: blobs, Meta: meta}, quiet)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), d.String()) {
				t.Fatalf("Run: %v; want an error naming %s (%q)", err, d, tc.want)
			}
			for _, tb := range metadata.Tables {
				if n, err := meta.Count(ctx, tb); err != nil || n != 0 {
					t.Errorf("%s: %d rows in the target (%v); want none", tb.Name, n, err)
				}
			}
			if _, err := blobs.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("the target holds the broken blob: %v", err)
			}
		})
	}
}

// A target that held other data is not taken for a finished migration.
func TestMigrateTargetNotEmpty(t *testing.T) {
	src := embedded(t)
	blobs, meta := shared(t)
	if err := meta.LinkBlob(ctx, "someone/else", digest.FromString("x"), 1); err != nil {
		t.Fatal(err)
	}
	_, err := migrate.Run(ctx, migrate.Side{Blobs: src.blobs, Meta: src.meta}, migrate.Side{Blobs: blobs, Meta: meta}, quiet)
	if err == nil || !strings.Contains(err.Error(), "repositories: 4 in the source, 5 in the target") {
		t.Fatalf("Run into a target with other data: %v; want the counts compared", err)
	}
}
