package auth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// memThrottles is metadata.Throttles in this process's memory: the guard's counts when no other
// process serves the same store (a login costs no write then). It follows the same suite as the
// stores (TestMemThrottles) and holds at most maxGuardKeys buckets and accounts: when an attack
// from more places than that fills it with live counts, new guessers are refused rather than
// counts forgotten.
type memThrottles struct {
	mu      sync.Mutex
	buckets map[string]time.Time            // by key: when the bucket is full again
	known   map[string]map[string]time.Time // by account, by address: the last login from there
}

var _ metadata.Throttles = (*memThrottles)(nil)

func newMemThrottles() *memThrottles {
	return &memThrottles{buckets: map[string]time.Time{}, known: map[string]map[string]time.Time{}}
}

// ReserveGuess implements metadata.Throttles.
func (m *memThrottles) ReserveGuess(_ context.Context, budgets []metadata.Budget, now time.Time) (time.Duration, error) {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fullAt := make([]time.Time, len(budgets))
	missing := 0
	for i, b := range budgets {
		t, ok := m.buckets[b.Key]
		if !ok {
			missing++
		}
		fullAt[i] = t
	}
	next, wait := metadata.TakeTokens(budgets, fullAt, now)
	if wait > 0 {
		return wait, nil
	}
	if len(m.buckets)+missing > maxGuardKeys {
		m.pruneBuckets(now)
		if len(m.buckets)+missing > maxGuardKeys {
			// Guesses from more places than the table holds: refuse rather than forget counts.
			return time.Minute, nil
		}
	}
	for i, b := range budgets {
		m.buckets[b.Key] = next[i]
	}
	return 0, nil
}

// RefundGuess implements metadata.Throttles.
func (m *memThrottles) RefundGuess(_ context.Context, budgets []metadata.Budget, now time.Time) error {
	if err := metadata.CheckBudgets(budgets); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range budgets {
		if t, ok := m.buckets[b.Key]; ok {
			m.buckets[b.Key] = metadata.GiveToken(b, t, now)
		}
	}
	return nil
}

// RecordLogin implements metadata.Throttles.
func (m *memThrottles) RecordLogin(_ context.Context, account, addr string, now time.Time, keep int) error {
	if keep < 1 {
		return fmt.Errorf("RecordLogin: keep %d, want at least 1", keep)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	addrs := m.known[account]
	if addrs == nil {
		if len(m.known) >= maxGuardKeys {
			return nil // an address not remembered is one like any other
		}
		addrs = map[string]time.Time{}
		m.known[account] = addrs
	}
	if t, ok := addrs[addr]; ok && t.After(now) {
		return nil
	}
	addrs[addr] = now
	for len(addrs) > keep {
		var oldest string
		for a, t := range addrs {
			if oldest == "" || t.Before(addrs[oldest]) || t.Equal(addrs[oldest]) && a > oldest {
				oldest = a
			}
		}
		delete(addrs, oldest)
	}
	return nil
}

// KnownAddress implements metadata.Throttles.
func (m *memThrottles) KnownAddress(_ context.Context, account, addr string, since time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.known[account][addr]
	return ok && t.After(since), nil
}

// PruneThrottles implements metadata.Throttles.
func (m *memThrottles) PruneThrottles(_ context.Context, now, knownSince time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.pruneBuckets(now)
	for account, addrs := range m.known {
		for a, t := range addrs {
			if !t.After(knownSince) {
				delete(addrs, a)
				n++
			}
		}
		if len(addrs) == 0 {
			delete(m.known, account)
		}
	}
	return n, nil
}

// pruneBuckets drops buckets that have refilled completely: they hold nothing a new one would not.
func (m *memThrottles) pruneBuckets(now time.Time) int64 {
	var n int64
	for key, t := range m.buckets {
		if !t.After(now) {
			delete(m.buckets, key)
			n++
		}
	}
	return n
}
