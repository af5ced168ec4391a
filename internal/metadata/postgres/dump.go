package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Dumper = (*Store)(nil)

// column returns the SQL that selects column c (of a table aliased t), the name it is stored
// under, and the SQL of its value as the nth parameter of an insert.
func column(c metadata.Column, n int) (sel, name, ins string) {
	if c.Kind == metadata.Repo {
		return "(SELECT name FROM repositories WHERE id = t.repo_id)", "repo_id",
			fmt.Sprintf("(SELECT id FROM repositories WHERE name = $%d)", n)
	}
	return "t." + c.Name, c.Name, fmt.Sprintf("$%d", n)
}

// Dump implements metadata.Dumper.
func (s *Store) Dump(ctx context.Context, t metadata.Table, fn func(row []any) error) error {
	sels := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		sels[i], _, _ = column(c, i+1)
	}
	return mapError(pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT "+strings.Join(sels, ", ")+" FROM "+t.Name+" t")
		if err != nil {
			return fmt.Errorf("dump %s: %w", t.Name, err)
		}
		defer rows.Close()
		for rows.Next() {
			dest := make([]any, len(t.Columns))
			for i, c := range t.Columns {
				switch c.Kind {
				case metadata.Text, metadata.Repo:
					dest[i] = new(string)
				case metadata.Int:
					dest[i] = new(int64)
				case metadata.NullInt:
					dest[i] = new(*int64)
				case metadata.NullText:
					dest[i] = new(*string)
				case metadata.Bytes:
					dest[i] = new([]byte)
				case metadata.Time:
					dest[i] = new(time.Time)
				case metadata.Expiry:
					dest[i] = new(*time.Time)
				case metadata.List:
					dest[i] = new([]string)
				}
			}
			if err := rows.Scan(dest...); err != nil {
				return fmt.Errorf("dump %s: %w", t.Name, err)
			}
			row := make([]any, len(dest))
			for i, c := range t.Columns {
				switch p := dest[i].(type) {
				case *string:
					row[i] = *p
				case *int64:
					row[i] = *p
				case **int64:
					row[i] = *p
				case **string:
					row[i] = *p
				case *[]byte:
					row[i] = *p
				case *time.Time:
					row[i] = *p
				case **time.Time: // an expiry: NULL is never
					row[i] = time.Time{}
					if *p != nil {
						row[i] = **p
					}
				case *[]string:
					row[i] = *p
					if *p == nil {
						row[i] = []string{}
					}
				default:
					return fmt.Errorf("dump %s.%s: kind %d", t.Name, c.Name, c.Kind)
				}
			}
			if err := fn(row); err != nil {
				return err
			}
		}
		return rows.Err()
	}))
}

// Load implements metadata.Dumper.
func (s *Store) Load(ctx context.Context, t metadata.Table, rows [][]any) error {
	names, vals := make([]string, len(t.Columns)), make([]string, len(t.Columns))
	for i, c := range t.Columns {
		_, names[i], vals[i] = column(c, i+1)
	}
	query := "INSERT INTO " + t.Name + " (" + strings.Join(names, ", ") + ") VALUES (" +
		strings.Join(vals, ", ") + ") ON CONFLICT DO NOTHING"
	return s.write(ctx, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, row := range rows {
			args := make([]any, len(row))
			for i, c := range t.Columns {
				args[i] = row[i]
				if tm, ok := row[i].(time.Time); ok && c.Kind == metadata.Expiry && tm.IsZero() {
					args[i] = nil // never
				}
			}
			b.Queue(query, args...)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("load %s: %w", t.Name, err)
		}
		return nil
	})
}

// Count implements metadata.Dumper.
func (s *Store) Count(ctx context.Context, t metadata.Table) (int64, error) {
	var n int64
	err := s.queryRow(ctx, "SELECT count(*) FROM "+t.Name).Scan(&n)
	return n, err
}
