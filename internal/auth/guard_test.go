package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/metadatatest"
	"github.com/berth/berth/internal/metadata/postgres"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// throttleStores are the places the guard's counts may live: this process's memory, and the
// stores that replicas share. The guard's tests run on each, with the same expectations.
var throttleStores = []struct {
	name string
	open func(t *testing.T) metadata.Throttles
}{
	{"memory", func(*testing.T) metadata.Throttles { return newMemThrottles() }},
	{"sqlite", func(t *testing.T) metadata.Throttles { return openStore(t) }},
	{"postgres", func(t *testing.T) metadata.Throttles { return openPostgres(t, enginetest.Postgres(t)) }},
}

func openPostgres(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(bg, dsn)
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// eachStore runs fn once for each place the counts may live, on a new, empty one.
func eachStore(t *testing.T, fn func(t *testing.T, st metadata.Throttles)) {
	for _, s := range throttleStores {
		t.Run(s.name, func(t *testing.T) { fn(t, s.open(t)) })
	}
}

// The memory's counts pass the stores' suite.
func TestMemThrottles(t *testing.T) {
	metadatatest.RunThrottles(t, func(*testing.T) metadata.Throttles { return newMemThrottles() })
}

func newTestGuard(st metadata.Throttles) (*guard, *fakeClock) {
	c := newFakeClock()
	g := newGuard(st)
	g.now = c.now
	return g, c
}

// take reserves n guesses and reports how many were granted, and the last wait.
func take(t *testing.T, g *guard, n int, name, addr string) (granted int, wait time.Duration) {
	t.Helper()
	for range n {
		r, w, err := g.reserve(bg, name, addr)
		if err != nil {
			t.Fatalf("reserve(%s, %s): %v", name, addr, err)
		}
		if r != nil {
			granted++
		} else {
			wait = w
		}
	}
	return granted, wait
}

// An account's guesses from one address: 5, then one every 3 minutes; from another address the
// account is not locked.
func TestGuardAccountFromAddress(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		g, clock := newTestGuard(st)
		if n, wait := take(t, g, 6, "alice", "10.0.0.1"); n != 5 || wait != 3*time.Minute {
			t.Fatalf("6 guesses at once: %d granted, wait %v; want 5 and 3m", n, wait)
		}
		if n, _ := take(t, g, 1, "alice", "10.0.0.2"); n != 1 {
			t.Errorf("alice from another address after 5 guesses elsewhere: refused")
		}
		if n, _ := take(t, g, 1, "bob", "10.0.0.1"); n != 1 {
			t.Errorf("bob from the guessing address (6 of its 20 spent): refused")
		}
		clock.advance(90 * time.Second)
		if _, wait := take(t, g, 1, "alice", "10.0.0.1"); wait != 90*time.Second {
			t.Errorf("half way: wait %v, want 1m30s", wait)
		}
		clock.advance(90 * time.Second)
		if n, wait := take(t, g, 2, "alice", "10.0.0.1"); n != 1 || wait != 3*time.Minute {
			t.Errorf("after 3 minutes: %d granted (wait %v), want 1 and then 3m", n, wait)
		}
	})
}

// An address's guesses over all accounts: 20, then one every 3 minutes.
func TestGuardAddress(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		g, clock := newTestGuard(st)
		for i := range 20 {
			if n, _ := take(t, g, 1, fmt.Sprint("user", i), "10.0.0.1"); n != 1 {
				t.Fatalf("guess %d for a new account: refused", i+1)
			}
		}
		if n, wait := take(t, g, 1, "victim", "10.0.0.1"); n != 0 || wait != 3*time.Minute {
			t.Errorf("21st guess from the address: granted %d, wait %v; want refused for 3m", n, wait)
		}
		if n, _ := take(t, g, 1, "victim", "10.0.0.2"); n != 1 {
			t.Errorf("from another address: refused")
		}
		clock.advance(3 * time.Minute)
		if n, _ := take(t, g, 1, "victim", "10.0.0.1"); n != 1 {
			t.Errorf("after 3 minutes: refused")
		}
	})
}

// A guesser spread over many addresses gets at most 100 guesses at an account, then 100 an hour;
// addresses the account logged in from before still may try.
func TestGuardAccountDistributed(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		g, clock := newTestGuard(st)
		g.succeeded(bg, "alice", "192.0.2.1")
		next := 0 // guessers come from ever new addresses
		guess := func() int {
			next++
			n, _ := take(t, g, 1, "alice", fmt.Sprintf("10.%d.%d.%d", next>>16, next>>8&255, next&255))
			return n
		}
		// One guess every 4 seconds for an hour: faster than the account's budget refills.
		const step = 4 * time.Second
		granted := 0
		for range time.Hour / step {
			granted += guess()
			clock.advance(step)
		}
		if granted < 199 || granted > 200 {
			t.Errorf("first hour: %d guesses granted, want 200 (100 at once, 100 over the hour)", granted)
		}
		granted = 0
		for range time.Hour / step {
			granted += guess()
			clock.advance(step)
		}
		if granted < 99 || granted > 101 {
			t.Errorf("second hour: %d guesses granted, want 100", granted)
		}
		for guess() == 1 { // the budget may have refilled by one since the last guess
		}
		if n, _ := take(t, g, 1, "alice", "203.0.113.5"); n != 0 {
			t.Errorf("a new address while the account's budget is spent: granted")
		}
		if n, _ := take(t, g, 5, "alice", "192.0.2.1"); n != 5 {
			t.Errorf("the address alice logged in from: %d of 5 guesses granted", n)
		}
		// Known for a while only: once that is over, it is an address like any other.
		clock.advance(knownFor)
		for guess() == 1 {
		}
		if n, _ := take(t, g, 1, "alice", "192.0.2.1"); n != 0 {
			t.Errorf("an address known %v ago (the account's budget spent): granted", knownFor)
		}
	})
}

// A reservation handed back (the secret was right) costs nothing.
func TestGuardRefund(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		g, _ := newTestGuard(st)
		for range 50 {
			r, wait, err := g.reserve(bg, "alice", "10.0.0.1")
			if r == nil {
				t.Fatalf("refused (wait %v, %v) although every guess was refunded", wait, err)
			}
			r.refund(bg)
		}
		if n, _ := take(t, g, 6, "alice", "10.0.0.1"); n != 5 {
			t.Errorf("after refunds: %d of 6 granted, want 5", n)
		}
	})
}

// However many arrive at once, no more than the budget are granted.
func TestGuardConcurrent(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		g, _ := newTestGuard(st)
		count := atOnce(60, func(int) int {
			if r, _, _ := g.reserve(bg, "alice", "10.0.0.1"); r != nil {
				return 1
			}
			return 0
		})
		if count[1] != 5 {
			t.Errorf("60 at once: %d granted, want 5", count[1])
		}
	})
}

// Names and addresses a client makes up (any bytes, any length) make keys that a database holds
// and that stay short; every real account name and address is its own key.
func TestKeyPart(t *testing.T) {
	for _, s := range []string{"alice", "ci-bot.2", "10.0.0.1", "2001:db8::/64"} {
		if keyPart(s) != s {
			t.Errorf("keyPart(%q) = %q, want it unchanged", s, keyPart(s))
		}
	}
	seen := map[string]string{}
	for _, s := range []string{"", "a b", "nul\x00", "\xff\xfe", strings.Repeat("x", 65), "#alice", "é"} {
		k := keyPart(s)
		if err := metadata.CheckBudgets([]metadata.Budget{pairBudget.of("p:" + k + " " + k)}); err != nil {
			t.Errorf("keyPart(%q) = %q: %v", s, k, err)
		}
		if other, ok := seen[k]; ok {
			t.Errorf("keyPart(%q) = keyPart(%q)", s, other)
		}
		seen[k] = s
	}
	g, _ := newTestGuard(openPostgres(t, enginetest.Postgres(t)))
	if n, _ := take(t, g, 6, "evil\x00\xff name", "not an address"); n != 5 {
		t.Errorf("a made-up name from a made-up address: %d of 6 granted, want 5", n)
	}
}

// IPv6 addresses count by /64; IPv4-mapped ones as IPv4.
func TestGuardIPv6(t *testing.T) {
	g, _ := newTestGuard(nil)
	for i := range 20 {
		take(t, g, 1, fmt.Sprint("u", i), fmt.Sprintf("2001:db8:0:1::%x", i+1))
	}
	if n, _ := take(t, g, 1, "v", "2001:db8:0:1:ffff:ffff:ffff:ffff"); n != 0 {
		t.Errorf("another address of the same /64 after 20 guesses from it: granted")
	}
	if n, _ := take(t, g, 1, "v", "2001:db8:0:2::1"); n != 1 {
		t.Errorf("an address of another /64: refused")
	}
	if addrKey("::ffff:10.1.2.3") != "10.1.2.3" || addrKey("2001:db8::1") != "2001:db8::/64" {
		t.Errorf("addrKey: %q %q", addrKey("::ffff:10.1.2.3"), addrKey("2001:db8::1"))
	}
}

// An attack from more places than the memory's table holds cannot grow it without bound, nor
// make it forget counts: full buckets are pruned, and when that is not enough new guessers are
// refused. (A shared store prunes on a schedule instead: TestPruneThrottles.)
func TestGuardBounded(t *testing.T) {
	m := newMemThrottles()
	g, clock := newTestGuard(m)
	for i := range maxGuardKeys {
		m.buckets[fmt.Sprint("a:old", i)] = clock.now().Add(addrBudget.per) // one guess owed
	}
	clock.advance(addrBudget.per) // the old buckets have refilled
	if n, _ := take(t, g, 1, "alice", "10.0.0.1"); n != 1 {
		t.Fatal("refused although every bucket in the table is full")
	}
	if n := len(m.buckets); n != 3 {
		t.Errorf("after pruning: %d buckets, want 3", n)
	}
	for i := range maxGuardKeys - 3 {
		m.buckets[fmt.Sprint("a:new", i)] = clock.now().Add(10 * addrBudget.per) // 10 guesses owed
	}
	if n, _ := take(t, g, 1, "bob", "10.9.9.9"); n != 0 {
		t.Error("a new guesser granted while the table is full of live counts")
	}
	if len(m.buckets) > maxGuardKeys {
		t.Errorf("%d buckets, want at most %d", len(m.buckets), maxGuardKeys)
	}
	if n, _ := take(t, g, 5, "alice", "10.0.0.1"); n != 4 {
		t.Errorf("a known guesser while the table is full: %d of 5 granted, want its 4 left", n)
	}
}

// get sends GET /token with Basic credentials from addr.
func (e *env) getFrom(addr, user, pass string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/token?service=berth", nil)
	req.SetBasicAuth(user, pass)
	req.RemoteAddr = addr + ":40000"
	w := httptest.NewRecorder()
	e.svc.ServeHTTP(w, req)
	return w
}

// Through the token endpoint and Authorize: an account locked from one address gets 429 with
// Retry-After there, right secret or not; from another address the right secret works (a
// guesser cannot lock a user out remotely).
func TestThrottleHTTP(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		e := newEnv(t, Options{Throttles: st})
		secret := e.robot(t, "ci", time.Time{})
		e.grant(t, "robot:ci", "team/*", "pull")
		for i := range 5 {
			if w := e.getFrom("198.51.100.7", "ci", "wrong"); w.Code != 401 {
				t.Fatalf("wrong secret %d: %d %s", i+1, w.Code, w.Body)
			}
		}
		w := e.getFrom("198.51.100.7", "ci", secret)
		if w.Code != 429 || !strings.Contains(w.Body.String(), "TOOMANYREQUESTS") || strings.Contains(w.Body.String(), secret) {
			t.Errorf("the right secret from the guessing address: %d %s, want 429 TOOMANYREQUESTS", w.Code, w.Body)
		}
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 170 || ra > 181 {
			t.Errorf("Retry-After %q, want about 180 seconds", w.Header().Get("Retry-After"))
		}
		req := httptest.NewRequest(http.MethodGet, "/check?name=team/a&need=pull", nil)
		req.SetBasicAuth("ci", secret)
		req.RemoteAddr = "198.51.100.7:1234"
		rec := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(rec, req)
		if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
			t.Errorf("Basic on /v2/ from the guessing address: %d %q, want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
		}
		// The POST password grant is guarded the same way.
		form := url.Values{"grant_type": {"password"}, "username": {"ci"}, "password": {secret}}
		preq := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		preq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		preq.RemoteAddr = "198.51.100.7:1"
		prec := httptest.NewRecorder()
		e.svc.ServeHTTP(prec, preq)
		if prec.Code != 429 {
			t.Errorf("POST password grant from the guessing address: %d, want 429", prec.Code)
		}
		if w := e.getFrom("203.0.113.9", "ci", secret); w.Code != 200 {
			t.Errorf("the right secret from another address: %d %s, want 200", w.Code, w.Body)
		}
	})
}

// atOnce runs fn n times at once (released together) and counts what they return.
func atOnce(n int, fn func(i int) int) map[int]int {
	out := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out <- fn(i)
		}()
	}
	close(start)
	wg.Wait()
	close(out)
	count := map[int]int{}
	for c := range out {
		count[c]++
	}
	return count
}

// 60 different wrong passwords for one user from one address, all at once: only the budget's 5
// are checked (README: the limit is never exceeded by racing).
func TestLoginRace(t *testing.T) {
	eachStore(t, func(t *testing.T, st metadata.Throttles) {
		e := newEnv(t, Options{Throttles: st})
		e.user(t, "alice")
		before := e.svc.logins.argonRuns.Load()
		count := atOnce(60, func(i int) int { return e.getFrom("198.51.100.7", "alice", fmt.Sprintf("wrong password %d", i)).Code })
		if count[401] != 5 || count[429] != 55 {
			t.Errorf("60 wrong passwords at once: %v, want 5×401 and 55×429", count)
		}
		if n := e.svc.logins.argonRuns.Load() - before; n != 5 {
			t.Errorf("%d passwords checked, want 5", n)
		}
		failed := 0
		for _, l := range e.audit.lines(t) {
			if l["msg"] == "login failed" {
				failed++
			}
		}
		if failed != 5 {
			t.Errorf("%d 'login failed' audit lines, want 5", failed)
		}
	})
}

// The same login from one address, 50 times at once (a client with many connections sending
// Basic on each, after a restart emptied the cache of logins): one check answers them all, right
// or wrong, and spends one guess.
func TestLoginCoalesced(t *testing.T) {
	e := newEnv(t, Options{})
	pass := e.user(t, "alice")
	before := e.svc.logins.argonRuns.Load()
	if count := atOnce(50, func(int) int { return e.getFrom("198.51.100.8", "alice", pass).Code }); count[200] != 50 {
		t.Errorf("50 identical right logins at once: %v, want 50×200", count)
	}
	if n := e.svc.logins.argonRuns.Load() - before; n < 1 || n > 2 {
		t.Errorf("%d passwords checked for 50 identical logins, want 1 (2 if the first ended before the last began)", n)
	}
	before = e.svc.logins.argonRuns.Load()
	if count := atOnce(50, func(int) int { return e.getFrom("198.51.100.9", "alice", "the same wrong one").Code }); count[401]+count[429] != 50 || count[401] == 0 {
		t.Errorf("50 identical wrong logins at once: %v, want 401s (and 429s once the budget is spent)", count)
	}
	if n := e.svc.logins.argonRuns.Load() - before; n > 5 {
		t.Errorf("%d checks for 50 identical wrong logins, want at most the budget's 5", n)
	}
}

// The check a wrong secret costs depends on the secret's shape only: whether the name is a user,
// a robot or nobody, a password-shaped secret runs argon2id once and a robot-shaped one never.
func TestLoginCostByShape(t *testing.T) {
	e := newEnv(t, Options{})
	pass := e.user(t, "alice")
	secret := e.robot(t, "ci", time.Time{})
	wrongRobot, _, _ := NewRobotSecret()
	for i, c := range []struct {
		user, pass string
		code       int
		argon      int64
	}{
		{"alice", "wrong password", 401, 1},
		{"ci", "wrong password", 401, 1},
		{"nobody", "wrong password", 401, 1},
		{"alice", wrongRobot, 401, 0},
		{"ci", wrongRobot, 401, 0},
		{"nobody", wrongRobot, 401, 0},
		{"alice", secret, 401, 0}, // the robot's secret for a user: still the robot check
		{"ci", pass, 401, 1},      // a user's password for a robot: still argon2id
		{"ci", secret, 200, 0},
		{"alice", pass, 200, 1},
	} {
		before := e.svc.logins.argonRuns.Load()
		// A new address each time: the budgets are not what this is about.
		w := e.getFrom(fmt.Sprintf("10.0.0.%d", i+1), c.user, c.pass)
		if w.Code != c.code {
			t.Errorf("%s with %.12s...: %d, want %d", c.user, c.pass, w.Code, c.code)
		}
		if n := e.svc.logins.argonRuns.Load() - before; n != c.argon {
			t.Errorf("%s with %.12s...: %d argon2id checks, want %d", c.user, c.pass, n, c.argon)
		}
	}
	if !IsRobotSecret(secret) || IsRobotSecret(secret+"x") || IsRobotSecret(RobotPrefix+strings.Repeat("!", 43)) {
		t.Error("IsRobotSecret misjudges shapes")
	}
	if ValidPassword(RobotPrefix+"something long") == nil {
		t.Error("ValidPassword accepts a robot-shaped password")
	}
}

// argon2id checks: at most argonSlots at once, and the next one is from the address that has
// guessed least lately: a client logging in from elsewhere during a flood is served next, not
// after the flood's queue (item 1 of issue 8: a correct login within 5 s during a flood).
func TestArgonGate(t *testing.T) {
	g, _ := newTestGuard(nil)
	l := newLogins(g.weight)
	var running, peak atomic.Int64
	var mu sync.Mutex
	var order []string
	release := make(chan struct{})
	fn := func(addr string) func() (bool, error) {
		return func() (bool, error) {
			mu.Lock()
			order = append(order, addr)
			mu.Unlock()
			if n := running.Add(1); n > peak.Load() {
				peak.Store(n)
			}
			<-release
			running.Add(-1)
			return false, nil
		}
	}
	var wg sync.WaitGroup
	const addrs, each = 10, 8
	for a := range addrs {
		addr := fmt.Sprintf("10.0.0.%d", a)
		take(t, g, each, fmt.Sprint("user", a), addr) // the flood's guesses, reserved as logins do
		for range each {
			wg.Add(1)
			go func() { defer wg.Done(); l.argon(context.Background(), addr, fn(addr)) }()
		}
	}
	// The flood is queued; then a client logs in from elsewhere.
	waitFor(t, func() bool { return running.Load() == int64(argonSlots) })
	waitFor(t, func() bool {
		l.gate.mu.Lock()
		defer l.gate.mu.Unlock()
		n := 0
		for _, ws := range l.gate.waiting {
			n += len(ws)
		}
		return n == addrs*each-argonSlots
	})
	take(t, g, 1, "dana", "192.0.2.1")
	wg.Add(1)
	go func() { defer wg.Done(); l.argon(context.Background(), "192.0.2.1", fn("192.0.2.1")) }()
	waitFor(t, func() bool {
		l.gate.mu.Lock()
		defer l.gate.mu.Unlock()
		return len(l.gate.waiting["192.0.2.1"]) == 1
	})
	close(release)
	wg.Wait()
	if p := peak.Load(); p > int64(argonSlots) {
		t.Errorf("%d checks at once, want at most %d", p, argonSlots)
	}
	for i, a := range order {
		if a == "192.0.2.1" {
			if i > argonSlots {
				t.Errorf("the newcomer ran after %d of the flood's checks, want right after the %d running", i, argonSlots)
			}
		}
	}
	if len(order) != addrs*each+1 {
		t.Errorf("%d checks ran, want %d", len(order), addrs*each+1)
	}
	// A caller that leaves while waiting gives up its turn, and a slot is not lost.
	ctx, cancel := context.WithCancel(context.Background())
	for range argonSlots {
		if err := l.gate.acquire(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if _, err := l.argon(ctx, "10.1.1.1", func() (bool, error) { return true, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait: %v, want context.Canceled", err)
	}
	for range argonSlots {
		l.gate.release()
	}
	if ok, err := l.argon(context.Background(), "10.1.1.1", func() (bool, error) { return true, nil }); !ok || err != nil {
		t.Errorf("after the cancelled wait: %v %v", ok, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Unknown refresh tokens count against the address they come from, and only against it:
// guessing refresh tokens from one place must not lock everyone out of refreshing.
func TestThrottleRefreshTokens(t *testing.T) {
	e := newEnv(t, Options{})
	e.user(t, "alice")
	rt := refreshTokenFor(t, e, "alice")
	post := func(addr, tok string) *httptest.ResponseRecorder {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}
		req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr + ":1234"
		w := httptest.NewRecorder()
		e.svc.ServeHTTP(w, req)
		return w
	}
	for i := range int(addrBudget.burst) {
		if w := post("198.51.100.7", fmt.Sprint("berth_rft_guess", i)); w.Code != 401 {
			t.Fatalf("guess %d: %d %s", i, w.Code, w.Body)
		}
	}
	if w := post("198.51.100.7", rt); w.Code != 429 {
		t.Errorf("the guesser with a real refresh token: %d, want 429", w.Code)
	}
	if w := post("203.0.113.9", rt); w.Code != 200 {
		t.Errorf("a refresh from another address after guesses elsewhere: %d %s, want 200", w.Code, w.Body)
	}
}

// refreshTokenFor logs in as user with access_type=offline and returns the refresh token.
func refreshTokenFor(t *testing.T, e *env, user string) string {
	t.Helper()
	r := e.postToken(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {"pw-" + user}, "access_type": {"offline"}})
	var body tokenResponse
	if err := json.Unmarshal(r.body, &body); err != nil || body.RefreshToken == "" {
		t.Fatalf("login %s: %d %s", user, r.status, short(r.body))
	}
	return body.RefreshToken
}

func TestThrottledError(t *testing.T) {
	err := error(&ThrottledError{RetryAfter: 1500 * time.Millisecond})
	var te *ThrottledError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "2s") {
		t.Errorf("ThrottledError: %v", err)
	}
}

// Remembered logins that expired are dropped within a minute, not only when the cache is full.
func TestLoginCacheSweeps(t *testing.T) {
	l := newLogins(func(string) float64 { return 0 })
	l.remember(loginKey("a", "1"), cachedLogin{expires: time.Now().Add(-time.Second)})
	l.remember(loginKey("b", "2"), cachedLogin{expires: time.Now().Add(time.Minute)})
	if len(l.cache) != 2 {
		t.Fatalf("%d logins remembered, want 2 (the sweep ran a moment ago)", len(l.cache))
	}
	l.swept = time.Now().Add(-2 * time.Minute)
	l.remember(loginKey("c", "3"), cachedLogin{expires: time.Now().Add(time.Minute)})
	if _, ok := l.cache[loginKey("a", "1")]; ok || len(l.cache) != 2 {
		t.Errorf("after a minute: %d logins remembered (the expired one kept: %v), want 2", len(l.cache), ok)
	}
}
