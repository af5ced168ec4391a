package events_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/events"
)

// verify checks a delivery as the README tells a receiver to: HMAC-SHA256 with the secret of
// the timestamp header, a '.', and the body, hex, after "sha256=", compared in constant time;
// and a timestamp within five minutes.
func verify(secret []byte, r *http.Request, body []byte) error {
	ts := r.Header.Get("X-Berth-Timestamp")
	sent, ok := strings.CutPrefix(r.Header.Get("X-Berth-Signature"), "sha256=")
	if !ok {
		return fmt.Errorf("no sha256= signature: %q", r.Header.Get("X-Berth-Signature"))
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sent), []byte(want)) {
		return fmt.Errorf("signature %s, want %s", sent, want)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("timestamp %q is not within five minutes of now", ts)
	}
	return nil
}

// receiver is a webhook receiver that checks signatures and records the events it accepted.
type receiver struct {
	t      *testing.T
	secret []byte
	// fail, if set, decides whether to answer a request with 500 instead of taking it.
	fail func(e events.Event) bool

	mu     sync.Mutex
	got    []events.Event
	bad    []error
	arrive chan struct{} // a signal per event taken
}

func newReceiver(t *testing.T, secret string) *receiver {
	return &receiver{t: t, secret: []byte(secret), arrive: make(chan struct{}, 100000)}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var e events.Event
	err := verify(rc.secret, r, body)
	if err == nil {
		err = json.Unmarshal(body, &e)
	}
	if err == nil && r.Header.Get("Content-Type") != "application/cloudevents+json; charset=utf-8" {
		err = fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	if err != nil {
		rc.mu.Lock()
		rc.bad = append(rc.bad, err)
		rc.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if rc.fail != nil && rc.fail(e) {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	rc.mu.Lock()
	rc.got = append(rc.got, e)
	rc.mu.Unlock()
	rc.arrive <- struct{}{}
	w.WriteHeader(http.StatusNoContent)
}

// wait waits for n more events.
func (rc *receiver) wait(n int) {
	rc.t.Helper()
	for range n {
		select {
		case <-rc.arrive:
		case <-time.After(30 * time.Second):
			rc.mu.Lock()
			defer rc.mu.Unlock()
			rc.t.Fatalf("the receiver took %d events and waits for more; refused %v", len(rc.got), rc.bad)
		}
	}
}

func (rc *receiver) events() ([]events.Event, []error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got), slices.Clone(rc.bad)
}

// byRepo groups the tags (the tests' sequence numbers) of events by repository, in arrival order.
func byRepo(es []events.Event) map[string][]string {
	out := map[string][]string{}
	for _, e := range es {
		out[e.Data.Repository] = append(out[e.Data.Repository], e.Data.Tag)
	}
	return out
}

// fast are options that retry within milliseconds.
func fast() events.Options {
	return events.Options{BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Match: func(p, r string) bool {
			return p == r || strings.HasSuffix(p, "*") && strings.HasPrefix(r, strings.TrimSuffix(p, "*"))
		}}
}

func start(t *testing.T, hooks []events.Webhook, o events.Options) *events.Dispatcher {
	t.Helper()
	d, err := events.NewDispatcher(hooks, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		d.Close(ctx)
	})
	return d
}

// settled waits until d has recorded the outcome of every event it took: a receiver has an
// event before the dispatcher has its answer.
func settled(t *testing.T, d *events.Dispatcher) []events.Stats {
	t.Helper()
	for range 3000 {
		s := d.Stats()
		if !slices.ContainsFunc(s, func(s events.Stats) bool { return s.Queued > 0 }) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("events still queued after 30 s: %+v", d.Stats())
	return nil
}

func push(repo string, seq int) events.Event {
	return events.New(events.ManifestPushed, events.Data{Repository: repo, Tag: strconv.Itoa(seq),
		Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 512, Actor: "alice"})
}

func TestEnvelopeAndSignature(t *testing.T) {
	rc := newReceiver(t, "s3cret")
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := start(t, []events.Webhook{{Name: "a", URL: srv.URL, Secret: []byte("s3cret")}}, events.Options{Source: "https://registry.example.com"})
	d.Publish(push("team/app", 1))
	d.Publish(push("team/app", 2))
	rc.wait(2)
	got, bad := rc.events()
	if len(bad) > 0 {
		t.Fatalf("the receiver refused deliveries: %v", bad)
	}
	e := got[0]
	if e.SpecVersion != "1.0" || e.Source != "https://registry.example.com" || e.Type != "io.berth.manifest.pushed" ||
		e.Subject != "team/app" || e.DataContentType != "application/json" || time.Since(e.Time) > time.Minute ||
		len(e.ID) != 32 || e.Data.Actor != "alice" || e.Data.Size != 512 || e.Data.Tag != "1" {
		t.Errorf("event = %+v", e)
	}
	if got[0].ID == got[1].ID {
		t.Errorf("two events share the id %s", e.ID)
	}

	// A receiver with another secret refuses the same deliveries.
	other := newReceiver(t, "not-the-secret")
	srv2 := httptest.NewServer(other)
	defer srv2.Close()
	d2 := start(t, []events.Webhook{{Name: "b", URL: srv2.URL, Secret: []byte("s3cret"), MaxAttempts: 1}}, fast())
	d2.Publish(push("team/app", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, bad := other.events(); len(bad) != 1 {
		t.Errorf("a receiver with another secret refused %v; want one refusal", bad)
	}
	if s := d2.Stats()[0]; s.Abandoned != 1 || s.Delivered != 0 {
		t.Errorf("stats after a refusal: %+v", s)
	}
	if ds := d2.Deliveries("b"); len(ds) != 1 || ds[0].Status != http.StatusUnauthorized || !ds[0].Abandoned || ds[0].Error == "" {
		t.Errorf("deliveries after a refusal: %+v", ds)
	}
}

// A receiver that is down gets every event once it is back, in each repository's order.
func TestRetriesAfterReceiverWasDown(t *testing.T) {
	// The receiver's address, with nothing listening on it for now.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := start(t, []events.Webhook{{Name: "down", URL: "http://" + addr + "/hook", Secret: []byte("k"), MaxAttempts: 1000}}, fast())
	for i := range 5 {
		d.Publish(push("a", i))
		d.Publish(push("b", i))
	}
	// Down for a while: every repository's first event fails several times.
	for i := 0; d.Stats()[0].FailedAttempts < 10; i++ {
		if i == 3000 {
			t.Fatalf("30 s and only %+v", d.Stats()[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := d.Stats()[0]; s.Delivered != 0 || s.Queued != 10 {
		t.Fatalf("stats while the receiver is down: %+v", s)
	}
	ds := d.Deliveries("down")
	if len(ds) == 0 || ds[0].Error == "" || ds[0].Status != 0 || ds[0].Attempt < 1 {
		t.Errorf("deliveries while the receiver is down: %+v", ds[:min(len(ds), 3)])
	}

	rc := newReceiver(t, "k")
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: rc}
	go srv.Serve(ln)
	defer srv.Close()
	rc.wait(10)
	got, bad := rc.events()
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	want := []string{"0", "1", "2", "3", "4"}
	if g := byRepo(got); !slices.Equal(g["a"], want) || !slices.Equal(g["b"], want) {
		t.Errorf("received %v; want each repository's events in order %v", g, want)
	}
	if s := settled(t, d)[0]; s.Delivered != 10 || s.Abandoned != 0 {
		t.Errorf("stats after the receiver came back: %+v", s)
	}
	if ds := d.Deliveries("down"); ds[0].Error != "" || ds[0].Status != http.StatusNoContent {
		t.Errorf("newest delivery %+v; want a success", ds[0])
	}
}

// Several repositories published at once, with a receiver that fails often: each repository's
// events arrive in publish order, a failing event holding back the ones behind it.
func TestOrderPerRepository(t *testing.T) {
	rc := newReceiver(t, "k")
	var mu sync.Mutex
	tries := map[string]int{}
	rc.fail = func(e events.Event) bool { // the first two tries of every third event fail
		mu.Lock()
		defer mu.Unlock()
		tries[e.ID]++
		n, _ := strconv.Atoi(e.Data.Tag)
		return n%3 == 0 && tries[e.ID] <= 2
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := start(t, []events.Webhook{{Name: "o", URL: srv.URL, Secret: []byte("k")}}, fast())
	const repos, each = 6, 30
	var wg sync.WaitGroup
	for r := range repos {
		wg.Go(func() {
			for i := range each {
				d.Publish(push(fmt.Sprintf("repo%d", r), i))
			}
		})
	}
	wg.Wait()
	rc.wait(repos * each)
	got, bad := rc.events()
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	var want []string
	for i := range each {
		want = append(want, strconv.Itoa(i))
	}
	for repo, seq := range byRepo(got) {
		if !slices.Equal(seq, want) {
			t.Errorf("%s: received %v; want %v", repo, seq, want)
		}
	}
	if s := settled(t, d)[0]; s.FailedAttempts != 2*repos*(each/3) || s.Delivered != repos*each {
		t.Errorf("stats %+v; want %d failed attempts", s, 2*repos*(each/3))
	}
}

// A receiver that hangs holds up its own deliveries only: Publish returns at once, and once
// the queue is full it drops events and counts them.
func TestSlowReceiverNeverBlocksPublish(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select { // as if it slept for 10 s, or until the test ends
		case <-time.After(10 * time.Second):
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	const queue = 50
	o := fast()
	o.QueueSize = queue
	d := start(t, []events.Webhook{{Name: "slow", URL: srv.URL, Secret: []byte("k")}}, o)
	d.Publish(push("a", 0))
	<-entered // the worker is inside the receiver, which hangs
	for i := 1; i <= 3*queue; i++ {
		d.Publish(push("a", i))
	}
	// Here while the receiver still hangs (release is closed only when the test returns).
	s := d.Stats()[0]
	if s.Queued != queue || s.Dropped != 2*queue+1 || s.Delivered != 0 {
		t.Errorf("stats %+v; want %d queued (the one in the receiver among them), %d dropped", s, queue, 2*queue+1)
	}
}

// An event that fails every attempt is abandoned after MaxAttempts, and its repository's next
// events go on.
func TestAbandonedEventReleasesItsRepository(t *testing.T) {
	rc := newReceiver(t, "k")
	rc.fail = func(e events.Event) bool { return e.Data.Tag == "0" }
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := start(t, []events.Webhook{{Name: "x", URL: srv.URL, Secret: []byte("k"), MaxAttempts: 3}}, fast())
	d.Publish(push("a", 0))
	d.Publish(push("a", 1))
	rc.wait(1)
	got, _ := rc.events()
	if len(got) != 1 || got[0].Data.Tag != "1" {
		t.Fatalf("received %v", byRepo(got))
	}
	if s := settled(t, d)[0]; s.FailedAttempts != 3 || s.Abandoned != 1 || s.Delivered != 1 {
		t.Errorf("stats %+v", s)
	}
	ds := d.Deliveries("x")
	if len(ds) != 4 || ds[0].Error != "" || !ds[1].Abandoned || ds[1].Attempt != 3 || ds[3].Attempt != 1 || ds[3].Abandoned {
		t.Errorf("deliveries %+v", ds)
	}
}

func TestFilters(t *testing.T) {
	all, team, pushes := newReceiver(t, "k"), newReceiver(t, "k"), newReceiver(t, "k")
	var hooks []events.Webhook
	for _, h := range []struct {
		name  string
		rc    *receiver
		repos []string
		types []string
	}{
		{"all", all, nil, nil},
		{"team", team, []string{"team/*", "solo"}, nil},
		{"pushes", pushes, nil, []string{events.ManifestPushed, events.TagMoved}},
	} {
		srv := httptest.NewServer(h.rc)
		defer srv.Close()
		hooks = append(hooks, events.Webhook{Name: h.name, URL: srv.URL, Secret: []byte("k"), Repositories: h.repos, Types: h.types})
	}
	d := start(t, hooks, fast())
	for _, e := range []events.Event{
		events.New(events.ManifestPushed, events.Data{Repository: "team/app"}),
		events.New(events.TagDeleted, events.Data{Repository: "team/app", Tag: "v1"}),
		events.New(events.TagMoved, events.Data{Repository: "solo"}),
		events.New(events.CacheFilled, events.Data{Repository: "docker-hub/library/nginx"}),
		events.New(events.ManifestPushed, events.Data{Repository: "teams"}),
	} {
		d.Publish(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil { // flushes
		t.Fatal(err)
	}
	d.Publish(push("team/app", 9)) // after Close: dropped
	summary := func(rc *receiver) []string {
		got, bad := rc.events()
		if len(bad) > 0 {
			t.Error(bad)
		}
		var out []string
		for _, e := range got {
			out = append(out, strings.TrimPrefix(e.Type, "io.berth.")+" "+e.Data.Repository)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		rc   *receiver
		want []string
	}{
		{all, []string{"cache.filled docker-hub/library/nginx", "manifest.pushed team/app", "manifest.pushed teams", "tag.deleted team/app", "tag.moved solo"}},
		{team, []string{"manifest.pushed team/app", "tag.deleted team/app", "tag.moved solo"}},
		{pushes, []string{"manifest.pushed team/app", "manifest.pushed teams", "tag.moved solo"}},
	} {
		if got := summary(c.rc); !slices.Equal(got, c.want) {
			t.Errorf("received %v; want %v", got, c.want)
		}
	}
	if s := d.Stats(); s[0].Dropped != 1 || s[0].Delivered != 5 {
		t.Errorf("stats after Close %+v", s)
	}
}

// The history keeps the newest outcomes, newest first, however many there were.
func TestDeliveriesRing(t *testing.T) {
	rc := newReceiver(t, "k")
	srv := httptest.NewServer(rc)
	defer srv.Close()
	o := fast()
	o.History = 3
	d := start(t, []events.Webhook{{Name: "r", URL: srv.URL, Secret: []byte("k")}}, o)
	var ids []string
	for i := range 5 {
		e := push("a", i)
		e.ID = fmt.Sprintf("event-%d", i)
		ids = append(ids, e.ID)
		d.Publish(e)
	}
	rc.wait(5)
	settled(t, d)
	var got []string
	for _, x := range d.Deliveries("r") {
		got = append(got, x.EventID)
	}
	if want := []string{ids[4], ids[3], ids[2]}; !slices.Equal(got, want) {
		t.Errorf("deliveries %v; want %v", got, want)
	}
	if d.Deliveries("nope") != nil || !slices.Equal(d.Webhooks(), []string{"r"}) {
		t.Error("an unknown webhook has deliveries, or the names are wrong")
	}
}

func TestNewDispatcherErrors(t *testing.T) {
	if _, err := events.NewDispatcher([]events.Webhook{{Name: "a", URL: "http://x"}, {Name: "a", URL: "http://y"}}, events.Options{}); err == nil {
		t.Error("two webhooks with one name were taken")
	}
	if _, err := events.NewDispatcher([]events.Webhook{{Name: "a", URL: "http://x", Repositories: []string{"x/*"}}}, events.Options{}); err == nil {
		t.Error("patterns without a match function were taken")
	}
	var d *events.Dispatcher // off: every method is a no-op
	d.Publish(push("a", 1))
	if d.Stats() != nil || d.Deliveries("a") != nil || d.Close(context.Background()) != nil {
		t.Error("a nil dispatcher did something")
	}
}
