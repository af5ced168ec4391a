package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Accounts = (*Store)(nil)

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// CreateAccount implements metadata.Accounts.
func (s *Store) CreateAccount(ctx context.Context, a *metadata.Account) error {
	groups, err := json.Marshal(nonNil(a.Groups))
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		// The ID is new for every account, also for one that takes the name of a deleted one.
		res, err := tx.ExecContext(ctx, `INSERT INTO accounts (name, kind, secret, groups_json, description, expires, created, id)
			VALUES (?, ?, ?, ?, ?, ?, ?, lower(hex(randomblob(16)))) ON CONFLICT DO NOTHING`,
			a.Name, a.Kind, a.Secret, string(groups), a.Description, unixNano(a.Expires), now())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("account %s: %w", a.Name, metadata.ErrExists)
		}
		return nil
	})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const accountCols = `name, kind, secret, groups_json, description, expires, created, id`

func scanAccount(row interface{ Scan(...any) error }) (*metadata.Account, error) {
	var a metadata.Account
	var groups string
	var expires, created int64
	if err := row.Scan(&a.Name, &a.Kind, &a.Secret, &groups, &a.Description, &expires, &created, &a.ID); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(groups), &a.Groups); err != nil {
		return nil, fmt.Errorf("account %s: groups: %w", a.Name, err)
	}
	a.Expires, a.Created = fromUnixNano(expires), fromUnixNano(created)
	return &a, nil
}

// Account implements metadata.Accounts.
func (s *Store) Account(ctx context.Context, name string) (*metadata.Account, error) {
	a, err := scanAccount(s.r.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", name, metadata.ErrNotFound)
	}
	return a, err
}

// ListAccounts implements metadata.Accounts.
func (s *Store) ListAccounts(ctx context.Context, kind string) ([]metadata.Account, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE ? = '' OR kind = ? ORDER BY name`, kind, kind)
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
	return out, rows.Err()
}

// UpdateAccount implements metadata.Accounts.
func (s *Store) UpdateAccount(ctx context.Context, a *metadata.Account) error {
	groups, err := json.Marshal(nonNil(a.Groups))
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT secret FROM accounts WHERE name = ?`, a.Name).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("account %s: %w", a.Name, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET secret = ?, groups_json = ?, description = ?, expires = ?
			WHERE name = ?`, a.Secret, string(groups), a.Description, unixNano(a.Expires), a.Name); err != nil {
			return err
		}
		if old != a.Secret {
			_, err = tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE account = ?`, a.Name)
		}
		return err
	})
}

// DeleteAccount implements metadata.Accounts.
func (s *Store) DeleteAccount(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var kind string
		err := tx.QueryRowContext(ctx, `SELECT kind FROM accounts WHERE name = ?`, name).Scan(&kind)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("account %s: %w", name, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM refresh_tokens WHERE account = ?`, `DELETE FROM accounts WHERE name = ?`} {
			if _, err := tx.ExecContext(ctx, q, name); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM grants WHERE subject = ?`, kind+":"+name)
		return err
	})
}

// CountAccounts implements metadata.Accounts.
func (s *Store) CountAccounts(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
	return n, err
}

// AddGrant implements metadata.Accounts.
func (s *Store) AddGrant(ctx context.Context, g metadata.Grant) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var have string
		err := tx.QueryRowContext(ctx, `SELECT actions FROM grants WHERE subject = ? AND pattern = ?`, g.Subject, g.Pattern).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		actions := splitActions(have)
		for _, a := range g.Actions {
			if !slices.Contains(actions, a) {
				actions = append(actions, a)
			}
		}
		slices.Sort(actions)
		_, err = tx.ExecContext(ctx, `INSERT INTO grants (subject, pattern, actions, created) VALUES (?, ?, ?, ?)
			ON CONFLICT (subject, pattern) DO UPDATE SET actions = excluded.actions`,
			g.Subject, g.Pattern, strings.Join(actions, ","), now())
		return err
	})
}

func splitActions(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// RevokeGrant implements metadata.Accounts.
func (s *Store) RevokeGrant(ctx context.Context, subject, pattern string, actions ...string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var have string
		err := tx.QueryRowContext(ctx, `SELECT actions FROM grants WHERE subject = ? AND pattern = ?`, subject, pattern).Scan(&have)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("grant %s on %s: %w", subject, pattern, metadata.ErrNotFound)
		} else if err != nil {
			return err
		}
		keep := slices.DeleteFunc(splitActions(have), func(a string) bool {
			return len(actions) == 0 || slices.Contains(actions, a)
		})
		if len(keep) == 0 {
			_, err = tx.ExecContext(ctx, `DELETE FROM grants WHERE subject = ? AND pattern = ?`, subject, pattern)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE grants SET actions = ? WHERE subject = ? AND pattern = ?`,
				strings.Join(keep, ","), subject, pattern)
		}
		return err
	})
}

// Grants implements metadata.Accounts.
func (s *Store) Grants(ctx context.Context) ([]metadata.Grant, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT subject, pattern, actions, created FROM grants ORDER BY subject, pattern`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metadata.Grant
	for rows.Next() {
		var g metadata.Grant
		var actions string
		var created int64
		if err := rows.Scan(&g.Subject, &g.Pattern, &actions, &created); err != nil {
			return nil, err
		}
		g.Actions, g.Created = splitActions(actions), fromUnixNano(created)
		out = append(out, g)
	}
	return out, rows.Err()
}

// AuthVersion implements metadata.Accounts: triggers bump it (migration 007).
func (s *Store) AuthVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.r.QueryRowContext(ctx, `SELECT version FROM auth_version WHERE id = 1`).Scan(&v)
	return v, err
}

// CreateRefreshToken implements metadata.Accounts.
func (s *Store) CreateRefreshToken(ctx context.Context, hash, account string, expires time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		// Expired tokens go when new ones come, which bounds the table without a sweeper.
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE expires < ?`, now()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, account, expires, created) VALUES (?, ?, ?, ?)`,
			hash, account, expires.UnixNano(), now())
		return err
	})
}

// RefreshToken implements metadata.Accounts.
func (s *Store) RefreshToken(ctx context.Context, hash string) (string, error) {
	var account string
	err := s.r.QueryRowContext(ctx, `SELECT account FROM refresh_tokens WHERE hash = ? AND expires > ?`, hash, now()).Scan(&account)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("refresh token: %w", metadata.ErrNotFound)
	}
	return account, err
}

// Setting implements metadata.Accounts.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("setting %s: %w", key, metadata.ErrNotFound)
	}
	return v, err
}

// SetSetting implements metadata.Accounts.
func (s *Store) SetSetting(ctx context.Context, key string, value []byte) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}

// CreateSetting implements metadata.Accounts.
func (s *Store) CreateSetting(ctx context.Context, key string, value []byte) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING`, key, value)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("setting %s: %w", key, metadata.ErrExists)
		}
		return nil
	})
}

// Settings implements metadata.Accounts.
func (s *Store) Settings(ctx context.Context, prefix string) (map[string][]byte, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT key, value FROM settings WHERE substr(key, 1, length(?)) = ?`, prefix, prefix)
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
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// DeleteSetting implements metadata.Accounts.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key)
		return affected(res, err, "setting "+key)
	})
}
