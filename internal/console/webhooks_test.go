package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/console"
	"github.com/berth/berth/internal/events"
)

// TestWebhooksPage: an administrator sees each webhook's deliveries — the attempt the receiver
// refused, with its status, and the one it accepted — and a user who is not one gets 404.
func TestWebhooksPage(t *testing.T) {
	var calls atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "not now", http.StatusServiceUnavailable)
		}
	}))
	defer rcv.Close()
	d, err := events.NewDispatcher([]events.Webhook{{Name: "ci-hook", URL: rcv.URL, Secret: []byte("s")}},
		events.Options{BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	e := newEnvWith(t, func(o *console.Options) { o.Webhooks = d })
	d.Publish(events.New(events.ManifestPushed, events.Data{Repository: "team/app", Tag: "v1"}))
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats()[0].Delivered < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	root := e.browser()
	root.login("root", "root-password-1")
	p := root.get("/ui/admin/webhooks")
	if p.code != http.StatusOK {
		t.Fatalf("webhooks page: %d\n%s", p.code, p.body)
	}
	for _, want := range []string{"ci-hook", "<dt>Delivered</dt><dd>1</dd>", "<dt>Failed attempts</dt><dd>1</dd>",
		events.ManifestPushed, "team/app", "503", "200 delivered"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the webhooks page lacks %q:\n%s", want, p.body)
		}
	}
	if p := root.get("/ui/admin/"); !strings.Contains(p.body, `href="/ui/admin/webhooks"`) {
		t.Errorf("the admin page does not link the webhooks page")
	}
	alice := e.browser()
	alice.login("alice", "alice-password-1")
	if p := alice.get("/ui/admin/webhooks"); p.code != http.StatusNotFound || strings.Contains(p.body, "ci-hook") {
		t.Errorf("a user who is not an administrator: %d", p.code)
	}
}
