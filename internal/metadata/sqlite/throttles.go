package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Throttles = (*Store)(nil)

// ReserveGuess implements metadata.Throttles: the buckets are read and written in one write
// transaction, and SQLite has one writer at a time.
func (s *Store) ReserveGuess(ctx context.Context, budgets []metadata.Budget, now time.Time) (time.Duration, error) {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return 0, err
	}
	var wait time.Duration
	err := s.write(ctx, func(tx *sql.Tx) error {
		fullAt, _, err := bucketTimes(ctx, tx, budgets)
		if err != nil {
			return err
		}
		var next []time.Time
		next, wait = metadata.TakeTokens(budgets, fullAt, now)
		if wait > 0 {
			return nil
		}
		for i, b := range budgets {
			if _, err := tx.ExecContext(ctx, `INSERT INTO login_buckets (key, full_at) VALUES (?, ?)
				ON CONFLICT (key) DO UPDATE SET full_at = excluded.full_at`, b.Key, next[i].UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
	return wait, err
}

// bucketTimes returns when each bucket of budgets is full again (the zero time for one without a
// row) and whether it has a row.
func bucketTimes(ctx context.Context, tx *sql.Tx, budgets []metadata.Budget) ([]time.Time, []bool, error) {
	fullAt := make([]time.Time, len(budgets))
	found := make([]bool, len(budgets))
	for i, b := range budgets {
		var ns int64
		err := tx.QueryRowContext(ctx, `SELECT full_at FROM login_buckets WHERE key = ?`, b.Key).Scan(&ns)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, nil, err
		default:
			fullAt[i], found[i] = time.Unix(0, ns), true
		}
	}
	return fullAt, found, nil
}

// RefundGuess implements metadata.Throttles.
func (s *Store) RefundGuess(ctx context.Context, budgets []metadata.Budget, now time.Time) error {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		fullAt, found, err := bucketTimes(ctx, tx, budgets)
		if err != nil {
			return err
		}
		for i, b := range budgets {
			if !found[i] {
				continue // full already
			}
			t := metadata.GiveToken(b, fullAt[i], now)
			if _, err := tx.ExecContext(ctx, `UPDATE login_buckets SET full_at = ? WHERE key = ?`, t.UnixNano(), b.Key); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordLogin implements metadata.Throttles.
func (s *Store) RecordLogin(ctx context.Context, account, addr string, now time.Time, keep int) error {
	if keep < 1 {
		return fmt.Errorf("RecordLogin: keep %d, want at least 1", keep)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_addresses (account, addr, seen) VALUES (?, ?, ?)
			ON CONFLICT (account, addr) DO UPDATE SET seen = max(seen, excluded.seen)`,
			account, addr, now.UnixNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM login_addresses WHERE account = ? AND addr NOT IN (
			SELECT addr FROM login_addresses WHERE account = ? ORDER BY seen DESC, addr LIMIT ?)`, account, account, keep)
		return err
	})
}

// KnownAddress implements metadata.Throttles.
func (s *Store) KnownAddress(ctx context.Context, account, addr string, since time.Time) (bool, error) {
	var known bool
	err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM login_addresses WHERE account = ? AND addr = ? AND seen > ?)`,
		account, addr, since.UnixNano()).Scan(&known)
	return known, err
}

// PruneThrottles implements metadata.Throttles.
func (s *Store) PruneThrottles(ctx context.Context, now, knownSince time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		n = 0
		for _, q := range []struct {
			sql string
			at  time.Time
		}{
			{`DELETE FROM login_buckets WHERE full_at <= ?`, now},
			{`DELETE FROM login_addresses WHERE seen <= ?`, knownSince},
		} {
			res, err := tx.ExecContext(ctx, q.sql, q.at.UnixNano())
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	return n, err
}
