package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
)

var _ metadata.Throttles = (*Store)(nil)

// sortedBudgets returns budgets by key, the order in which every transaction locks buckets, so
// that two never wait for each other in a circle.
func sortedBudgets(budgets []metadata.Budget) []metadata.Budget {
	return slices.SortedFunc(slices.Values(budgets), func(a, b metadata.Budget) int { return strings.Compare(a.Key, b.Key) })
}

func budgetKeys(budgets []metadata.Budget) []string {
	keys := make([]string, len(budgets))
	for i, b := range budgets {
		keys[i] = b.Key
	}
	return keys
}

// ReserveGuess implements metadata.Throttles. One transaction: an upsert creates the buckets that
// have no row (as full) and locks every one, in key order, returning when each is full again; the
// arithmetic decides; an update writes the new times. A second reservation of the same buckets,
// on any replica, waits at the upsert for the first to commit and then reads what it wrote.
func (s *Store) ReserveGuess(ctx context.Context, budgets []metadata.Budget, now time.Time) (time.Duration, error) {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return 0, err
	}
	budgets = sortedBudgets(budgets)
	keys := budgetKeys(budgets)
	// PostgreSQL keeps microseconds: the arithmetic works on what it will store.
	now = now.Truncate(time.Microsecond)
	var wait time.Duration
	err := s.write(ctx, func(tx pgx.Tx) error {
		// The no-op update locks an existing row; rows are taken in the order of the SELECT.
		rows, err := tx.Query(ctx, `INSERT INTO login_buckets AS b (key, full_at)
			SELECT k, $2 FROM unnest($1::text[]) AS k ORDER BY k
			ON CONFLICT (key) DO UPDATE SET full_at = b.full_at
			RETURNING key, full_at`, keys, now)
		if err != nil {
			return err
		}
		got, err := fullAts(rows)
		if err != nil {
			return err
		}
		fullAt := make([]time.Time, len(keys))
		for i, k := range keys {
			fullAt[i] = got[k]
		}
		var next []time.Time
		next, wait = metadata.TakeTokens(budgets, fullAt, now)
		if wait > 0 {
			return nil // refused: the new rows are full buckets, which the prune removes
		}
		_, err = tx.Exec(ctx, `UPDATE login_buckets AS b SET full_at = v.full_at
			FROM unnest($1::text[], $2::timestamptz[]) AS v(key, full_at) WHERE b.key = v.key`, keys, next)
		return err
	})
	return wait, err
}

// RefundGuess implements metadata.Throttles: the buckets that have rows are locked in key order
// (a bucket without one is full already) and given a token back.
func (s *Store) RefundGuess(ctx context.Context, budgets []metadata.Budget, now time.Time) error {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return err
	}
	budgets = sortedBudgets(budgets)
	now = now.Truncate(time.Microsecond)
	return s.write(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT key, full_at FROM login_buckets WHERE key = ANY($1) ORDER BY key FOR UPDATE`, budgetKeys(budgets))
		if err != nil {
			return err
		}
		got, err := fullAts(rows)
		if err != nil {
			return err
		}
		var keys []string
		var next []time.Time
		for _, b := range budgets {
			if t, ok := got[b.Key]; ok {
				keys, next = append(keys, b.Key), append(next, metadata.GiveToken(b, t, now))
			}
		}
		if len(keys) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE login_buckets AS b SET full_at = v.full_at
			FROM unnest($1::text[], $2::timestamptz[]) AS v(key, full_at) WHERE b.key = v.key`, keys, next)
		return err
	})
}

// RecordLogin implements metadata.Throttles.
func (s *Store) RecordLogin(ctx context.Context, account, addr string, now time.Time, keep int) error {
	if keep < 1 {
		return fmt.Errorf("RecordLogin: keep %d, want at least 1", keep)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO login_addresses (account, addr, seen) VALUES ($1, $2, $3)
			ON CONFLICT (account, addr) DO UPDATE SET seen = greatest(login_addresses.seen, excluded.seen)`,
			account, addr, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM login_addresses WHERE account = $1 AND addr NOT IN (
			SELECT addr FROM login_addresses WHERE account = $1 ORDER BY seen DESC, addr LIMIT $2)`, account, keep)
		return err
	})
}

// KnownAddress implements metadata.Throttles.
func (s *Store) KnownAddress(ctx context.Context, account, addr string, since time.Time) (bool, error) {
	var known bool
	err := s.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM login_addresses WHERE account = $1 AND addr = $2 AND seen > $3)`,
		account, addr, since).Scan(&known)
	return known, err
}

// PruneThrottles implements metadata.Throttles. A bucket being reserved meanwhile is locked: the
// delete waits for it and then finds it no longer full.
func (s *Store) PruneThrottles(ctx context.Context, now, knownSince time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx pgx.Tx) error {
		n = 0
		tag, err := tx.Exec(ctx, `DELETE FROM login_buckets WHERE full_at <= $1`, now)
		if err != nil {
			return err
		}
		n += tag.RowsAffected()
		tag, err = tx.Exec(ctx, `DELETE FROM login_addresses WHERE seen <= $1`, knownSince)
		n += tag.RowsAffected()
		return err
	})
	return n, err
}

// fullAts reads rows of (key, full_at) into a map.
func fullAts(rows pgx.Rows) (map[string]time.Time, error) {
	got := map[string]time.Time{}
	var k string
	var t time.Time
	_, err := pgx.ForEachRow(rows, []any{&k, &t}, func() error {
		got[k] = t
		return nil
	})
	return got, err
}
