package proxy_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
)

// TestSavings: five pulls of an unchanged image through a cache that revalidates daily cost the
// upstream one manifest GET and one GET per blob; the cache counts the other four pulls, and the
// bytes it sent without downloading them, as saved, in Status and in History's intervals.
func TestSavings(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 100, Window: time.Hour})
	if _, err := hub.PushImage("library/app", "v1", randomLayers(t, 2, 64<<10)...); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, hub, 24*time.Hour)
	e.cache.Sample(time.Now().Add(-time.Minute))
	if err := pull(http.DefaultClient, e.url, "docker-hub/app", "v1"); err != nil {
		t.Fatal(err)
	}
	// The registry counts what it sent after the response is out: the client may have it first.
	st := settled(t, e, func(c proxy.CacheStats) bool { return c.ClientBytes > 2*64<<10 })
	image := st.Cache.ClientBytes // config and layers, as sent once
	if st.Cache.ClientGets != 1 || st.Cache.PullsSaved != 0 || st.Cache.BytesSaved != 0 || image < 128<<10 {
		t.Fatalf("after a cold pull: %+v", st.Cache)
	}
	e.cache.Sample(time.Now())
	for range 4 {
		if err := pull(http.DefaultClient, e.url, "docker-hub/app", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	st = settled(t, e, func(c proxy.CacheStats) bool { return c.ClientBytes == 5*image })
	if st.Cache.ClientGets != 5 || st.Cache.PullsSaved != 4 || st.Cache.BytesSaved != 4*image {
		t.Errorf("after 4 warm pulls: client GETs %d, pulls saved %d, bytes saved %d; want 5, 4, %d",
			st.Cache.ClientGets, st.Cache.PullsSaved, st.Cache.BytesSaved, 4*image)
	}
	if !st.Quota.Known || st.Quota.Limit != 100 || st.Quota.Remaining != 99 {
		t.Errorf("quota %+v, want 99 of 100 left", st.Quota)
	}
	h := e.cache.History("docker-hub")
	if len(h) != 3 {
		t.Fatalf("history has %d points, want the two samples and now: %+v", len(h), h)
	}
	// The cold pull's interval: one manifest GET charged (the upstream's first answer, a 401
	// asking for a token, is no pull), one client GET, nothing saved.
	if cold := h[1]; cold.ManifestGets != 1 || cold.ClientGets != 1 || cold.PullsSaved != 0 || cold.BlobGets != 3 {
		t.Errorf("the cold pull's interval: %+v", cold)
	}
	if now := h[2]; now.ClientGets != 4 || now.PullsSaved != 4 || now.ManifestGets != 0 || now.BytesSaved != 4*image ||
		!now.QuotaKnown || now.Remaining != 99 || now.At.Before(h[1].At) {
		t.Errorf("the interval since the sample: %+v", now)
	}
	if h := e.cache.History("nope"); h != nil {
		t.Errorf("history of no rule: %+v", h)
	}
}

// settled waits up to 5 s for the rule's cache counters to satisfy ok, and returns its status.
func settled(t *testing.T, e *env, ok func(proxy.CacheStats) bool) proxy.Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.cache.Status()[0]
		if ok(st.Cache) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}
