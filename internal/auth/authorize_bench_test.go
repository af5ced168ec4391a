package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
)

// BenchmarkAuthorizeBearer is the cost authentication adds to every request with a token: a
// verified-token cache hit and the check against the current grants.
func BenchmarkAuthorizeBearer(b *testing.B) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := New(ctx, Options{Accounts: st})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.CreateAccount(ctx, &metadata.Account{Name: "a", Kind: metadata.KindUser, Secret: "$sha256$00"}); err != nil {
		b.Fatal(err)
	}
	if err := st.AddGrant(ctx, metadata.Grant{Subject: "user:a", Pattern: "bench/*", Actions: []string{"pull"}}); err != nil {
		b.Fatal(err)
	}
	a, err := st.Account(ctx, "a")
	if err != nil {
		b.Fatal(err)
	}
	tok, err := s.tokens.issue(ctx, "user:a", a.ID, Scope{Repos: map[string]Actions{"bench/small": Pull}}, time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/v2/bench/small/manifests/latest", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Authorize(r, "bench/small", "bench/small", Pull); err != nil {
			b.Fatal(err)
		}
	}
}
