package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
)

// optTime is t for a nullable timestamptz: NULL for the zero time.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// nonNilBytes is b for a NOT NULL bytea: pgx sends a nil slice as NULL.
func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// newAccountID returns a new random account ID, as the SQLite store makes them: 32 hex digits.
func newAccountID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// CreateAccount implements metadata.Accounts. Of two creating one name at once, the second waits
// for the first and then does nothing.
func (s *Store) CreateAccount(ctx context.Context, a *metadata.Account) error {
	tag, err := s.exec(ctx, `INSERT INTO accounts (name, id, kind, secret, groups, description, expires, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING`,
		a.Name, newAccountID(), a.Kind, a.Secret, nonNil(a.Groups), a.Description, optTime(a.Expires), now())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("account %s: %w", a.Name, metadata.ErrExists)
	}
	return nil
}

const accountCols = `name, id, kind, secret, groups, description, expires, created`

func scanAccount(row pgx.Row) (*metadata.Account, error) {
	var a metadata.Account
	var expires *time.Time
	if err := row.Scan(&a.Name, &a.ID, &a.Kind, &a.Secret, &a.Groups, &a.Description, &expires, &a.Created); err != nil {
		return nil, err
	}
	if expires != nil {
		a.Expires = *expires
	}
	return &a, nil
}

// Account implements metadata.Accounts.
func (s *Store) Account(ctx context.Context, name string) (*metadata.Account, error) {
	a, err := scanAccount(s.queryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", name, metadata.ErrNotFound)
	}
	return a, err
}

// ListAccounts implements metadata.Accounts.
func (s *Store) ListAccounts(ctx context.Context, kind string) ([]metadata.Account, error) {
	rows, err := s.query(ctx, `SELECT `+accountCols+` FROM accounts WHERE $1 = '' OR kind = $1 ORDER BY name`, kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metadata.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, mapError(rows.Err())
}

// UpdateAccount implements metadata.Accounts.
func (s *Store) UpdateAccount(ctx context.Context, a *metadata.Account) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT secret FROM accounts WHERE name = $1 FOR UPDATE`, a.Name).Scan(&old)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("account %s: %w", a.Name, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET secret = $2, groups = $3, description = $4, expires = $5
			WHERE name = $1`, a.Name, a.Secret, nonNil(a.Groups), a.Description, optTime(a.Expires)); err != nil {
			return err
		}
		if old != a.Secret {
			_, err = tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE account = $1`, a.Name)
		}
		return err
	})
}

// DeleteAccount implements metadata.Accounts. Its refresh tokens go with it (ON DELETE CASCADE).
func (s *Store) DeleteAccount(ctx context.Context, name string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var kind string
		err := tx.QueryRow(ctx, `DELETE FROM accounts WHERE name = $1 RETURNING kind`, name).Scan(&kind)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("account %s: %w", name, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM grants WHERE subject = $1`, kind+":"+name)
		return err
	})
}

// CountAccounts implements metadata.Accounts.
func (s *Store) CountAccounts(ctx context.Context) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
	return n, err
}

// AddGrant implements metadata.Accounts. The union of the actions is made in the upsert, so that
// two grants of different actions at once both count.
func (s *Store) AddGrant(ctx context.Context, g metadata.Grant) error {
	actions := slices.Compact(slices.Sorted(slices.Values(g.Actions)))
	_, err := s.exec(ctx, `INSERT INTO grants (subject, pattern, actions, created) VALUES ($1, $2, $3, $4)
		ON CONFLICT (subject, pattern) DO UPDATE SET actions = ARRAY(
			SELECT a FROM unnest(grants.actions || excluded.actions) AS a GROUP BY a ORDER BY a COLLATE "C")`,
		g.Subject, g.Pattern, nonNil(actions), now())
	return err
}

// RevokeGrant implements metadata.Accounts.
func (s *Store) RevokeGrant(ctx context.Context, subject, pattern string, actions ...string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var have []string
		err := tx.QueryRow(ctx, `SELECT actions FROM grants WHERE subject = $1 AND pattern = $2 FOR UPDATE`,
			subject, pattern).Scan(&have)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("grant %s on %s: %w", subject, pattern, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		keep := slices.DeleteFunc(have, func(a string) bool {
			return len(actions) == 0 || slices.Contains(actions, a)
		})
		if len(keep) == 0 {
			_, err = tx.Exec(ctx, `DELETE FROM grants WHERE subject = $1 AND pattern = $2`, subject, pattern)
		} else {
			_, err = tx.Exec(ctx, `UPDATE grants SET actions = $3 WHERE subject = $1 AND pattern = $2`,
				subject, pattern, keep)
		}
		return err
	})
}

// Grants implements metadata.Accounts.
func (s *Store) Grants(ctx context.Context) ([]metadata.Grant, error) {
	rows, err := s.query(ctx, `SELECT subject, pattern, actions, created FROM grants ORDER BY subject, pattern`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metadata.Grant
	for rows.Next() {
		var g metadata.Grant
		if err := rows.Scan(&g.Subject, &g.Pattern, &g.Actions, &g.Created); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, mapError(rows.Err())
}

// AuthVersion implements metadata.Accounts: triggers on accounts and grants bump it as a change
// commits (migration 007).
func (s *Store) AuthVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.queryRow(ctx, `SELECT version FROM auth_version WHERE id = 1`).Scan(&v)
	return v, err
}

// CreateRefreshToken implements metadata.Accounts.
func (s *Store) CreateRefreshToken(ctx context.Context, hash, account string, expires time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		t := now()
		// Expired tokens go when new ones come, which bounds the table without a sweeper.
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE expires < $1`, t); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (hash, account, expires, created) VALUES ($1, $2, $3, $4)`,
			hash, account, expires, t)
		return err
	})
}

// RefreshToken implements metadata.Accounts.
func (s *Store) RefreshToken(ctx context.Context, hash string) (string, error) {
	var account string
	err := s.queryRow(ctx, `SELECT account FROM refresh_tokens WHERE hash = $1 AND expires > $2`, hash, now()).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("refresh token: %w", metadata.ErrNotFound)
	}
	return account, err
}

// Setting implements metadata.Accounts.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.queryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("setting %s: %w", key, metadata.ErrNotFound)
	}
	return v, err
}

// SetSetting implements metadata.Accounts.
func (s *Store) SetSetting(ctx context.Context, key string, value []byte) error {
	_, err := s.exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, nonNilBytes(value))
	return err
}

// CreateSetting implements metadata.Accounts. Of two creating one key at once, the second waits
// for the first and then does nothing.
func (s *Store) CreateSetting(ctx context.Context, key string, value []byte) error {
	tag, err := s.exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, nonNilBytes(value))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("setting %s: %w", key, metadata.ErrExists)
	}
	return nil
}

// Settings implements metadata.Accounts.
func (s *Store) Settings(ctx context.Context, prefix string) (map[string][]byte, error) {
	rows, err := s.query(ctx, `SELECT key, value FROM settings WHERE starts_with(key, $1)`, prefix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var (
			k string
			v []byte
		)
		if err := rows.Scan(&k, &v); err != nil {
			return nil, mapError(err)
		}
		out[k] = v
	}
	return out, mapError(rows.Err())
}

// DeleteSetting implements metadata.Accounts.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	tag, err := s.exec(ctx, `DELETE FROM settings WHERE key = $1`, key)
	return affected(tag.RowsAffected(), err, "setting "+key)
}
