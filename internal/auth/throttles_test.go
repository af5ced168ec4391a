package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
)

// replicas are Services sharing one store of accounts and one of throttles, each with its own
// memory (caches of logins, argon2id gate), as berth's replicas on PostgreSQL are.
type replicas struct {
	*env
	svcs []*Service
}

func newReplicas(t *testing.T, n int, st metadata.Throttles) *replicas {
	t.Helper()
	r := &replicas{env: newEnv(t, Options{Throttles: st})}
	r.svcs = append(r.svcs, r.svc)
	for range n - 1 {
		s := newService(t, Options{Accounts: r.st, Throttles: st, Audit: r.svc.opt.Audit})
		s.guard.now = r.clock.now
		r.svcs = append(r.svcs, s)
	}
	return r
}

// getFrom sends GET /token with Basic credentials from addr to replica i.
func (r *replicas) getFrom(i int, addr, user, pass string) int {
	req := httptest.NewRequest(http.MethodGet, "/token?service=berth", nil)
	req.SetBasicAuth(user, pass)
	req.RemoteAddr = addr + ":40000"
	w := httptest.NewRecorder()
	r.svcs[i].ServeHTTP(w, req)
	return w.Code
}

func (r *replicas) argonRuns() int64 {
	var n int64
	for _, s := range r.svcs {
		n += s.logins.argonRuns.Load()
	}
	return n
}

// sharedStores are the stores that replicas may share; the memory is this process's only.
func sharedStores(t *testing.T, fn func(t *testing.T, st metadata.Throttles)) {
	for _, s := range throttleStores {
		if s.name != "memory" {
			t.Run(s.name, func(t *testing.T) { fn(t, s.open(t)) })
		}
	}
}

// 60 different wrong passwords for one user from one address, all at once, spread over three
// replicas: the budget's 5 are checked, as on one (TestLoginRace); the right password from
// another address is let in; an address the account logged in from through one replica is known
// to the others.
func TestLoginRaceReplicas(t *testing.T) {
	sharedStores(t, func(t *testing.T, st metadata.Throttles) {
		r := newReplicas(t, 3, st)
		pass := r.user(t, "alice")
		if code := r.getFrom(0, "192.0.2.1", "alice", pass); code != 200 {
			t.Fatalf("alice from 192.0.2.1: %d", code)
		}
		before := r.argonRuns()
		count := atOnce(60, func(i int) int {
			return r.getFrom(i%3, "198.51.100.7", "alice", fmt.Sprintf("wrong password %d", i))
		})
		if count[401] != 5 || count[429] != 55 {
			t.Errorf("60 wrong passwords at once over 3 replicas: %v, want 5×401 and 55×429", count)
		}
		if n := r.argonRuns() - before; n != 5 {
			t.Errorf("%d passwords checked over 3 replicas, want 5", n)
		}
		if code := r.getFrom(2, "203.0.113.9", "alice", pass); code != 200 {
			t.Errorf("the right password from another address: %d, want 200", code)
		}
		// The account's own budget spent by a guesser spread over many addresses: only the
		// addresses alice logged in from may try, whichever replica they reach.
		for spent := 0; ; spent++ {
			wait, err := st.ReserveGuess(bg, []metadata.Budget{nameBudget.of("n:alice")}, r.clock.now())
			if err != nil || spent > nameBudget.burst {
				t.Fatalf("spending alice's budget: %v, %d taken", err, spent)
			}
			if wait > 0 {
				break
			}
		}
		for _, s := range r.svcs {
			s.logins.mu.Lock()
			clear(s.logins.cache)
			s.logins.mu.Unlock()
		}
		if code := r.getFrom(1, "192.0.2.1", "alice", pass); code != 200 {
			t.Errorf("alice from the address she logged in from through another replica: %d, want 200", code)
		}
		if code := r.getFrom(2, "192.0.2.2", "alice", pass); code != 429 {
			t.Errorf("alice from a new address with her budget spent: %d, want 429", code)
		}
	})
}

// The shared store unreachable during a login: 503, and nothing is checked (a guess that could
// not be counted is not judged); Basic credentials on /v2/ get the store's error, which the
// registry answers with 503. Once the store is back, logins work.
func TestThrottleUnavailable(t *testing.T) {
	dsn, err := url.Parse(enginetest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	f := enginetest.Forward(t, dsn.Host)
	dsn.Host = f.Addr()
	q := dsn.Query()
	q.Set("connect_timeout", "2")
	dsn.RawQuery = q.Encode()
	e := newEnv(t, Options{Throttles: openPostgres(t, dsn.String())})
	pass := e.user(t, "alice")
	e.grant(t, "user:alice", "team/*", "pull")

	f.Cut()
	before := e.svc.logins.argonRuns.Load()
	for _, p := range []string{"wrong", pass} {
		if w := e.getFrom("198.51.100.7", "alice", p); w.Code != http.StatusServiceUnavailable {
			t.Errorf("a login with the throttles' store cut off: %d %s, want 503", w.Code, w.Body)
		}
	}
	if n := e.svc.logins.argonRuns.Load() - before; n != 0 {
		t.Errorf("%d passwords checked while the throttles' store was cut off, want 0", n)
	}
	req := httptest.NewRequest(http.MethodGet, "/v2/team/a/manifests/v1", nil)
	req.SetBasicAuth("alice", pass)
	req.RemoteAddr = "198.51.100.7:1234"
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	if _, _, err := e.svc.Authorize(req.WithContext(ctx), "team/a", "team/a", Pull); !errors.Is(err, metadata.ErrUnavailable) {
		t.Errorf("Basic credentials with the throttles' store cut off: %v, want metadata.ErrUnavailable", err)
	}

	f.Start()
	if w := e.getFrom("198.51.100.7", "alice", pass); w.Code != http.StatusOK {
		t.Errorf("a login once the store is back: %d %s", w.Code, w.Body)
	}
}

// The shared store's rows of an attack go once it has passed: the server prunes every minute.
func TestPruneThrottles(t *testing.T) {
	sharedStores(t, func(t *testing.T, st metadata.Throttles) {
		r := newReplicas(t, 1, st)
		pass := r.user(t, "alice")
		for i := range 30 {
			r.getFrom(0, fmt.Sprintf("10.0.0.%d", i), "alice", "wrong")
		}
		if code := r.getFrom(0, "192.0.2.1", "alice", pass); code != 200 {
			t.Fatalf("alice: %d", code)
		}
		// At once: the buckets of the right login, refunded, are full.
		if n, err := r.svc.PruneThrottles(bg); err != nil || n != 2 {
			t.Errorf("PruneThrottles at once: %d, %v; want 2", n, err)
		}
		// 30 guesses from 30 addresses: 30 address and 30 pair buckets, full after 3 minutes;
		// alice's own, after 29 × 36 s; her login is forgotten after knownFor.
		r.clock.advance(pairBudget.per)
		if n, err := r.svc.PruneThrottles(bg); err != nil || n != 60 {
			t.Errorf("PruneThrottles after %v: %d, %v; want 60", pairBudget.per, n, err)
		}
		r.clock.advance(knownFor)
		if n, err := r.svc.PruneThrottles(bg); err != nil || n != 2 {
			t.Errorf("PruneThrottles after %v: %d, %v; want 2 (alice's bucket and login)", knownFor, n, err)
		}
	})
}
