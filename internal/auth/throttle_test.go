package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newTestThrottle() (*throttle, *fakeClock) {
	c := newFakeClock()
	th := newThrottle()
	th.now = c.now
	return th, c
}

func TestThrottlePerName(t *testing.T) {
	th, clock := newTestThrottle()
	for i := range freeFailsName {
		if d := th.wait("alice", "10.0.0.1"); d != 0 {
			t.Fatalf("after %d failures: wait %v, want 0", i, d)
		}
		th.fail("alice", "10.0.0.1")
	}
	// The free failures are used up: each further one locks, for twice as long as the last
	// (10 of them, 1s to 512s, fit in the window).
	if d := th.wait("alice", "10.0.0.1"); d != 0 {
		t.Fatalf("after %d failures: wait %v, want 0", freeFailsName, d)
	}
	want := time.Second
	for i := range 10 {
		th.fail("alice", "10.0.0.1")
		if d := th.wait("alice", "10.0.0.1"); d != want {
			t.Fatalf("after %d failures: wait %v, want %v", freeFailsName+1+i, d, want)
		}
		// From any address: the account is locked, not only the address.
		if d := th.wait("alice", "10.9.9.9"); d != want {
			t.Fatalf("alice from another address: wait %v, want %v", d, want)
		}
		// Other accounts from the address are not (it has 15 failures at most, under its limit).
		if d := th.wait("bob", "10.0.0.1"); d != 0 {
			t.Fatalf("bob: wait %v", d)
		}
		clock.advance(want / 2)
		if d := th.wait("alice", "10.0.0.1"); d != want/2 {
			t.Fatalf("half way: wait %v, want %v", d, want/2)
		}
		clock.advance(want / 2)
		if d := th.wait("alice", "10.0.0.1"); d != 0 {
			t.Fatalf("after the lock: wait %v, want 0", d)
		}
		want *= 2
	}
	// However many failures, the lock never exceeds maxLockout.
	for i := range 40 {
		th.fail("alice", fmt.Sprint("10.1.0.", i))
		if d := th.wait("alice", "10.1.1.1"); d > maxLockout {
			t.Fatalf("wait %v > maxLockout", d)
		}
	}
	if d := th.wait("alice", "10.1.1.1"); d != maxLockout {
		t.Errorf("after many failures: wait %v, want %v", d, maxLockout)
	}
}

func TestThrottleWindow(t *testing.T) {
	th, clock := newTestThrottle()
	for range freeFailsName {
		th.fail("alice", "10.0.0.1")
	}
	// The window passes: the count starts again.
	clock.advance(failWindow + time.Second)
	for i := range freeFailsName {
		th.fail("alice", "10.0.0.1")
		if d := th.wait("alice", "10.0.0.1"); d != 0 {
			t.Fatalf("failure %d of a new window: wait %v", i+1, d)
		}
	}
	th.fail("alice", "10.0.0.1")
	if d := th.wait("alice", "10.0.0.1"); d != time.Second {
		t.Errorf("after the free failures of the new window: wait %v, want 1s", d)
	}

	// A lock that outlasts the window: failures during it still count...
	th, clock = newTestThrottle()
	for range freeFailsName + 11 {
		th.fail("bob", "10.0.0.2")
	}
	if d := th.wait("bob", "10.0.0.2"); d != maxLockout {
		t.Fatalf("after %d failures at once: wait %v, want %v", freeFailsName+11, d, maxLockout)
	}
	clock.advance(failWindow - time.Minute)
	th.fail("bob", "10.0.0.2") // a caller that did not ask wait first
	if d := th.wait("bob", "10.0.0.2"); d != maxLockout {
		t.Errorf("a failure during the lock: wait %v, want a new %v", d, maxLockout)
	}
	// ...and once both the window and the lock are over, the count starts again.
	clock.advance(maxLockout)
	if d := th.wait("bob", "10.0.0.2"); d != 0 {
		t.Errorf("after the lock: wait %v", d)
	}
	th.fail("bob", "10.0.0.2")
	if d := th.wait("bob", "10.0.0.2"); d != 0 {
		t.Errorf("the first failure after the window: wait %v, want 0", d)
	}
}

func TestThrottlePerAddress(t *testing.T) {
	th, clock := newTestThrottle()
	// One failure for each of many accounts from one address.
	for i := range freeFailsAddr {
		th.fail(fmt.Sprint("user", i), "10.0.0.1")
	}
	if d := th.wait("victim", "10.0.0.1"); d != 0 {
		t.Fatalf("after %d failures from the address: wait %v", freeFailsAddr, d)
	}
	th.fail("user-last", "10.0.0.1")
	if d := th.wait("victim", "10.0.0.1"); d != time.Second {
		t.Errorf("after %d failures from the address: wait %v, want 1s for any account", freeFailsAddr+1, d)
	}
	if d := th.wait("victim", "10.0.0.2"); d != 0 {
		t.Errorf("from another address: wait %v", d)
	}
	clock.advance(time.Second)
	if d := th.wait("victim", "10.0.0.1"); d != 0 {
		t.Errorf("after the lock: wait %v", d)
	}
}

// A good password resets its account's count, not its address's.
func TestThrottleSuccess(t *testing.T) {
	th, _ := newTestThrottle()
	for range freeFailsName - 1 {
		th.fail("alice", "10.0.0.1")
	}
	th.succeed("alice")
	for range freeFailsName - 1 {
		th.fail("alice", "10.0.0.1")
	}
	if d := th.wait("alice", "10.0.0.1"); d != 0 {
		t.Errorf("after a success between failures: wait %v, want 0", d)
	}
	// The address has 8 failures; 12 more (with a success after every 4) lock it.
	for range 3 {
		for range 4 {
			th.fail("alice", "10.0.0.1")
		}
		th.succeed("alice")
	}
	th.fail("mallory", "10.0.0.1")
	if d := th.wait("bob", "10.0.0.1"); d == 0 {
		t.Error("successes reset the address's count")
	}
}

// An attack from many addresses on many names cannot grow the table without bound.
func TestThrottleBounded(t *testing.T) {
	th, clock := newTestThrottle()
	// Full of stale entries: they are swept to make room.
	for i := range maxThrottleLen {
		th.entries[fmt.Sprint("a:old", i)] = &failures{count: 1, first: clock.now()}
	}
	clock.advance(failWindow + time.Minute)
	th.fail("alice", "10.0.0.1")
	if n := len(th.entries); n != 2 {
		t.Errorf("after a sweep: %d entries, want 2", n)
	}
	// Full of fresh entries: new ones are not added, known ones still count.
	for i := range maxThrottleLen - 2 {
		th.entries[fmt.Sprint("a:new", i)] = &failures{count: 1, first: clock.now()}
	}
	for i := range 20 {
		th.fail(fmt.Sprint("n", i), fmt.Sprint("192.0.2.", i))
	}
	if n := len(th.entries); n > maxThrottleLen {
		t.Errorf("%d entries, want at most %d", n, maxThrottleLen)
	}
	for range freeFailsName + 1 {
		th.fail("alice", "10.0.0.1")
	}
	if d := th.wait("alice", "10.0.0.1"); d == 0 {
		t.Error("a known account is not throttled while the table is full")
	}
}

// Through the token endpoint and Authorize: throttled logins get 429 with Retry-After, even
// with the right password.
func TestThrottleHTTP(t *testing.T) {
	e := newEnv(t, Options{})
	secret := e.robot(t, "ci", time.Time{})
	e.grant(t, "robot:ci", "team/*", "pull")
	for i := range freeFailsName + 1 {
		wantTokenError(t, fmt.Sprint("wrong secret ", i+1), e.getToken(t, basic("ci", "wrong")), 401, "UNAUTHORIZED")
	}
	for what, r := range map[string]response{
		"GET /token":    e.getToken(t, basic("ci", secret), "repository:team/a:pull"),
		"POST password": e.postToken(t, url.Values{"grant_type": {"password"}, "username": {"ci"}, "password": {secret}}),
	} {
		wantTokenError(t, what+" with the right secret while throttled", r, 429, "TOOMANYREQUESTS")
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
			t.Errorf("%s: Retry-After %q, want 1 or 2 seconds", what, r.header.Get("Retry-After"))
		}
		if strings.Contains(string(r.body), secret) {
			t.Errorf("%s: the response contains the secret", what)
		}
	}
	r := e.check(t, basic("ci", secret), "team/a", "", "pull")
	wantStatus(t, "Basic while throttled", r, 429, "TOOMANYREQUESTS")
	if r.header.Get("Retry-After") == "" {
		t.Error("Basic while throttled: no Retry-After")
	}
	// A token made before still works: only logins are throttled.
	e.clock.advance(time.Second)
	tok := e.token(t, basic("ci", secret), "repository:team/a:pull")
	// That success reset the account: five more failures are free again.
	for range freeFailsName {
		e.getToken(t, basic("ci", "wrong"))
	}
	wantStatus(t, "token after more failures", e.check(t, bearer(tok), "team/a", "", "pull"), 200, "")
	if r := e.getToken(t, basic("ci", secret)); r.status != 200 {
		t.Errorf("after a success and %d failures: %d %s", freeFailsName, r.status, short(r.body))
	}
}

// Per address, across accounts, through the endpoint: requests from elsewhere are not affected.
func TestThrottleHTTPPerAddress(t *testing.T) {
	e := newEnv(t, Options{})
	var secrets []string
	for i := range freeFailsAddr + 2 {
		secrets = append(secrets, e.robot(t, fmt.Sprint("r", i), time.Time{}))
	}
	get := func(addr, user, pass string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/token?service=berth", nil)
		req.SetBasicAuth(user, pass)
		req.RemoteAddr = addr + ":40000"
		w := httptest.NewRecorder()
		e.svc.ServeHTTP(w, req)
		return w
	}
	for i := range freeFailsAddr + 1 {
		if w := get("198.51.100.7", fmt.Sprint("r", i), "wrong"); w.Code != 401 {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	last := fmt.Sprint("r", freeFailsAddr+1)
	if w := get("198.51.100.7", last, secrets[freeFailsAddr+1]); w.Code != 429 || w.Header().Get("Retry-After") == "" {
		t.Errorf("an untouched account from the address: %d %q, want 429 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	if w := get("203.0.113.9", last, secrets[freeFailsAddr+1]); w.Code != 200 {
		t.Errorf("the same account from another address: %d %s", w.Code, w.Body)
	}
	// IPv6 and ports: the address is the host, whatever the port.
	for i := range freeFailsAddr + 1 {
		req := httptest.NewRequest(http.MethodGet, "/token", nil)
		req.SetBasicAuth(fmt.Sprint("r", i), "wrong")
		req.RemoteAddr = fmt.Sprintf("[2001:db8::1]:%d", 1000+i)
		e.svc.ServeHTTP(httptest.NewRecorder(), req)
	}
	if w := get("[2001:db8::1]", last, secrets[freeFailsAddr+1]); w.Code != 429 {
		t.Errorf("IPv6 address from other ports: %d, want 429", w.Code)
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
	for i := range freeFailsAddr + 1 {
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
