package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Dumper = (*Store)(nil)

// column returns the SQL that selects column c of table t (aliased t) in its Go form's shape, the
// name it is stored under, and the SQL of its value in an insert.
func column(t string, c metadata.Column) (sel, name, ins string) {
	switch {
	case c.Kind == metadata.Repo:
		return "(SELECT name FROM repositories WHERE id = t.repo_id)", "repo_id", "(SELECT id FROM repositories WHERE name = ?)"
	case t == "accounts" && c.Name == "groups":
		return "t.groups_json", "groups_json", "?"
	}
	return "t." + c.Name, c.Name, "?"
}

// Dump implements metadata.Dumper.
func (s *Store) Dump(ctx context.Context, t metadata.Table, fn func(row []any) error) error {
	sels := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		sels[i], _, _ = column(t.Name, c)
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT "+strings.Join(sels, ", ")+" FROM "+t.Name+" t")
	if err != nil {
		return fmt.Errorf("dump %s: %w", t.Name, err)
	}
	defer rows.Close()
	for rows.Next() {
		raw := make([]any, len(t.Columns))
		ptrs := make([]any, len(raw))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row := make([]any, len(raw))
		for i, c := range t.Columns {
			if row[i], err = fromSQLite(t.Name, c, raw[i]); err != nil {
				return fmt.Errorf("dump %s.%s: %w", t.Name, c.Name, err)
			}
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	return rows.Err()
}

// fromSQLite turns a value as SQLite keeps it into its Go form.
func fromSQLite(table string, c metadata.Column, v any) (any, error) {
	switch c.Kind {
	case metadata.Text, metadata.Repo:
		switch v := v.(type) {
		case string:
			return v, nil
		case []byte:
			return string(v), nil
		}
	case metadata.Int:
		if n, ok := v.(int64); ok {
			return n, nil
		}
	case metadata.NullInt:
		if v == nil {
			return (*int64)(nil), nil
		}
		if n, ok := v.(int64); ok {
			return &n, nil
		}
	case metadata.NullText:
		switch v := v.(type) {
		case nil:
			return (*string)(nil), nil
		case string:
			return &v, nil
		}
	case metadata.Bytes:
		switch v := v.(type) {
		case []byte:
			return v, nil
		case string:
			return []byte(v), nil
		}
	case metadata.Time, metadata.Expiry:
		if n, ok := v.(int64); ok {
			if n == 0 && c.Kind == metadata.Expiry {
				return time.Time{}, nil
			}
			return time.Unix(0, n), nil
		}
	case metadata.List:
		text, ok := v.(string)
		if !ok {
			break
		}
		if table == "grants" { // actions, comma-separated
			return nonNil(splitActions(text)), nil
		}
		var list []string
		if err := json.Unmarshal([]byte(text), &list); err != nil {
			return nil, err
		}
		return nonNil(list), nil
	}
	return nil, fmt.Errorf("unexpected value %T for kind %d", v, c.Kind)
}

// toSQLite turns a value in its Go form into what SQLite keeps.
func toSQLite(table string, c metadata.Column, v any) (any, error) {
	switch c.Kind {
	case metadata.NullInt:
		if p := v.(*int64); p != nil {
			return *p, nil
		}
		return nil, nil
	case metadata.NullText:
		if p := v.(*string); p != nil {
			return *p, nil
		}
		return nil, nil
	case metadata.Time:
		return v.(time.Time).UnixNano(), nil
	case metadata.Expiry:
		return unixNano(v.(time.Time)), nil
	case metadata.List:
		list := v.([]string)
		if table == "grants" {
			return strings.Join(list, ","), nil
		}
		b, err := json.Marshal(nonNil(list))
		return string(b), err
	}
	return v, nil
}

// Load implements metadata.Dumper.
func (s *Store) Load(ctx context.Context, t metadata.Table, rows [][]any) error {
	names, vals := make([]string, len(t.Columns)), make([]string, len(t.Columns))
	for i, c := range t.Columns {
		_, names[i], vals[i] = column(t.Name, c)
	}
	query := "INSERT INTO " + t.Name + " (" + strings.Join(names, ", ") + ") VALUES (" +
		strings.Join(vals, ", ") + ") ON CONFLICT DO NOTHING"
	return s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, query)
		if err != nil {
			return err
		}
		defer st.Close()
		args := make([]any, len(t.Columns))
		for _, row := range rows {
			for i, c := range t.Columns {
				if args[i], err = toSQLite(t.Name, c, row[i]); err != nil {
					return err
				}
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("load %s: %w", t.Name, err)
			}
		}
		return nil
	})
}

// Count implements metadata.Dumper.
func (s *Store) Count(ctx context.Context, t metadata.Table) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM "+t.Name).Scan(&n)
	return n, err
}
