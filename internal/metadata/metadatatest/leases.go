package metadatatest

import (
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// RunLeases runs the suite of metadata.Leases. open returns a new, empty store.
func RunLeases(t *testing.T, open func(t *testing.T) metadata.Leases) {
	t.Run("AcquireRenewRelease", func(t *testing.T) {
		st := open(t)
		acquire := func(holder string, ttl time.Duration, want bool) {
			t.Helper()
			got, err := st.AcquireLease(ctx, "purge", holder, ttl)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("AcquireLease(purge, %s) = %v, want %v", holder, got, want)
			}
		}
		acquire("a", time.Minute, true)
		acquire("b", time.Minute, false) // a holds it
		acquire("a", time.Minute, true)  // renewed
		if got, err := st.AcquireLease(ctx, "gc", "b", time.Minute); err != nil || !got {
			t.Fatalf("another lease's name: %v, %v", got, err)
		}
		if err := st.ReleaseLease(ctx, "purge", "b"); err != nil { // not b's: nothing happens
			t.Fatal(err)
		}
		acquire("b", time.Minute, false)
		if err := st.ReleaseLease(ctx, "purge", "a"); err != nil {
			t.Fatal(err)
		}
		acquire("b", time.Minute, true)
	})
	t.Run("Expiry", func(t *testing.T) {
		st := open(t)
		if got, err := st.AcquireLease(ctx, "purge", "a", 50*time.Millisecond); err != nil || !got {
			t.Fatalf("first: %v, %v", got, err)
		}
		if got, _ := st.AcquireLease(ctx, "purge", "b", time.Minute); got {
			t.Fatal("b took a lease that had not expired")
		}
		time.Sleep(100 * time.Millisecond)
		if got, err := st.AcquireLease(ctx, "purge", "b", time.Minute); err != nil || !got {
			t.Fatalf("b after a's lease expired: %v, %v", got, err)
		}
		if got, _ := st.AcquireLease(ctx, "purge", "a", time.Minute); got {
			t.Fatal("a took its expired lease back from b")
		}
	})
	t.Run("Leased", func(t *testing.T) {
		st := open(t)
		for _, l := range []struct {
			name string
			ttl  time.Duration
		}{{"member/a", time.Minute}, {"member/b", time.Minute}, {"member/c", 20 * time.Millisecond}, {"members", time.Minute}, {"purge", time.Minute}} {
			if got, err := st.AcquireLease(ctx, l.name, "x", l.ttl); err != nil || !got {
				t.Fatalf("AcquireLease(%s): %v, %v", l.name, got, err)
			}
		}
		if err := st.ReleaseLease(ctx, "member/b", "x"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // member/c expires
		got, err := st.Leased(ctx, "member/")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != "member/a" {
			t.Errorf("Leased(member/) = %q, want [member/a] (b released, c expired, members and purge other names)", got)
		}
		// The prefix is a plain string, not a pattern.
		if got, err := st.Leased(ctx, "member_"); err != nil || len(got) != 0 {
			t.Errorf("Leased(member_) = %q, %v; want none", got, err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		st := open(t)
		const n = 16
		won := make([]bool, n)
		// The warm-up takes another lease: Leases has no read.
		warm := func() { st.AcquireLease(ctx, "warm-up", "w", time.Minute) }
		errs := together(n, warm, func(i int) error {
			var err error
			won[i], err = st.AcquireLease(ctx, "purge", string(rune('a'+i)), time.Minute)
			return err
		})
		var winners []string
		for i, err := range errs {
			if err != nil {
				t.Errorf("AcquireLease %d: %v", i, err)
			}
			if won[i] {
				winners = append(winners, string(rune('a'+i)))
			}
		}
		if len(winners) != 1 {
			t.Fatalf("%d holders at once: %q", len(winners), winners)
		}
	})
}
