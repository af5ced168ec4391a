package postgres

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
)

// A database that cannot be reached is metadata.ErrUnavailable (the registry answers 503 and
// /readyz fails), on reads and writes; once it is back, the store works again.
func TestUnavailable(t *testing.T) {
	dsn := enginetest.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	f := enginetest.Forward(t, u.Host)
	u.Host = f.Addr()
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	s := openAt(t, u.String())
	defer s.Close()
	m := fill(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	f.Cut()
	for what, op := range map[string]func() error{
		"Ping":         func() error { return s.Ping(ctx) },
		"BlobSize":     func() error { _, err := s.BlobSize(ctx, "library/app", digest.FromString("config")); return err },
		"GetManifest":  func() error { _, err := s.GetManifest(ctx, "library/app", "latest"); return err },
		"Tags":         func() error { _, _, err := s.Tags(ctx, "library/app", metadata.Page{N: -1}); return err },
		"LinkBlob":     func() error { return s.LinkBlob(ctx, "library/app", digest.FromString("new"), 3) },
		"PutManifest":  func() error { return s.PutManifest(ctx, "library/app", m, "again") },
		"CreateUpload": func() error { return s.CreateUpload(ctx, "library/app", "upload-2") },
		"Account":      func() error { _, err := s.Account(ctx, "alice"); return err },
		"AcquireLease": func() error { _, err := s.AcquireLease(ctx, "purge", "me", time.Minute); return err },
		"ReserveGuess": func() error {
			_, err := s.ReserveGuess(ctx, []metadata.Budget{{Key: "a:10.0.0.1", Burst: 5, Per: time.Minute}}, time.Now())
			return err
		},
		"KnownAddress": func() error { _, err := s.KnownAddress(ctx, "alice", "10.0.0.1", time.Now()); return err },
	} {
		if err := op(); !errors.Is(err, metadata.ErrUnavailable) {
			t.Errorf("%s with the database unreachable: %v; want ErrUnavailable", what, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the calls took until the deadline")
	}

	f.Start() // the same address again
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping once the database is back: %v", err)
	}
	check(t, s, m)
	if err := s.LinkBlob(ctx, "library/app", digest.FromString("new"), 3); err != nil {
		t.Errorf("LinkBlob once the database is back: %v", err)
	}
}
