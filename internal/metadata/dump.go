package metadata

import "context"

// The content of a store as `berth migrate` moves it from one backend to another: table by table,
// with every value in one Go form whatever the backend keeps (SQLite keeps times as nanoseconds,
// lists as text; PostgreSQL as timestamptz and text[]), and repositories by name, never by the
// id a backend gave them. Upload sessions, leases and login throttles are not moved: they are
// only in flight.

// Kind is the Go form of a column's values.
type Kind int

const (
	Text     Kind = iota // string
	Int                  // int64
	NullInt              // *int64
	NullText             // *string
	Bytes                // []byte
	Time                 // time.Time
	Expiry               // time.Time, the zero time meaning never
	List                 // []string
	Repo                 // string: the name of the repository the row belongs to
)

// Column is a column of a Table.
type Column struct {
	Name string
	Kind Kind
}

// Table is a table as Dumper moves it.
type Table struct {
	Name    string
	Columns []Column
}

// Live reports whether t holds the registry's running records (pull counts, the collector's
// queue), which replicas serving a migration's target change by themselves: a migration run again
// after they served may find other counts there, and does not compare them.
func (t Table) Live() bool { return t.Name == "gc_blob_review" || t.Name == "manifest_pulls" }

func cols(kv ...any) []Column {
	out := make([]Column, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Column{kv[i].(string), kv[i+1].(Kind)})
	}
	return out
}

// BlobsTable is the record of every blob: digest, size (nil while only reserved), touched. A
// migration copies the bytes of those with a size.
var BlobsTable = Table{"blobs", cols("digest", Text, "size", NullInt, "touched", Time)}

// Tables lists the tables that a migration moves, each after those its rows refer to.
var Tables = []Table{
	{"repositories", cols("name", Text, "created", Time)},
	BlobsTable,
	{"gc_blob_review", cols("digest", Text, "since", Time)},
	{"repo_blobs", cols("repo", Repo, "digest", Text, "size", Int)},
	{"manifests", cols("repo", Repo, "digest", Text, "media_type", Text, "artifact_type", Text,
		"subject", NullText, "annotations", NullText, "content", Bytes, "created", Time)},
	{"manifest_blobs", cols("repo", Repo, "manifest", Text, "digest", Text)},
	{"manifest_pulls", cols("repo", Repo, "digest", Text, "last_pulled", Time, "pulls", Int)},
	{"manifest_children", cols("repo", Repo, "parent", Text, "child", Text)},
	{"tags", cols("repo", Repo, "name", Text, "digest", Text, "updated", Time)},
	{"cache_expected", cols("repo", Repo, "digest", Text, "size", Int)},
	{"tag_checks", cols("repo", Repo, "tag", Text, "checked", Time)},
	{"accounts", cols("name", Text, "id", Text, "kind", Text, "secret", Text, "groups", List,
		"description", Text, "expires", Expiry, "created", Time)},
	{"grants", cols("subject", Text, "pattern", Text, "actions", List, "created", Time)},
	{"refresh_tokens", cols("hash", Text, "account", Text, "expires", Time, "created", Time)},
	{"settings", cols("key", Text, "value", Bytes)},
}

// Dumper reads and writes whole tables, for migrations between backends.
type Dumper interface {
	// Dump calls fn with each row of t (one of Tables), its values in the Go forms of the
	// columns' kinds, in one read transaction.
	Dump(ctx context.Context, t Table, fn func(row []any) error) error
	// Load inserts rows of t in one transaction, leaving out those whose key is there already,
	// so that a migration that stopped can run again.
	Load(ctx context.Context, t Table, rows [][]any) error
	// Count returns how many rows t has.
	Count(ctx context.Context, t Table) (int64, error)
}
