package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/metadatatest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func openAt(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// open returns a store on a new, empty database.
func open(t *testing.T) *Store {
	s := openAt(t, enginetest.Postgres(t))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	t.Run("Store", func(t *testing.T) {
		metadatatest.Run(t, func(t *testing.T) metadata.Store { return open(t) })
	})
	t.Run("Accounts", func(t *testing.T) {
		metadatatest.RunAccounts(t, func(t *testing.T) metadata.Accounts { return open(t) })
	})
	t.Run("Leases", func(t *testing.T) {
		metadatatest.RunLeases(t, func(t *testing.T) metadata.Leases { return open(t) })
	})
	t.Run("Dump", func(t *testing.T) {
		metadatatest.RunDump(t, func(t *testing.T) metadatatest.Full { return open(t) })
	})
	t.Run("Throttles", func(t *testing.T) {
		metadatatest.RunThrottles(t, func(t *testing.T) metadata.Throttles { return open(t) })
	})
}

// fill stores one of everything, an account too.
func fill(t *testing.T, s *Store) *metadata.NewManifest {
	t.Helper()
	m := metadatatest.Fill(t, s)
	if err := s.CreateAccount(context.Background(), &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "x"}); err != nil {
		t.Fatal(err)
	}
	return m
}

// check verifies what fill stored.
func check(t *testing.T, s *Store, m *metadata.NewManifest) {
	t.Helper()
	metadatatest.Check(t, s, m)
	if n, err := s.CountAccounts(context.Background()); err != nil || n != 1 {
		t.Errorf("CountAccounts = %d, %v", n, err)
	}
}

// versions returns the rows of schema_migrations.
func versions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func wantVersions(t *testing.T, s *Store) {
	t.Helper()
	list, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	got := versions(t, s)
	if len(got) != len(list) {
		t.Fatalf("schema_migrations = %v, want one row for each of %v", got, list)
	}
	for i, m := range list {
		if got[i] != m.version {
			t.Errorf("schema_migrations = %v, want %v", got, list)
		}
	}
}

// Replicas that start at the same time on a new database all open it; one of them migrates.
func TestConcurrentOpen(t *testing.T) {
	dsn := enginetest.Postgres(t)
	const n = 8
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(context.Background(), dsn)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		} else {
			t.Cleanup(func() { stores[i].Close() })
		}
	}
	if t.Failed() {
		return
	}
	wantVersions(t, stores[0])
	// Each sees the others' writes.
	m := fill(t, stores[n-1])
	for _, s := range stores {
		check(t, s, m)
	}
}

func TestReopen(t *testing.T) {
	dsn := enginetest.Postgres(t)
	s := openAt(t, dsn)
	m := fill(t, s)
	s.Close()
	for range 3 {
		s = openAt(t, dsn)
		check(t, s, m)
		wantVersions(t, s)
		s.Close()
	}
}

// Migrating a migrated database again changes nothing and fails on nothing.
func TestMigrationsIdempotent(t *testing.T) {
	s := open(t)
	m := fill(t, s)
	for range 3 {
		if err := migrate(context.Background(), s.pool); err != nil {
			t.Fatalf("migrate again: %v", err)
		}
	}
	wantVersions(t, s)
	check(t, s, m)
}

// A database from a newer berth (a migration this one does not know) is left alone.
func TestNewerDatabase(t *testing.T) {
	dsn := enginetest.Postgres(t)
	s := openAt(t, dsn)
	m := fill(t, s)
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO schema_migrations (version) VALUES (1000)`); err != nil {
		t.Fatal(err)
	}
	want := versions(t, s)
	s.Close()
	s = openAt(t, dsn)
	defer s.Close()
	check(t, s, m)
	if got := versions(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("schema_migrations = %v, want %v", got, want)
	}
}

// A DSN that names no server fails Open, in bounded time.
func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, "postgres://nobody:secret@127.0.0.1:1/none?sslmode=disable&connect_timeout=5")
	if err == nil {
		s.Close()
		t.Fatal("Open of an unreachable server succeeded")
	}
	if ctx.Err() != nil {
		t.Errorf("Open took until the deadline: %v", err)
	}
}

// Times are stored to the microsecond, rounded up.
func TestCeilMicro(t *testing.T) {
	base := time.Unix(1700000000, 0)
	for _, c := range []struct{ in, want time.Duration }{
		{0, 0}, {1, time.Microsecond}, {999, time.Microsecond}, {1000, time.Microsecond},
		{1001, 2 * time.Microsecond}, {time.Second - 1, time.Second},
	} {
		if got := ceilMicro(base.Add(c.in)); !got.Equal(base.Add(c.want)) {
			t.Errorf("ceilMicro(+%v) = +%v, want +%v", c.in, got.Sub(base), c.want)
		}
	}
}

// Every column of every table is moved by a migration (metadata.Tables), or the table is one of
// those only in flight.
func TestDumpCoversSchema(t *testing.T) {
	s := open(t)
	rows, err := s.pool.Query(context.Background(), `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var tc [2]string
		err := r.Scan(&tc[0], &tc[1])
		return tc, err
	})
	if err != nil {
		t.Fatal(err)
	}
	metadatatest.CheckCovered(t, schema, func(_ string, i int, c metadata.Column) string {
		_, name, _ := column(c, i+1)
		return name
	}, "uploads", "leases", "auth_version", "schema_migrations", "login_buckets", "login_addresses")
}

// A store listening for account and grant changes hears of those another store commits (once on
// starting to listen, then after each commit), and stops when its context ends. Messages sent
// with Notify arrive too, in the order they were sent.
func TestListen(t *testing.T) {
	dsn := enginetest.Postgres(t)
	listener, writer := openAt(t, dsn), openAt(t, dsn)
	defer listener.Close()
	defer writer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- listener.Listen(ctx, []string{metadata.AuthChannel, "berth_test"},
			func() { heard <- "ready" },
			func(channel, payload string) { heard <- channel + ":" + payload })
	}()
	wait := func(what, want string) {
		t.Helper()
		select {
		case got := <-heard:
			if got != want {
				t.Fatalf("%s: heard %q, want %q", what, got, want)
			}
		case err := <-done:
			t.Fatalf("%s: Listen returned %v", what, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not heard", what)
		}
	}
	wait("starting to listen", "ready")
	if err := writer.AddGrant(context.Background(), metadata.Grant{Subject: "anonymous", Pattern: "x/*", Actions: []string{"pull"}}); err != nil {
		t.Fatal(err)
	}
	wait("a grant added", metadata.AuthChannel+":")
	if err := writer.CreateAccount(context.Background(), &metadata.Account{Name: "bob", Kind: metadata.KindUser, Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	wait("an account created", metadata.AuthChannel+":")
	for _, m := range []string{"one", "two", "three"} {
		if err := writer.Notify(context.Background(), "berth_test", m); err != nil {
			t.Fatal(err)
		}
	}
	wait("Notify", "berth_test:one")
	wait("Notify", "berth_test:two")
	wait("Notify", "berth_test:three")
	if err := writer.Notify(context.Background(), "berth_test", strings.Repeat("x", metadata.MaxPayload+1)); err == nil {
		t.Error("Notify sent a message longer than MaxPayload")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Listen after its context ended: %v", err)
	}
}
