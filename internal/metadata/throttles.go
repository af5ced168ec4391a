package metadata

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Throttles keeps the levels of the token buckets that limit password guessing, and the addresses
// accounts logged in from, so that berth processes sharing one store limit guessing together: a
// guesser spread over N replicas gets the budgets once, not N times. Package auth decides which
// buckets a login takes from and how large they are; the store keeps how full each one is.
//
// A bucket is kept as the time at which it is full again (the generic cell rate algorithm): a
// bucket of Burst tokens that gets one back every Per holds Burst - (fullAt - now)/Per tokens.
// A bucket without a row is full. Times come from the caller (its clock), so that tests can move
// them; a process whose clock runs ahead of the others' by d sees every bucket d/Per tokens
// fuller than they do, and one whose clock is behind never sees a bucket fill early (a bucket's
// time never goes back).
type Throttles interface {
	// ReserveGuess takes one token from each of budgets at now, all or none, in one atomic step:
	// of any number of calls at once, on any processes sharing the store, no more succeed than
	// the buckets hold. It returns 0 when the tokens were taken; else how long until every bucket
	// holds one again, and nothing was taken. Keys must be distinct (else an error).
	ReserveGuess(ctx context.Context, budgets []Budget, now time.Time) (wait time.Duration, err error)
	// RefundGuess puts one token back into each of budgets (never above Burst): a guess taken
	// by ReserveGuess that was not a wrong one.
	RefundGuess(ctx context.Context, budgets []Budget, now time.Time) error
	// RecordLogin remembers that account logged in from addr at now, keeping the account's keep
	// most recent addresses.
	RecordLogin(ctx context.Context, account, addr string, now time.Time, keep int) error
	// KnownAddress reports whether account logged in from addr after since.
	KnownAddress(ctx context.Context, account, addr string, since time.Time) (bool, error)
	// PruneThrottles forgets the buckets that are full at now (they hold nothing a missing one
	// does not) and the logins from before knownSince, and says how many rows it removed, so
	// that the rows of an attack from ever new addresses go once it has passed.
	PruneThrottles(ctx context.Context, now, knownSince time.Time) (int64, error)
}

// Budget is a token bucket: Burst tokens when full, one more every Per.
type Budget struct {
	Key   string // printable ASCII, at most MaxBudgetKey bytes
	Burst int
	Per   time.Duration
}

// MaxBudgetKey bounds a budget's key.
const MaxBudgetKey = 200

// CheckBudgets reports what is wrong with budgets for ReserveGuess and RefundGuess: an empty,
// long or unprintable key, a key twice, a burst below 1, a period not positive.
func CheckBudgets(budgets []Budget) error {
	var errs []error
	seen := map[string]bool{}
	for _, b := range budgets {
		switch {
		case b.Key == "" || len(b.Key) > MaxBudgetKey:
			errs = append(errs, fmt.Errorf("budget key %q: must be 1 to %d bytes", b.Key, MaxBudgetKey))
		case slices.ContainsFunc([]byte(b.Key), func(c byte) bool { return c < 0x20 || c > 0x7e }):
			errs = append(errs, fmt.Errorf("budget key %q: must be printable ASCII", b.Key))
		case seen[b.Key]:
			errs = append(errs, fmt.Errorf("budget key %q given twice", b.Key))
		}
		seen[b.Key] = true
		if b.Burst < 1 || b.Per <= 0 {
			errs = append(errs, fmt.Errorf("budget %q: burst %d and period %v must be positive", b.Key, b.Burst, b.Per))
		}
	}
	return errors.Join(errs...)
}

// TakeTokens is ReserveGuess's arithmetic, for backends: given when each bucket of budgets is full
// again (fullAt, in the same order; a zero time for a bucket without a row), it returns when each
// is full again after one token is taken from every one, or how long to wait when one holds less
// than a token.
func TakeTokens(budgets []Budget, fullAt []time.Time, now time.Time) (next []time.Time, wait time.Duration) {
	next = make([]time.Time, len(budgets))
	for i, b := range budgets {
		t := fullAt[i]
		if t.Before(now) {
			t = now // full; a bucket does not fill beyond Burst
		}
		next[i] = t.Add(b.Per)
		// The bucket holds less than a token when what it would owe after this one exceeds what
		// a full bucket can lend.
		if over := next[i].Sub(now) - time.Duration(b.Burst)*b.Per; over > wait {
			wait = over
		}
	}
	if wait > 0 {
		return nil, wait
	}
	return next, 0
}

// GiveToken is RefundGuess's arithmetic: when bucket b, full again at fullAt, is full again once a
// token is put back at now.
func GiveToken(b Budget, fullAt, now time.Time) time.Time {
	t := fullAt.Add(-b.Per)
	if t.Before(now) {
		return now
	}
	return t
}
