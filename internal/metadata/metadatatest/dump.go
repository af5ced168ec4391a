package metadatatest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Full is a store with everything a migration moves.
type Full interface {
	metadata.Store
	metadata.Accounts
	metadata.Dumper
}

// FillAll stores one of every kind of row a migration moves (more than Fill: an index and its
// children, a cached repository with declared blobs and a checked tag, a reserved blob, accounts
// of both kinds, one that expires, grants, a refresh token, a setting with bytes that are not
// text), through the API, as berth serve would have.
func FillAll(t *testing.T, s Full) {
	t.Helper()
	ctx := context.Background()
	m := Fill(t, s)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.DeleteUpload(ctx, "upload-1")) // sessions are in flight: not moved
	index := &metadata.NewManifest{
		Manifest: metadata.Manifest{Digest: digest.FromString("index"), MediaType: oci.MediaTypeImageIndex,
			Content: []byte(`{"manifests":[]}`)},
		Children: []oci.Digest{m.Digest},
	}
	must(s.PutManifest(ctx, "library/app", index, "multi", "v1"))
	must(s.LinkBlob(ctx, "other/fork", digest.FromString("config"), 6))
	cached := &metadata.NewManifest{
		Manifest: metadata.Manifest{Digest: digest.FromString("cached"), MediaType: oci.MediaTypeImageManifest,
			Content: []byte("cached \x00 bytes")},
		Expected: []metadata.BlobRef{{Digest: digest.FromString("layer"), Size: 1 << 40}},
	}
	must(s.PutManifest(ctx, "hub/library/nginx", cached, "1.27"))
	must(s.SetTagChecked(ctx, "hub/library/nginx", "1.27", time.Unix(1700000000, 123456789)))
	must(s.RecordPulls(ctx, []metadata.Pull{{Repo: "hub/library/nginx", Digest: cached.Digest, At: time.Unix(1700000100, 123456000), Count: 42}}))
	must(s.ReserveBlob(ctx, digest.FromString("being pushed")))
	must(s.CreateAccount(ctx, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "$argon2id$x",
		Groups: []string{"devs", "ops"}, Description: "Alice"}))
	must(s.CreateAccount(ctx, &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "sha256:y",
		Expires: time.Unix(1900000000, 5000)}))
	must(s.CreateAccount(ctx, &metadata.Account{Name: "bob", Kind: metadata.KindUser, Secret: "$argon2id$z"}))
	must(s.AddGrant(ctx, metadata.Grant{Subject: "group:devs", Pattern: "library/*", Actions: []string{"pull", "push"}}))
	must(s.AddGrant(ctx, metadata.Grant{Subject: "anonymous", Pattern: "hub/**", Actions: []string{"pull"}}))
	must(s.CreateRefreshToken(ctx, "hash-1", "alice", time.Unix(4102444800, 0)))
	must(s.SetSetting(ctx, "signing-key", []byte{0, 1, 2, 0xff, 0xfe}))
}

// Dumped is every row of s, table by table, times to the microsecond in UTC (what every backend
// keeps), rows sorted: two stores with the same content give the same Dumped.
func Dumped(t *testing.T, s metadata.Dumper) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tb := range metadata.Tables {
		rows := []string{}
		err := s.Dump(context.Background(), tb, func(row []any) error {
			var b strings.Builder
			for i, v := range row {
				switch x := v.(type) {
				case time.Time:
					if !x.IsZero() {
						v = x.Truncate(time.Microsecond).UTC().Format(time.RFC3339Nano)
					}
				case *int64:
					if x != nil {
						v = *x
					}
				case *string:
					if x != nil {
						v = *x
					}
				}
				fmt.Fprintf(&b, "%s=%q ", tb.Columns[i].Name, fmt.Sprint(v))
			}
			rows = append(rows, b.String())
			return nil
		})
		if err != nil {
			t.Fatalf("Dump(%s): %v", tb.Name, err)
		}
		slices.Sort(rows)
		out[tb.Name] = rows
	}
	return out
}

// DiffDumps lists the rows that are in one of two Dumped and not in the other; "" if none.
func DiffDumps(want, got map[string][]string) string {
	var b strings.Builder
	for _, tb := range metadata.Tables {
		for _, r := range want[tb.Name] {
			if !slices.Contains(got[tb.Name], r) {
				fmt.Fprintf(&b, "%s: missing %s\n", tb.Name, r)
			}
		}
		for _, r := range got[tb.Name] {
			if !slices.Contains(want[tb.Name], r) {
				fmt.Fprintf(&b, "%s: extra %s\n", tb.Name, r)
			}
		}
	}
	return b.String()
}

// Copy moves every table of src into dst, in batches of n rows.
func Copy(t *testing.T, src, dst metadata.Dumper, n int) {
	t.Helper()
	ctx := context.Background()
	for _, tb := range metadata.Tables {
		var batch [][]any
		flush := func() error {
			err := dst.Load(ctx, tb, batch)
			batch = batch[:0]
			return err
		}
		err := src.Dump(ctx, tb, func(row []any) error {
			if batch = append(batch, row); len(batch) == n {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			t.Fatalf("copy %s: %v", tb.Name, err)
		}
	}
}

// RunDump checks that a store's tables move into another store of the same backend whole:
// every row, every value, and that moving them again changes nothing.
func RunDump(t *testing.T, open func(t *testing.T) Full) {
	src, dst := open(t), open(t)
	FillAll(t, src)
	want := Dumped(t, src)
	for _, tb := range metadata.Tables {
		if len(want[tb.Name]) == 0 {
			t.Errorf("FillAll left table %s empty: the test would not see it moved", tb.Name)
		}
	}
	Copy(t, src, dst, 3)
	if diff := DiffDumps(want, Dumped(t, dst)); diff != "" {
		t.Errorf("the copy differs:\n%s", diff)
	}
	Copy(t, src, dst, 100) // a migration run again
	if diff := DiffDumps(want, Dumped(t, dst)); diff != "" {
		t.Errorf("copying again changed the copy:\n%s", diff)
	}
	for _, tb := range metadata.Tables {
		n, err := dst.Count(context.Background(), tb)
		if err != nil || n != int64(len(want[tb.Name])) {
			t.Errorf("Count(%s) = %d, %v; want %d", tb.Name, n, err, len(want[tb.Name]))
		}
	}
	// And the copy works as a store: what the API reads back is there.
	CheckAll(t, dst)
}

// CheckAll verifies through the API what FillAll stored.
func CheckAll(t *testing.T, s Full) {
	t.Helper()
	ctx := context.Background()
	m, err := s.GetManifest(ctx, "library/app", "latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, "library/app", m.Digest); err == nil {
		t.Error("the index's child could be deleted: its reference was not moved")
	}
	if size, err := s.ExpectedBlob(ctx, "hub/library/nginx", digest.FromString("layer")); err != nil || size != 1<<40 {
		t.Errorf("ExpectedBlob = %d, %v", size, err)
	}
	if a, err := s.Account(ctx, "alice"); err != nil || !slices.Equal(a.Groups, []string{"devs", "ops"}) {
		t.Errorf("Account(alice) = %+v, %v", a, err)
	}
	if a, err := s.Account(ctx, "ci"); err != nil || a.Expires.Unix() != 1900000000 {
		t.Errorf("Account(ci) = %+v, %v", a, err)
	}
	if name, err := s.RefreshToken(ctx, "hash-1"); err != nil || name != "alice" {
		t.Errorf("RefreshToken = %q, %v", name, err)
	}
	if v, err := s.Setting(ctx, "signing-key"); err != nil || string(v) != "\x00\x01\x02\xff\xfe" {
		t.Errorf("Setting = %q, %v", v, err)
	}
	if rec, err := s.Blob(ctx, digest.FromString("config")); err != nil || rec.Links != 2 || rec.Manifests != 1 {
		t.Errorf("Blob(config) = %+v, %v", rec, err)
	}
}

// CheckCovered fails for every column of the backend's schema (table, column pairs) that a
// migration does not move: neither in metadata.Tables (under the name stored gives the column of
// table) nor in one of the tables that are only in flight (notMoved), nor a repository's own id.
// So a migration that adds a column without adding it to metadata.Tables fails here.
func CheckCovered(t *testing.T, schema [][2]string, stored func(table string, i int, c metadata.Column) string, notMoved ...string) {
	t.Helper()
	moved := map[string][]string{}
	for _, tb := range metadata.Tables {
		for i, c := range tb.Columns {
			moved[tb.Name] = append(moved[tb.Name], stored(tb.Name, i, c))
		}
	}
	if len(schema) == 0 {
		t.Fatal("the schema has no columns: the test would not see any")
	}
	for _, tc := range schema {
		table, col := tc[0], tc[1]
		if slices.Contains(notMoved, table) || table == "repositories" && col == "id" {
			continue
		}
		if !slices.Contains(moved[table], col) {
			t.Errorf("column %s.%s is not in metadata.Tables: a migration would lose it", table, col)
		}
	}
}
