package metadatatest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// RunThrottles runs the suite of metadata.Throttles. open returns a new, empty store. Times are
// the caller's: the suite moves them instead of sleeping.
func RunThrottles(t *testing.T, open func(t *testing.T) metadata.Throttles) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	pair := metadata.Budget{Key: "p:alice 10.0.0.1", Burst: 5, Per: 3 * time.Minute}
	// reserve asks for one token from each of bs at now and returns the wait.
	reserve := func(t *testing.T, st metadata.Throttles, now time.Time, bs ...metadata.Budget) time.Duration {
		t.Helper()
		wait, err := st.ReserveGuess(ctx, bs, now)
		if err != nil {
			t.Fatalf("ReserveGuess(%v): %v", bs, err)
		}
		return wait
	}
	// granted reserves n times at now and says how many were granted, and the last wait.
	granted := func(t *testing.T, st metadata.Throttles, n int, now time.Time, bs ...metadata.Budget) (int, time.Duration) {
		t.Helper()
		got, wait := 0, time.Duration(0)
		for range n {
			if w := reserve(t, st, now, bs...); w == 0 {
				got++
			} else {
				wait = w
			}
		}
		return got, wait
	}

	t.Run("Burst", func(t *testing.T) {
		st := open(t)
		if n, wait := granted(t, st, 6, t0, pair); n != 5 || wait != 3*time.Minute {
			t.Fatalf("6 at once: %d granted, wait %v; want 5 and 3m", n, wait)
		}
		if wait := reserve(t, st, t0.Add(90*time.Second), pair); wait != 90*time.Second {
			t.Errorf("half a period later: wait %v, want 1m30s", wait)
		}
		if n, wait := granted(t, st, 2, t0.Add(3*time.Minute), pair); n != 1 || wait != 3*time.Minute {
			t.Errorf("a period later: %d granted (wait %v), want 1 and then 3m", n, wait)
		}
		// Long after, the bucket is full again: Burst, never more.
		if n, _ := granted(t, st, 7, t0.Add(24*time.Hour), pair); n != 5 {
			t.Errorf("a day later: %d of 7 granted, want 5", n)
		}
	})
	t.Run("AllOrNone", func(t *testing.T) {
		st := open(t)
		one := metadata.Budget{Key: "a:10.0.0.1", Burst: 1, Per: time.Hour}
		if wait := reserve(t, st, t0, one, pair); wait != 0 {
			t.Fatalf("first: wait %v", wait)
		}
		// one is spent: the reservation is refused, and takes nothing from pair.
		if wait := reserve(t, st, t0, pair, one); wait != time.Hour {
			t.Errorf("with one bucket spent: wait %v, want the longest, 1h", wait)
		}
		if n, _ := granted(t, st, 5, t0, pair); n != 4 {
			t.Errorf("pair after a refused reservation: %d of 5 granted, want its 4 left", n)
		}
	})
	t.Run("Refund", func(t *testing.T) {
		st := open(t)
		for i := range 50 {
			if wait := reserve(t, st, t0, pair); wait != 0 {
				t.Fatalf("reservation %d refused (wait %v) although every one was refunded", i, wait)
			}
			if err := st.RefundGuess(ctx, []metadata.Budget{pair}, t0); err != nil {
				t.Fatal(err)
			}
		}
		// Refunds never fill a bucket beyond its burst, and a bucket never reserved is full.
		other := metadata.Budget{Key: "n:bob", Burst: 3, Per: time.Minute}
		for range 3 {
			if err := st.RefundGuess(ctx, []metadata.Budget{pair, other}, t0); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := granted(t, st, 6, t0, pair); n != 5 {
			t.Errorf("after refunds: %d of 6 granted, want 5", n)
		}
		if n, _ := granted(t, st, 4, t0, other); n != 3 {
			t.Errorf("a bucket refunded before any reservation: %d of 4 granted, want 3", n)
		}
	})
	t.Run("ClockBehind", func(t *testing.T) {
		// A process whose clock is behind the one that reserved does not see the bucket fill.
		st := open(t)
		one := metadata.Budget{Key: "a:10.0.0.1", Burst: 1, Per: time.Minute}
		reserve(t, st, t0, one)
		if wait := reserve(t, st, t0.Add(-time.Hour), one); wait == 0 {
			t.Error("an hour earlier by another clock: granted a token spent at t0")
		}
		if wait := reserve(t, st, t0.Add(time.Minute), one); wait != 0 {
			t.Errorf("a period after: wait %v", wait)
		}
	})
	t.Run("KnownAddresses", func(t *testing.T) {
		st := open(t)
		known := func(account, addr string, since time.Time) bool {
			t.Helper()
			k, err := st.KnownAddress(ctx, account, addr, since)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		record := func(account, addr string, at time.Time, keep int) {
			t.Helper()
			if err := st.RecordLogin(ctx, account, addr, at, keep); err != nil {
				t.Fatal(err)
			}
		}
		record("alice", "10.0.0.1", t0, 2)
		if !known("alice", "10.0.0.1", t0.Add(-time.Hour)) {
			t.Error("an address alice logged in from: not known")
		}
		if known("alice", "10.0.0.2", t0.Add(-time.Hour)) || known("bob", "10.0.0.1", t0.Add(-time.Hour)) {
			t.Error("another address, or another account: known")
		}
		if known("alice", "10.0.0.1", t0) {
			t.Error("known since the very time of the login: want only logins after since")
		}
		// An older login recorded late does not move the time back.
		record("alice", "10.0.0.1", t0.Add(-time.Hour), 2)
		if !known("alice", "10.0.0.1", t0.Add(-time.Minute)) {
			t.Error("an older login recorded after a newer one moved its time back")
		}
		// keep: the most recent addresses stay.
		record("alice", "10.0.0.2", t0.Add(time.Minute), 2)
		record("alice", "10.0.0.3", t0.Add(2*time.Minute), 2)
		var got []string
		for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
			if known("alice", a, t0.Add(-time.Hour)) {
				got = append(got, a)
			}
		}
		if !slices.Equal(got, []string{"10.0.0.2", "10.0.0.3"}) {
			t.Errorf("known addresses after 3 logins, keeping 2: %v, want the two latest", got)
		}
		if err := st.RecordLogin(ctx, "alice", "10.0.0.4", t0, 0); err == nil {
			t.Error("RecordLogin keeping 0 addresses: no error")
		}
	})
	t.Run("Prune", func(t *testing.T) {
		st := open(t)
		minute := metadata.Budget{Key: "a:10.0.0.1", Burst: 5, Per: time.Minute}
		hour := metadata.Budget{Key: "n:alice", Burst: 1, Per: time.Hour}
		reserve(t, st, t0, minute, hour)
		if err := st.RecordLogin(ctx, "alice", "10.0.0.1", t0, 16); err != nil {
			t.Fatal(err)
		}
		prune := func(now, knownSince time.Time, want int64) {
			t.Helper()
			if n, err := st.PruneThrottles(ctx, now, knownSince); err != nil || n != want {
				t.Errorf("PruneThrottles(+%v, +%v) = %d, %v; want %d", now.Sub(t0), knownSince.Sub(t0), n, err, want)
			}
		}
		prune(t0.Add(30*time.Second), t0.Add(-time.Hour), 0) // neither bucket full yet
		prune(t0.Add(time.Minute), t0.Add(-time.Hour), 1)    // minute is full again
		prune(t0.Add(time.Minute), t0, 1)                    // the login, at t0, is forgotten
		if known, err := st.KnownAddress(ctx, "alice", "10.0.0.1", t0.Add(-time.Hour)); err != nil || known {
			t.Errorf("a pruned login: known %v, %v", known, err)
		}
		// Pruned buckets are full ones: the budgets are the same as if they were there.
		if n, _ := granted(t, st, 6, t0.Add(time.Minute), minute); n != 5 {
			t.Errorf("a pruned bucket: %d of 6 granted, want 5", n)
		}
		if wait := reserve(t, st, t0.Add(time.Minute), hour); wait != 59*time.Minute {
			t.Errorf("the bucket not pruned: wait %v, want 59m", wait)
		}
		prune(t0.Add(2*time.Hour), t0, 2)
		prune(t0.Add(2*time.Hour), t0, 0)
	})
	t.Run("BadInput", func(t *testing.T) {
		st := open(t)
		for name, bs := range map[string][]metadata.Budget{
			"duplicate key": {pair, pair},
			"empty key":     {{Key: "", Burst: 1, Per: time.Second}},
			"control byte":  {{Key: "p:a\x00b", Burst: 1, Per: time.Second}},
			"zero burst":    {{Key: "k", Burst: 0, Per: time.Second}},
			"zero period":   {{Key: "k", Burst: 1}},
		} {
			if _, err := st.ReserveGuess(ctx, bs, t0); err == nil {
				t.Errorf("ReserveGuess with a %s: no error", name)
			}
			if err := st.RefundGuess(ctx, bs, t0); err == nil {
				t.Errorf("RefundGuess with a %s: no error", name)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		// However many reservations arrive at once, no more are granted than the budget holds;
		// each takes three buckets, one shared, in different orders (deadlocks are the store's
		// to avoid or retry, not the caller's to see).
		st := open(t)
		const n = 60
		shared := metadata.Budget{Key: "n:alice", Burst: 5, Per: time.Hour}
		won := make([]bool, n)
		warm := func() { st.KnownAddress(ctx, "warm", "up", t0) }
		errs := together(n, warm, func(i int) error {
			bs := []metadata.Budget{
				shared,
				{Key: fmt.Sprintf("a:10.0.0.%d", i%4), Burst: 100, Per: time.Hour},
				{Key: fmt.Sprintf("p:alice 10.0.0.%d", i%7), Burst: 100, Per: time.Hour},
			}
			if i%2 == 1 {
				slices.Reverse(bs)
			}
			wait, err := st.ReserveGuess(ctx, bs, t0)
			won[i] = err == nil && wait == 0
			return err
		})
		count := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("ReserveGuess %d: %v", i, err)
			}
			if won[i] {
				count++
			}
		}
		if count != 5 {
			t.Errorf("%d reservations at once: %d granted, want 5", n, count)
		}
		// The address buckets were charged for exactly the granted reservations: 100 - 5 left
		// over the four of them, i.e. 400 - 5 in all.
		left := 0
		for a := range 4 {
			k, _ := granted(t, st, 101, t0, metadata.Budget{Key: fmt.Sprintf("a:10.0.0.%d", a), Burst: 100, Per: time.Hour})
			left += k
		}
		if left != 400-5 {
			t.Errorf("tokens left in the address buckets: %d, want %d (only granted reservations take)", left, 400-5)
		}
	})
}
