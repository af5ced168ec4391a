package auth

import (
	"net/netip"
	"sync"
	"time"
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
type guard struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[string]*bucket    // "p" name \x00 addr, "a" addr, "n" name
	known   map[string]*knownAddr // by account name: addresses with a successful login
}

// budget is a token bucket: burst guesses, then one more every per.
type budget struct {
	burst float64
	per   time.Duration
}

var (
	pairBudget = budget{5, 3 * time.Minute}
	addrBudget = budget{20, 3 * time.Minute}
	nameBudget = budget{100, 36 * time.Second}
)

// knownFor is how long a successful login makes its address known for the account, and
// maxKnown how many addresses an account remembers.
const (
	knownFor     = 30 * 24 * time.Hour
	maxKnown     = 16
	maxGuardKeys = 200000
)

type bucket struct {
	tokens float64
	at     time.Time
	b      budget
}

// level returns the bucket's tokens at now.
func (k *bucket) level(now time.Time) float64 {
	return min(k.b.burst, k.tokens+float64(now.Sub(k.at))/float64(k.b.per))
}

type knownAddr struct {
	addrs map[string]time.Time // address -> last successful login
}

func newGuard() *guard {
	return &guard{now: time.Now, buckets: map[string]*bucket{}, known: map[string]*knownAddr{}}
}

// addrKey is the key of an address for counting: IPv4 itself, IPv6 its /64.
func addrKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// reservation is a guess taken from budgets; refund hands it back.
type reservation struct {
	g    *guard
	keys []string
}

// reserve takes one guess for account name from addr ("" name: the address only, for secrets that
// cannot be guessed: OIDC and refresh tokens), or says how long to wait.
func (g *guard) reserve(name, addr string) (*reservation, time.Duration) {
	addr = addrKey(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	type want struct {
		key string
		b   budget
	}
	wants := []want{{"a" + addr, addrBudget}}
	if name != "" {
		wants = append(wants, want{"p" + name + "\x00" + addr, pairBudget})
		if !g.isKnown(name, addr, now) {
			wants = append(wants, want{"n" + name, nameBudget})
		}
	}
	var wait time.Duration
	for _, w := range wants {
		if k := g.buckets[w.key]; k != nil {
			if lv := k.level(now); lv < 1 {
				wait = max(wait, time.Duration((1-lv)*float64(w.b.per)))
			}
		}
	}
	if wait > 0 {
		return nil, wait
	}
	missing := 0
	for _, w := range wants {
		if g.buckets[w.key] == nil {
			missing++
		}
	}
	if len(g.buckets)+missing > maxGuardKeys {
		g.prune(now)
		if len(g.buckets)+missing > maxGuardKeys {
			// Guesses from more places than the table holds: refuse rather than forget counts.
			return nil, time.Minute
		}
	}
	r := &reservation{g: g}
	for _, w := range wants {
		k := g.buckets[w.key]
		if k == nil {
			k = &bucket{tokens: w.b.burst, at: now, b: w.b}
			g.buckets[w.key] = k
		}
		k.tokens, k.at = k.level(now)-1, now
		r.keys = append(r.keys, w.key)
	}
	return r, 0
}

// refund hands a reservation's guesses back: the secret was right (or never checked).
func (r *reservation) refund() {
	if r == nil {
		return
	}
	g := r.g
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, key := range r.keys {
		if k := g.buckets[key]; k != nil {
			k.tokens, k.at = min(k.b.burst, k.level(now)+1), now
		}
	}
}

// weight is how many guesses addr (an address key) has made lately, as its budget counts them.
func (g *guard) weight(addr string) float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if k := g.buckets["a"+addr]; k != nil {
		return k.b.burst - k.level(g.now())
	}
	return 0
}

// succeeded remembers that account name logged in from addr.
func (g *guard) succeeded(name, addr string) {
	if name == "" {
		return
	}
	addr = addrKey(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	k := g.known[name]
	if k == nil {
		if len(g.known) >= maxGuardKeys {
			return
		}
		k = &knownAddr{addrs: map[string]time.Time{}}
		g.known[name] = k
	}
	if _, ok := k.addrs[addr]; !ok && len(k.addrs) >= maxKnown {
		var oldest string
		for a, t := range k.addrs {
			if oldest == "" || t.Before(k.addrs[oldest]) {
				oldest = a
			}
		}
		delete(k.addrs, oldest)
	}
	k.addrs[addr] = now
}

func (g *guard) isKnown(name, addr string, now time.Time) bool {
	k := g.known[name]
	if k == nil {
		return false
	}
	t, ok := k.addrs[addr]
	return ok && now.Sub(t) < knownFor
}

// prune drops buckets that have refilled completely: they hold nothing a new one would not.
func (g *guard) prune(now time.Time) {
	for key, k := range g.buckets {
		if k.level(now) >= k.b.burst {
			delete(g.buckets, key)
		}
	}
}
