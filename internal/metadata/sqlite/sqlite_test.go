package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/metadatatest"
	"github.com/berth/berth/internal/oci"
)

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func open(t *testing.T) metadata.Store {
	s := openAt(t, filepath.Join(t.TempDir(), "metadata.db"))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	metadatatest.Run(t, open)
}

func TestAccountsConformance(t *testing.T) {
	metadatatest.RunAccounts(t, func(t *testing.T) metadata.Accounts { return open(t).(*Store) })
}

func TestLeasesConformance(t *testing.T) {
	metadatatest.RunLeases(t, func(t *testing.T) metadata.Leases { return open(t).(*Store) })
}

func TestDumpConformance(t *testing.T) {
	metadatatest.RunDump(t, func(t *testing.T) metadatatest.Full { return open(t).(*Store) })
}

func TestThrottlesConformance(t *testing.T) {
	metadatatest.RunThrottles(t, func(t *testing.T) metadata.Throttles { return open(t).(*Store) })
}

func fill(t *testing.T, s metadata.Store) *metadata.NewManifest { return metadatatest.Fill(t, s) }

func check(t *testing.T, s metadata.Store, m *metadata.NewManifest) { metadatatest.Check(t, s, m) }

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	s := openAt(t, path)
	m := fill(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s = openAt(t, path)
		check(t, s, m)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Two stores open on one file (a second process, say) see each other's writes.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	a := openAt(t, path)
	defer a.Close()
	b := openAt(t, path)
	defer b.Close()
	m := fill(t, a)
	check(t, b, m)
}

// lastMigration is the number of the newest migration: the user_version of a migrated database
// (branches add migrations with their numbers reserved, so the numbers may have gaps).
func lastMigration(t *testing.T) int {
	t.Helper()
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %v, %v", names, err)
	}
	last := 0
	for _, n := range names {
		v, err := strconv.Atoi(strings.SplitN(filepath.Base(n), "_", 2)[0])
		if err != nil {
			t.Fatalf("migration %s: bad name", n)
		}
		last = max(last, v)
	}
	return last
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	s := openAt(t, path)
	m := fill(t, s)
	if got, want := userVersion(t, s.w), lastMigration(t); got != want {
		t.Errorf("user_version = %d, want %d (the newest migration)", got, want)
	}
	// Migrating a migrated database again changes nothing and fails on nothing.
	for range 3 {
		if err := migrate(ctx, s.w); err != nil {
			t.Fatalf("migrate again: %v", err)
		}
	}
	if got, want := userVersion(t, s.w), lastMigration(t); got != want {
		t.Errorf("user_version after migrating again = %d, want %d", got, want)
	}
	check(t, s, m)
	s.Close()
	s = openAt(t, path)
	defer s.Close()
	check(t, s, m)

	// A fresh database migrated twice by hand works as one opened by Open.
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "bare.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for range 2 {
		if err := migrate(ctx, db); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	if got, want := userVersion(t, db), lastMigration(t); got != want {
		t.Errorf("user_version = %d, want %d", got, want)
	}
}

// A database from a newer berth (a migration this one does not know) is left alone.
func TestNewerDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	s := openAt(t, path)
	m := fill(t, s)
	if _, err := s.w.Exec("PRAGMA user_version = 1000"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openAt(t, path)
	defer s.Close()
	check(t, s, m)
	if got := userVersion(t, s.w); got != 1000 {
		t.Errorf("user_version = %d, want 1000", got)
	}
}

// The data directory is the user's choice: characters that mean something in a URI must not
// change which file is opened, nor lose the pragmas.
func TestPathSpecialCharacters(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"a b", "a#b", "a?b", "a%20b", "a%b", "a&b=c", "ü"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "metadata.db")
			s := openAt(t, path)
			m := fill(t, s)
			var fk int
			if err := s.w.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
				t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
			}
			var mode string
			if err := s.r.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
			s.Close()
			if _, err := os.Stat(path); err != nil {
				t.Errorf("the database is not at %s: %v", path, err)
			}
			entries, _ := os.ReadDir(filepath.Dir(dir))
			for _, e := range entries {
				if e.Name() != name {
					t.Errorf("stray file %q next to %q", e.Name(), name)
				}
			}
			s = openAt(t, path)
			defer s.Close()
			check(t, s, m)
		})
	}
}

// The reader pool must not write.
func TestReadersAreReadOnly(t *testing.T) {
	s := open(t).(*Store)
	_, err := s.r.Exec(`INSERT INTO uploads (id, repo, created) VALUES ('x', 'y', 0)`)
	if err == nil {
		t.Fatal("a reader connection wrote")
	}
	if _, err := s.UploadRepo(context.Background(), "x"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UploadRepo: %v", err)
	}
}

// The default data directory is relative ("./berth-data").
func TestRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, path := range []string{"metadata.db", "./data/metadata.db", "a:b/metadata.db"} {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		s := openAt(t, path)
		m := fill(t, s)
		s.Close()
		if _, err := os.Stat(filepath.Join(dir, path)); err != nil {
			t.Errorf("the database is not at %s: %v", path, err)
		}
		s = openAt(t, path)
		check(t, s, m)
		s.Close()
	}
}

// Manifests stored before migration 005 get their declared blobs recorded from their content, so
// that the pull-through cache treats their blobs as part of an upstream image after an upgrade.
func TestMigration005Backfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	s := openAt(t, path)
	layer, cfg := digest.FromString("layer"), digest.FromString("config")
	content := `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageManifest + `","config":{"mediaType":"c","digest":"` + cfg.String() +
		`","size":7},"layers":[{"mediaType":"l","digest":"` + layer.String() + `","size":1234}]}`
	// As a database of version 4 had it: no table of declared blobs, a manifest stored.
	for _, q := range []string{
		`DROP INDEX repo_blobs_digest`, `DROP TABLE cache_expected`,
		// and none of what later migrations add
		`DROP TABLE gc_blob_review`, `DROP TABLE manifest_pulls`, `DROP TABLE manifest_children`, `DROP TABLE manifest_blobs`, `DROP TABLE blobs`,
		`DROP TABLE leases`, `DROP TRIGGER accounts_insert`, `DROP TRIGGER accounts_update`, `DROP TRIGGER accounts_delete`,
		`DROP TRIGGER grants_insert`, `DROP TRIGGER grants_update`, `DROP TRIGGER grants_delete`, `DROP TABLE auth_version`,
		`DROP TABLE login_buckets`, `DROP TABLE login_addresses`,
		`INSERT INTO repositories (name, created) VALUES ('docker-hub/library/app', 0)`,
		`INSERT INTO manifests (repo_id, digest, media_type, artifact_type, content, created)
		 VALUES ((SELECT id FROM repositories WHERE name = 'docker-hub/library/app'), 'sha256:x', '` + oci.MediaTypeImageManifest + `', '', CAST('` + content + `' AS BLOB), 0)`,
		`INSERT INTO manifests (repo_id, digest, media_type, artifact_type, content, created)
		 VALUES ((SELECT id FROM repositories WHERE name = 'docker-hub/library/app'), 'sha256:y', 'x', '', CAST('not json' AS BLOB), 0)`,
		`PRAGMA user_version = 4`,
	} {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close()
	s = openAt(t, path)
	defer s.Close()
	for d, want := range map[oci.Digest]int64{layer: 1234, cfg: 7} {
		if size, err := s.ExpectedBlob(ctx, "docker-hub/library/app", d); err != nil || size != want {
			t.Errorf("ExpectedBlob(%s) after the migration = %d, %v; want %d", d, size, err, want)
		}
	}
}

// Manifests pushed before migration 009 get the references the database now keeps, read from
// their content: the blobs they reference are recorded and stay referenced, an index keeps its
// children. The pull-through cache's repositories keep none (as from then on).
func TestMigration009Backfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	s := openAt(t, path)
	layer, cfg, foreign, absent := digest.FromString("layer"), digest.FromString("config"), digest.FromString("foreign"), digest.FromString("absent")
	desc := func(d digest.Digest, size int) string {
		return fmt.Sprintf(`{"mediaType":"x","digest":%q,"size":%d}`, d, size)
	}
	image := `{"schemaVersion":2,"config":` + desc(cfg, 7) + `,"layers":[` + desc(layer, 5) + `,` + desc(foreign, 9) + `]}`
	imageDigest := digest.FromString(image)
	index := `{"schemaVersion":2,"manifests":[` + desc(imageDigest, len(image)) + `,` + desc(absent, 3) + `,"odd"]}`
	indexDigest := digest.FromString(index)
	manifest := func(repo, d, content string) string {
		return fmt.Sprintf(`INSERT INTO manifests (repo_id, digest, media_type, artifact_type, content, created)
			VALUES ((SELECT id FROM repositories WHERE name = '%s'), '%s', 'm', '', CAST('%s' AS BLOB), 0)`, repo, d, content)
	}
	link := func(repo string, d digest.Digest) string {
		return fmt.Sprintf(`INSERT INTO repo_blobs (repo_id, digest, size)
			VALUES ((SELECT id FROM repositories WHERE name = '%s'), '%s', 1)`, repo, d)
	}
	// As a database of version 8 had it: no blob records, no references, links without a key.
	for _, q := range []string{
		`DROP TABLE gc_blob_review`, `DROP TABLE manifest_pulls`, `DROP INDEX cache_expected_digest`, `DROP TABLE manifest_children`, `DROP TABLE manifest_blobs`,
		`CREATE TABLE rb (repo_id INTEGER NOT NULL REFERENCES repositories (id), digest TEXT NOT NULL,
			size INTEGER NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID`,
		`DROP TABLE repo_blobs`, `ALTER TABLE rb RENAME TO repo_blobs`, `CREATE INDEX repo_blobs_digest ON repo_blobs (digest)`,
		`DROP TABLE blobs`,
		`INSERT INTO repositories (name, created) VALUES ('app', 0), ('hub/app', 0)`,
		link("app", cfg), link("app", layer), link("hub/app", layer),
		manifest("app", imageDigest.String(), image), manifest("app", indexDigest.String(), index),
		manifest("app", "sha256:notjson", "not json"),
		manifest("hub/app", imageDigest.String(), image),
		`INSERT INTO cache_expected (repo_id, digest, size) VALUES ((SELECT id FROM repositories WHERE name = 'hub/app'), '` + layer.String() + `', 5)`,
		`PRAGMA user_version = 8`,
	} {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close()
	s = openAt(t, path)
	defer s.Close()
	for d, want := range map[digest.Digest][2]int{layer: {2, 1}, cfg: {1, 1}} {
		rec, err := s.Blob(ctx, d)
		if err != nil || rec.Links != want[0] || rec.Manifests != want[1] || rec.Size != 1 {
			t.Errorf("Blob(%s) after the migration = %+v, %v; want size 1, %d links, %d manifests", d, rec, err, want[0], want[1])
		}
	}
	for _, d := range []digest.Digest{foreign, absent} {
		if rec, err := s.Blob(ctx, d); !errors.Is(err, metadata.ErrNotFound) {
			t.Errorf("Blob(%s) of a blob never stored = %+v, %v; want ErrNotFound", d, rec, err)
		}
	}
	if err := s.DeleteManifest(ctx, "app", imageDigest); !errors.Is(err, metadata.ErrReferenced) {
		t.Errorf("DeleteManifest of a child of an index pushed before the migration: %v; want ErrReferenced", err)
	}
	if err := s.DeleteManifest(ctx, "hub/app", imageDigest); err != nil {
		t.Errorf("DeleteManifest in the cache: %v", err)
	}
	for _, d := range []digest.Digest{indexDigest, imageDigest} {
		if err := s.DeleteManifest(ctx, "app", d); err != nil {
			t.Errorf("DeleteManifest(%s): %v", d, err)
		}
	}
	if rec, err := s.Blob(ctx, layer); err != nil || rec.Manifests != 0 {
		t.Errorf("Blob(layer) after its manifest was deleted = %+v, %v; want no manifests", rec, err)
	}
}

// Every column of every table is moved by a migration (metadata.Tables), or the table is one of
// those only in flight.
func TestDumpCoversSchema(t *testing.T) {
	s := open(t).(*Store)
	rows, err := s.r.Query(`SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var schema [][2]string
	for rows.Next() {
		var tc [2]string
		if err := rows.Scan(&tc[0], &tc[1]); err != nil {
			t.Fatal(err)
		}
		schema = append(schema, tc)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	metadatatest.CheckCovered(t, schema, func(table string, _ int, c metadata.Column) string {
		_, name, _ := column(table, c)
		return name
	}, "uploads", "leases", "auth_version", "login_buckets", "login_addresses")
}
