package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// guard limits password guessing. Every login attempt that would check a secret first reserves
// one guess from three budgets, and is refused (429, nothing checked) when one is spent:
//
//   - the account from this address: 5 guesses, then one more every 3 minutes;
//   - the address, over all accounts: 20 guesses, then one every 3 minutes;
//   - the account, over all addresses: 100 guesses, then one every 36 seconds (100 an hour).
//
// A reservation is taken before the secret is checked and handed back when it was right, so
// however many attempts arrive at once, no more are checked than the budgets hold. Only the
// account's budget for one address is spent by a guesser there: a client at another address that
// presents the right secret is not locked out. When the account's own budget is spent (a guesser
// spread over many addresses), addresses from which the account has logged in before still may
// try. An IPv6 address counts by its /64, as Docker Hub counts them: one host holds a whole /64.
//
// The guard decides which budgets a login takes from; how full each is lives in counts: this
// process's memory when it alone serves its store, or the store itself when replicas share it
// (Options.Throttles), where a reservation is one atomic step, so that a guesser spread over N
// replicas gets the budgets once, not N times, and as exactly as from one process.
type guard struct {
	counts metadata.Throttles
	now    func() time.Time
	// tally is this process's recent guesses by address: the argon2id gate (per process, as
	// the CPU is) orders its queue by it without asking a shared store.
	tally tally
}

// budget is a token bucket: burst guesses, then one more every per.
type budget struct {
	burst int
	per   time.Duration
}

var (
	pairBudget = budget{5, 3 * time.Minute}
	addrBudget = budget{20, 3 * time.Minute}
	nameBudget = budget{100, 36 * time.Second}
)

func (b budget) of(key string) metadata.Budget {
	return metadata.Budget{Key: key, Burst: b.burst, Per: b.per}
}

// knownFor is how long a successful login makes its address known for the account, and
// maxKnown how many addresses an account remembers. maxGuardKeys bounds the buckets and accounts
// that one process holds in memory.
const (
	knownFor     = 30 * 24 * time.Hour
	maxKnown     = 16
	maxGuardKeys = 200000
)

// newGuard returns a guard keeping its counts in counts, or in memory when counts is nil.
func newGuard(counts metadata.Throttles) *guard {
	if counts == nil {
		counts = newMemThrottles()
	}
	return &guard{counts: counts, now: time.Now, tally: tally{fullAt: map[string]time.Time{}}}
}

// addrKey is the key of an address for counting: IPv4 itself, IPv6 its /64.
func addrKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return keyPart(addr)
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// keyPart is s as part of a bucket's key: itself when it is short printable ASCII without spaces
// (every account name, every address), else a hash of it, so that any name a client sends makes a
// key a database can hold and the sizes of the keys stay bounded.
func keyPart(s string) string {
	ok := s != "" && len(s) <= 64
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] <= '~'
	}
	if ok && s[0] != '#' {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "#" + hex.EncodeToString(sum[:16])
}

// reservation is a guess taken from budgets; refund hands it back.
type reservation struct {
	g       *guard
	budgets []metadata.Budget
	addr    string
}

// reserve takes one guess for account name from addr ("" name: the address only, for secrets that
// cannot be guessed: OIDC and refresh tokens), or says how long to wait. An error (the shared
// store unavailable) refuses the login: no guess is checked unless it was counted.
func (g *guard) reserve(ctx context.Context, name, addr string) (*reservation, time.Duration, error) {
	addr = addrKey(addr)
	now := g.now()
	budgets := []metadata.Budget{addrBudget.of("a:" + addr)}
	if name != "" {
		name = keyPart(name)
		budgets = append(budgets, pairBudget.of("p:"+name+" "+addr))
		known, err := g.counts.KnownAddress(ctx, name, addr, now.Add(-knownFor))
		if err != nil {
			return nil, 0, err
		}
		if !known {
			budgets = append(budgets, nameBudget.of("n:"+name))
		}
	}
	wait, err := g.counts.ReserveGuess(ctx, budgets, now)
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	g.tally.add(addr, now, 1)
	return &reservation{g: g, budgets: budgets, addr: addr}, 0, nil
}

// refundTimeout bounds the store writes that follow a right secret (the refund, the known
// address), which run even when the client has left.
const refundTimeout = 5 * time.Second

// refund hands a reservation's guesses back: the secret was right (or never checked). A refund
// the store fails to take costs the account one guess, which its budget gives back within
// minutes: not a reason to refuse a login that was right.
func (r *reservation) refund(ctx context.Context) {
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refundTimeout)
	defer cancel()
	now := r.g.now()
	r.g.counts.RefundGuess(ctx, r.budgets, now)
	r.g.tally.add(r.addr, now, -1)
}

// weight is how many guesses addr (an address key) has made lately through this process, as its
// budget counts them.
func (g *guard) weight(addr string) float64 { return g.tally.weight(addr, g.now()) }

// succeeded remembers that account name logged in from addr. Not remembered (the store
// unavailable), the address is one like any other for the account.
func (g *guard) succeeded(ctx context.Context, name, addr string) {
	if name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refundTimeout)
	defer cancel()
	g.counts.RecordLogin(ctx, keyPart(name), addrKey(addr), g.now(), maxKnown)
}

// prune forgets full buckets and old logins; see metadata.Throttles.
func (g *guard) prune(ctx context.Context) (int64, error) {
	now := g.now()
	g.tally.prune(now)
	return g.counts.PruneThrottles(ctx, now, now.Add(-knownFor))
}

// tally counts guesses by address as the address budget does, without a limit: a bucket per
// address, kept as the time at which it is empty of guesses again.
type tally struct {
	mu     sync.Mutex
	fullAt map[string]time.Time
}

// add counts n (1 or -1) guesses from addr.
func (t *tally) add(addr string, now time.Time, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := addrBudget.of(addr)
	at, ok := t.fullAt[addr]
	if n < 0 {
		if ok {
			t.fullAt[addr] = metadata.GiveToken(b, at, now)
		}
		return
	}
	if !ok && len(t.fullAt) >= maxGuardKeys {
		t.pruneLocked(now)
		if len(t.fullAt) >= maxGuardKeys {
			return // an address not counted goes first at the gate: the budgets still hold
		}
	}
	if at.Before(now) {
		at = now
	}
	t.fullAt[addr] = at.Add(b.Per)
}

func (t *tally) weight(addr string, now time.Time) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.fullAt[addr].Sub(now); d > 0 {
		return float64(d) / float64(addrBudget.per)
	}
	return 0
}

func (t *tally) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
}

func (t *tally) pruneLocked(now time.Time) {
	for a, at := range t.fullAt {
		if !at.After(now) {
			delete(t.fullAt, a)
		}
	}
}
