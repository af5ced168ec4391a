package auth

import (
	"sync"
	"time"
)

// throttle slows down password guessing: after a few failed logins for one account, or from one
// address, further attempts are refused, right password or not, for a time that doubles with each
// further failure. A refused attempt tells the guesser nothing.
type throttle struct {
	mu      sync.Mutex
	entries map[string]*failures
	now     func() time.Time
}

type failures struct {
	count int
	first time.Time // of the window
	until time.Time // locked until
}

// Limits: 5 failures per account and 20 per address in 15 minutes are free; each failure beyond
// locks for 1s, 2s, 4s, ... up to 15 minutes.
const (
	failWindow     = 15 * time.Minute
	freeFailsName  = 5
	freeFailsAddr  = 20
	maxLockout     = 15 * time.Minute
	maxThrottleLen = 100000
)

func newThrottle() *throttle {
	return &throttle{entries: map[string]*failures{}, now: time.Now}
}

// wait returns how long the account name, from addr, must wait before trying again (0: may try).
// An empty name counts only the address (OIDC and refresh tokens cannot be guessed, and one
// shared name for every CI job must not let anyone lock them all out).
func (t *throttle) wait(name, addr string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var d time.Duration
	for _, k := range []string{"n:" + name, "a:" + addr} {
		if k == "n:" {
			continue
		}
		if f := t.entries[k]; f != nil && f.until.After(now) {
			d = max(d, f.until.Sub(now))
		}
	}
	return d
}

// fail records a failed login.
func (t *throttle) fail(name, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.entries) >= maxThrottleLen {
		for k, f := range t.entries {
			if now.Sub(f.first) > failWindow && !f.until.After(now) {
				delete(t.entries, k)
			}
		}
	}
	for _, k := range []struct {
		key  string
		free int
	}{{"n:" + name, freeFailsName}, {"a:" + addr, freeFailsAddr}} {
		if k.key == "n:" {
			continue
		}
		f := t.entries[k.key]
		if f == nil || now.Sub(f.first) > failWindow && !f.until.After(now) {
			if len(t.entries) >= maxThrottleLen {
				continue // full of fresh entries: an attack spread over many addresses; keep memory bounded
			}
			f = &failures{first: now}
			t.entries[k.key] = f
		}
		f.count++
		if over := f.count - k.free; over > 0 {
			lock := maxLockout
			if over < 20 {
				lock = min(time.Second<<(over-1), maxLockout)
			}
			f.until = now.Add(lock)
		}
	}
}

// succeed forgets an account's failures (not the address's: one good password must not reset
// the count of guesses against other accounts from the same place).
func (t *throttle) succeed(name string) {
	t.mu.Lock()
	delete(t.entries, "n:"+name)
	t.mu.Unlock()
}
