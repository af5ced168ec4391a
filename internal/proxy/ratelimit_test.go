package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestParseRateLimit(t *testing.T) {
	t.Parallel()
	const sixHours = 6 * time.Hour
	for _, c := range []struct {
		name   string
		header http.Header
		ok     bool
		want   Quota // Known and Seen are checked apart
	}{
		{"Docker Hub", http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"76;w=21600"}, "Docker-Ratelimit-Source": {"1.2.3.4"}},
			true, Quota{Limit: 100, Remaining: 76, Window: sixHours, Source: "1.2.3.4"}},
		{"raw lower-case names", http.Header{"ratelimit-limit": {"100;w=21600"}, "ratelimit-remaining": {"0;w=21600"}, "docker-ratelimit-source": {"2001:db8::"}},
			true, Quota{Limit: 100, Remaining: 0, Window: sixHours, Source: "2001:db8::"}},
		{"mixed-case names", http.Header{"RateLimit-Limit": {"200;w=3600"}, "RATELIMIT-REMAINING": {"199;w=3600"}},
			true, Quota{Limit: 200, Remaining: 199, Window: time.Hour}},
		{"spaces", http.Header{"Ratelimit-Limit": {" 100 ; w = 21600 "}, "Ratelimit-Remaining": {"\t76;  w=21600"}, "Docker-Ratelimit-Source": {" 1.2.3.4 "}},
			true, Quota{Limit: 100, Remaining: 76, Window: sixHours, Source: "1.2.3.4"}},
		{"no window", http.Header{"Ratelimit-Limit": {"100"}, "Ratelimit-Remaining": {"5"}},
			true, Quota{Limit: 100, Remaining: 5}},
		{"window on remaining only", http.Header{"Ratelimit-Limit": {"100"}, "Ratelimit-Remaining": {"5;w=60"}},
			true, Quota{Limit: 100, Remaining: 5, Window: time.Minute}},
		{"quoted window", http.Header{"Ratelimit-Remaining": {`5;w="60"`}}, true, Quota{Remaining: 5, Window: time.Minute}},
		{"IETF list form", http.Header{"Ratelimit-Limit": {"100, 100;w=21600"}, "Ratelimit-Remaining": {"42"}},
			true, Quota{Limit: 100, Remaining: 42, Window: sixHours}},
		{"remaining only", http.Header{"Ratelimit-Remaining": {"3;w=21600"}}, true, Quota{Remaining: 3, Window: sixHours}},
		{"limit only", http.Header{"Ratelimit-Limit": {"100;w=21600"}}, true, Quota{Limit: 100, Window: sixHours}},
		{"malformed remaining", http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"lots"}},
			true, Quota{Limit: 100, Window: sixHours}},
		{"malformed window", http.Header{"Ratelimit-Limit": {"100;w=six"}, "Ratelimit-Remaining": {"7;w=21600"}},
			true, Quota{Remaining: 7, Window: sixHours}},
		{"negative", http.Header{"Ratelimit-Limit": {"-1"}, "Ratelimit-Remaining": {"-5"}}, false, Quota{}},
		{"empty values", http.Header{"Ratelimit-Limit": {""}, "Ratelimit-Remaining": {" "}}, false, Quota{}},
		{"source only", http.Header{"Docker-Ratelimit-Source": {"1.2.3.4"}}, false, Quota{}},
		{"none", http.Header{"Content-Type": {"text/plain"}}, false, Quota{}},
		{"nil", nil, false, Quota{}},
		{"huge", http.Header{"Ratelimit-Remaining": {"99999999999999999999999"}}, false, Quota{}},
	} {
		before := time.Now()
		q, ok := ParseRateLimit(c.header)
		if ok != c.ok {
			t.Errorf("%s: ok = %v, want %v (%+v)", c.name, ok, c.ok, q)
			continue
		}
		if !ok {
			if q != (Quota{}) {
				t.Errorf("%s: not ok but %+v", c.name, q)
			}
			continue
		}
		if !q.Known || q.Seen.Before(before) {
			t.Errorf("%s: Known %v Seen %v", c.name, q.Known, q.Seen)
		}
		q.Known, q.Seen = false, time.Time{}
		if q != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, q, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Sun, 01 Mar 2026 12:01:30 GMT", 90 * time.Second, true},
		{"Sunday, 01-Mar-26 12:00:10 GMT", 10 * time.Second, true}, // RFC 850
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true},                 // past
		{"", 0, false},
		{"-5", 0, false},
		{"soon", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := parseRetryAfter(c.v, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", c.v, got, ok, c.want, c.ok)
		}
	}
}

func TestQuotaRecorded(t *testing.T) {
	t.Parallel()
	f := newScriptedRegistry(t)
	f.mode = "none"
	f.addImage("library/nginx", "latest", scriptedManifest("n"))
	u := f.upstream(t, nil)
	clock := &stepClock{t: time.Unix(1_700_000_000, 0)}
	u.st.now = clock.now
	ctx := context.Background()
	set := func(h http.Header) {
		f.mu.Lock()
		f.extra = h
		f.mu.Unlock()
	}

	if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	if q := u.Quota(); q.Known {
		t.Errorf("quota known without headers: %+v", q)
	}

	// A HEAD carries the headers (and does not spend quota).
	set(http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"76;w=21600"}, "Docker-Ratelimit-Source": {"1.2.3.4"}})
	if _, err := u.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	want := Quota{Known: true, Limit: 100, Remaining: 76, Window: 6 * time.Hour, Source: "1.2.3.4", Seen: clock.now()}
	if q := u.Quota(); q != want {
		t.Errorf("quota %+v, want %+v", q, want)
	}

	// A response without the headers leaves the quota as it was; so does a malformed one.
	clock.advance(time.Minute)
	set(nil)
	if _, _, err := u.GetManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	set(http.Header{"Ratelimit-Remaining": {"many"}})
	if _, _, err := u.GetManifest(ctx, "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	if q := u.Quota(); q != want {
		t.Errorf("quota %+v after responses without usable headers, want %+v", q, want)
	}

	// A 429 carries them too, and its RetryAfter is the window when there is no Retry-After.
	set(http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"0;w=21600"}})
	f.handle = func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusTooManyRequests) // a HEAD has no body
		return true
	}
	_, err := u.HeadManifest(ctx, "library/nginx", "latest")
	e := wantUpstreamKind(t, err, KindRateLimited, http.StatusTooManyRequests)
	if e.RetryAfter != 6*time.Hour {
		t.Errorf("RetryAfter %s, want 6h", e.RetryAfter)
	}
	want.Remaining, want.Seen = 0, clock.now()
	if q := u.Quota(); q != want {
		t.Errorf("quota %+v after a 429, want %+v", q, want)
	}
	if s := u.Stats(); s.ManifestGets != 2 || s.ManifestHeads != 3 {
		t.Errorf("stats %+v: a failed HEAD was retried as a GET", s)
	}
}
