package auth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestClientAddr(t *testing.T) {
	s := &Service{opt: Options{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48"),
	}}}
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"198.51.100.7:4000", nil, "198.51.100.7"},
		{"198.51.100.7:4000", []string{"203.0.113.1"}, "198.51.100.7"}, // an untrusted peer's header is ignored
		{"10.1.2.3:4000", nil, "10.1.2.3"},
		{"10.1.2.3:4000", []string{"203.0.113.1"}, "203.0.113.1"},
		{"10.1.2.3:4000", []string{"1.1.1.1, 203.0.113.1"}, "203.0.113.1"},    // the client may write the left part
		{"10.1.2.3:4000", []string{"203.0.113.1, 10.9.9.9"}, "203.0.113.1"},   // through two proxies
		{"10.1.2.3:4000", []string{"203.0.113.1", "10.9.9.9"}, "203.0.113.1"}, // as two header lines
		{"10.1.2.3:4000", []string{"10.7.7.7, 10.9.9.9"}, "10.7.7.7"},         // all trusted: the farthest
		{"10.1.2.3:4000", []string{"not-an-address"}, "10.1.2.3"},             // garbage: the proxy
		{"[2001:db8:1::5]:4000", []string{"2001:db8:2::9"}, "2001:db8:2::9"},  // IPv6
		{"[::ffff:10.1.2.3]:4000", []string{"203.0.113.1"}, "203.0.113.1"},    // IPv4-mapped peer
	} {
		r := httptest.NewRequest(http.MethodGet, "/token", nil)
		r.RemoteAddr = c.peer
		for _, h := range c.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := s.clientAddr(r); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}

// Behind a trusted load balancer the per-address throttle counts each client, not the balancer:
// one client guessing passwords must not lock every other client out.
func TestThrottleBehindProxy(t *testing.T) {
	e := newEnv(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	var secrets []string
	for i := range int(addrBudget.burst) + 2 {
		secrets = append(secrets, e.robot(t, fmt.Sprint("r", i), time.Time{}))
	}
	get := func(client, user, pass string) int {
		req := httptest.NewRequest(http.MethodGet, "/token?service=berth", nil)
		req.SetBasicAuth(user, pass)
		req.RemoteAddr = "10.0.0.2:40000"
		req.Header.Set("X-Forwarded-For", client)
		w := httptest.NewRecorder()
		e.svc.ServeHTTP(w, req)
		return w.Code
	}
	for i := range int(addrBudget.burst) {
		if code := get("198.51.100.7", fmt.Sprint("r", i), "wrong"); code != 401 {
			t.Fatalf("failure %d: %d", i, code)
		}
	}
	last := fmt.Sprint("r", int(addrBudget.burst)+1)
	if code := get("198.51.100.7", last, secrets[int(addrBudget.burst)+1]); code != 429 {
		t.Errorf("the guessing client: %d, want 429", code)
	}
	if code := get("203.0.113.9", last, secrets[int(addrBudget.burst)+1]); code != 200 {
		t.Errorf("another client behind the same balancer: %d, want 200", code)
	}
}
