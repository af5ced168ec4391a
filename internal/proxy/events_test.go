package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
)

// TestEvents: every manifest fetched upstream and stored is a fill; the quota falling to the
// reserve is told once per crossing (again only after it was seen above the reserve); every
// evicted image is told.
func TestEvents(t *testing.T) {
	defer proxy.SetEvictionGuard(0)()
	hub := startHub(t, hubemu.Options{Limit: 100})
	names := []string{"a", "b", "c", "d", "e"}
	for _, name := range names {
		if _, err := hub.PushImage("library/"+name, "v1", randomLayers(t, 1, 1<<10)...); err != nil {
			t.Fatal(err)
		}
	}
	blobs, meta := stores(t)
	url, cache, _ := serve(t, hub, blobs, meta, 10*time.Second, func(r *proxy.Rule) {
		r.QuotaReserve = 1
		r.UnusedFor = time.Millisecond
	})
	var mu sync.Mutex
	var got []string
	cache.UseEvents(func(e events.Event) {
		mu.Lock()
		defer mu.Unlock()
		s := e.Type + " " + e.Data.Repository
		if e.Data.Remaining != nil {
			s += fmt.Sprintf(" remaining %d reserve %d", *e.Data.Remaining, *e.Data.Reserve)
		}
		if e.Data.Rule != "docker-hub" {
			t.Errorf("event %+v: rule %q", e, e.Data.Rule)
		}
		got = append(got, s)
	})
	pullOne := func(name string, remaining int) {
		t.Helper()
		hub.SetQuotaRemaining("127.0.0.1", remaining) // before this pull's manifest GET
		if err := pull(http.DefaultClient, url, "docker-hub/"+name, "v1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // an order for eviction
	}
	pullOne("a", 3)  // 2 left
	pullOne("b", 2)  // 1 left: the reserve
	pullOne("c", 1)  // 0 left: still below, no second event
	pullOne("d", 10) // 9 left: above again
	pullOne("e", 2)  // 1 left: a second crossing
	if _, err := cache.Evict(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"io.berth.cache.filled docker-hub/library/a",
		"io.berth.upstream.quota_low docker-hub/library/b remaining 1 reserve 1",
		"io.berth.cache.filled docker-hub/library/b",
		"io.berth.cache.filled docker-hub/library/c",
		"io.berth.cache.filled docker-hub/library/d",
		"io.berth.upstream.quota_low docker-hub/library/e remaining 1 reserve 1",
		"io.berth.cache.filled docker-hub/library/e",
	}
	for _, name := range names {
		want = append(want, "io.berth.cache.evicted docker-hub/library/"+name)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}
