package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults of a Webhook's and the Dispatcher's bounds.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 10
	DefaultMaxAge      = time.Hour
	DefaultQueueSize   = 10000
	DefaultHistory     = 100
	defaultBackoffBase = time.Second
	defaultBackoffMax  = 5 * time.Minute
)

// Webhook is a receiver of events and what it wants.
type Webhook struct {
	Name   string
	URL    string
	Secret []byte
	// Repositories are patterns (matched by Options.Match) of the repositories whose events go
	// to the receiver; none: every repository.
	Repositories []string
	// Types are the event types it wants; none: every type.
	Types []string
	// Timeout bounds one attempt (DefaultTimeout when 0).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one event (DefaultMaxAttempts when 0); MaxAge how long
	// after it was published an event is still retried (DefaultMaxAge when 0). Past either, the
	// event is abandoned and the repository's next event goes.
	MaxAttempts int
	MaxAge      time.Duration
}

// Options configure a Dispatcher; the zero value takes the defaults.
type Options struct {
	// Source is the events' CloudEvents source ("berth" when empty).
	Source string
	// Match reports whether a repository matches a pattern of Webhook.Repositories (berth passes
	// auth.Match, the grants' pattern language); required when a webhook has patterns.
	Match func(pattern, repo string) bool
	// QueueSize bounds, per webhook, the events accepted and not yet delivered or abandoned;
	// past it Publish drops events and counts them (DefaultQueueSize when 0).
	QueueSize int
	// History is how many delivery outcomes each webhook keeps (DefaultHistory when 0).
	History int
	// BackoffBase and BackoffMax shape the retry delays: BackoffBase doubling per attempt, up
	// to BackoffMax, each drawn at random from its upper half (defaults 1s and 5m).
	BackoffBase, BackoffMax time.Duration
	// Client sends the requests (one that follows no redirects, when nil).
	Client *http.Client
	Log    *slog.Logger
}

// Delivery is the outcome of one attempt to deliver an event.
type Delivery struct {
	Time       time.Time     `json:"time"`
	EventID    string        `json:"eventId"`
	Type       string        `json:"type"`
	Repository string        `json:"repository"`
	Attempt    int           `json:"attempt"`
	Status     int           `json:"status,omitempty"` // the receiver's HTTP status, 0 if none came
	Error      string        `json:"error,omitempty"`  // empty on success
	Duration   time.Duration `json:"duration"`
	// Abandoned: this failure was the event's last attempt.
	Abandoned bool `json:"abandoned,omitempty"`
}

// Stats are a webhook's counters since the dispatcher started.
type Stats struct {
	Name string
	// Delivered events (answered 2xx); FailedAttempts that will be retried or not; Abandoned
	// events (out of attempts or too old); Dropped events (its queue was full, or the
	// dispatcher closing); Queued events waiting now (a gauge).
	Delivered, FailedAttempts, Abandoned, Dropped, Queued int64
}

// Dispatcher delivers published events to webhooks, each by a worker of its own.
type Dispatcher struct {
	hooks  []*hook
	source string
	wg     sync.WaitGroup
	stop   context.CancelFunc // ends the workers' attempts when Close gives up
}

// pending is an event accepted for a webhook.
type pending struct {
	e        Event
	body     []byte
	attempts int
	next     time.Time // not before
}

// hook is a webhook's queue and worker state. Per repository, events wait in publish order;
// only each repository's first is ever attempted, so a failing one holds back the rest of its
// repository, and no other.
type hook struct {
	Webhook
	o      *Options
	client *http.Client
	wake   chan struct{} // capacity 1: something was queued, or closing

	mu       sync.Mutex
	repos    map[string][]*pending // repository -> its events, oldest first
	order    []string              // repositories with events, in round-robin order
	n        int                   // events in repos
	closing  bool
	history  []Delivery // ring
	next     int        // where the ring writes next
	stats    Stats
	matchAll bool
	types    map[string]bool
}

// NewDispatcher starts a worker per webhook. Its errors are about the webhooks' settings.
func NewDispatcher(webhooks []Webhook, o Options) (*Dispatcher, error) {
	if o.Source == "" {
		o.Source = "berth"
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = defaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = defaultBackoffMax
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	client := o.Client
	if client == nil {
		// A redirect would send the signed body somewhere the operator did not configure.
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{source: o.Source, stop: cancel}
	names := map[string]bool{}
	for _, w := range webhooks {
		if names[w.Name] {
			cancel()
			return nil, fmt.Errorf("webhook %q: a second webhook with that name", w.Name)
		}
		names[w.Name] = true
		if len(w.Repositories) > 0 && o.Match == nil {
			cancel()
			return nil, fmt.Errorf("webhook %q: repository patterns need Options.Match", w.Name)
		}
		if w.Timeout <= 0 {
			w.Timeout = DefaultTimeout
		}
		if w.MaxAttempts <= 0 {
			w.MaxAttempts = DefaultMaxAttempts
		}
		if w.MaxAge <= 0 {
			w.MaxAge = DefaultMaxAge
		}
		h := &hook{Webhook: w, o: &o, client: client, wake: make(chan struct{}, 1),
			repos: map[string][]*pending{}, history: make([]Delivery, 0, o.History),
			matchAll: len(w.Repositories) == 0}
		h.stats.Name = w.Name
		if len(w.Types) > 0 {
			h.types = map[string]bool{}
			for _, t := range w.Types {
				h.types[t] = true
			}
		}
		d.hooks = append(d.hooks, h)
	}
	for _, h := range d.hooks {
		d.wg.Go(func() { h.run(ctx) })
	}
	return d, nil
}

// Publish queues e for every webhook that wants it and returns at once: it takes each
// webhook's lock only to append to its queue, never waiting for a receiver. A webhook whose
// queue is full loses e (Stats.Dropped counts it).
func (d *Dispatcher) Publish(e Event) {
	if d == nil || len(d.hooks) == 0 {
		return
	}
	e.SpecVersion, e.Source, e.DataContentType = "1.0", d.source, "application/json"
	if e.ID == "" {
		e.ID = newID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	var body []byte // marshalled once, for the first webhook that wants it
	for _, h := range d.hooks {
		if !h.wants(e) {
			continue
		}
		if body == nil {
			var err error
			if body, err = json.Marshal(e); err != nil {
				h.o.Log.Error("encoding an event", "type", e.Type, "err", err)
				return
			}
		}
		h.queue(&pending{e: e, body: body})
	}
}

// wants reports whether the webhook's filters let e through.
func (h *hook) wants(e Event) bool {
	if h.types != nil && !h.types[e.Type] {
		return false
	}
	if h.matchAll {
		return true
	}
	for _, p := range h.Repositories {
		if h.o.Match(p, e.Data.Repository) {
			return true
		}
	}
	return false
}

func (h *hook) queue(p *pending) {
	h.mu.Lock()
	if h.closing || h.n >= h.o.QueueSize {
		h.stats.Dropped++
		h.mu.Unlock()
		return
	}
	repo := p.e.Data.Repository
	q := h.repos[repo]
	if len(q) == 0 {
		h.order = append(h.order, repo)
	}
	h.repos[repo] = append(q, p)
	h.n++
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default: // the worker will look anyway
	}
}

// due returns the first repository's head event that may be attempted now (moving that
// repository to the back of the round), or, if none may, how long until one may; wait 0 and
// nil when nothing is queued.
func (h *hook) due(now time.Time) (*pending, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var wait time.Duration
	for i, repo := range h.order {
		p := h.repos[repo][0]
		if !p.next.After(now) {
			h.order = append(append(h.order[:i:i], h.order[i+1:]...), repo)
			return p, 0
		}
		if w := p.next.Sub(now); wait == 0 || w < wait {
			wait = w
		}
	}
	return nil, wait
}

// done takes p, its repository's head, off the queue.
func (h *hook) done(p *pending) {
	h.mu.Lock()
	defer h.mu.Unlock()
	repo := p.e.Data.Repository
	q := h.repos[repo][1:]
	if len(q) == 0 {
		delete(h.repos, repo)
		for i, r := range h.order {
			if r == repo {
				h.order = append(h.order[:i:i], h.order[i+1:]...)
				break
			}
		}
	} else {
		h.repos[repo] = q
	}
	h.n--
}

// run is the webhook's worker: it attempts due events one at a time until ctx ends, or the
// dispatcher closes and the queue is empty.
func (h *hook) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		p, wait := h.due(time.Now())
		if p != nil {
			h.attempt(ctx, p)
			continue
		}
		h.mu.Lock()
		finished := h.closing && h.n == 0
		h.mu.Unlock()
		if finished {
			return
		}
		var tc <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-tc:
		}
		timer.Stop()
	}
}

// attempt sends p once and records the outcome: on success, or on the last allowed failure, p
// leaves the queue; otherwise it waits for its next attempt.
func (h *hook) attempt(ctx context.Context, p *pending) {
	p.attempts++
	start := time.Now()
	status, err := h.send(ctx, p.body)
	d := Delivery{Time: start, EventID: p.e.ID, Type: p.e.Type, Repository: p.e.Data.Repository,
		Attempt: p.attempts, Status: status, Duration: time.Since(start)}
	if err == nil {
		h.record(d, func(s *Stats) { s.Delivered++ })
		h.done(p)
		return
	}
	d.Error = err.Error()
	if ctx.Err() != nil {
		return // closing gave up: neither the receiver's failure nor the event's last attempt
	}
	now := time.Now()
	if p.attempts >= h.MaxAttempts || now.Sub(p.e.Time) >= h.MaxAge {
		d.Abandoned = true
		h.record(d, func(s *Stats) { s.FailedAttempts++; s.Abandoned++ })
		h.o.Log.Warn("webhook delivery abandoned", "webhook", h.Name, "event", p.e.ID, "type", p.e.Type,
			"repository", p.e.Data.Repository, "attempts", p.attempts, "err", err)
		h.done(p)
		return
	}
	h.record(d, func(s *Stats) { s.FailedAttempts++ })
	p.next = now.Add(h.backoff(p.attempts))
	h.o.Log.Debug("webhook delivery failed: will retry", "webhook", h.Name, "event", p.e.ID,
		"attempt", p.attempts, "retry_in", p.next.Sub(now), "err", err)
}

// backoff is the delay before the attempt after the n-th: exponential, capped, and drawn from
// its upper half so that receivers coming back are not hit by every sender at once.
func (h *hook) backoff(n int) time.Duration {
	d := h.o.BackoffMax
	if n < 32 {
		d = min(h.o.BackoffBase<<(n-1), h.o.BackoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// send posts body, signed, and returns the receiver's status; an error unless it is 2xx.
func (h *hook) send(ctx context.Context, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	req.Header.Set("User-Agent", "berth-webhooks")
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(h.Secret, ts, body))
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// record counts an outcome and keeps it in the ring.
func (h *hook) record(d Delivery, count func(*Stats)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	count(&h.stats)
	if len(h.history) < cap(h.history) {
		h.history = append(h.history, d)
	} else {
		h.history[h.next] = d
	}
	h.next = (h.next + 1) % cap(h.history)
}

// Stats returns every webhook's counters, in configuration order.
func (d *Dispatcher) Stats() []Stats {
	if d == nil {
		return nil
	}
	out := make([]Stats, 0, len(d.hooks))
	for _, h := range d.hooks {
		h.mu.Lock()
		s := h.stats
		s.Queued = int64(h.n)
		h.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// Deliveries returns the last outcomes of the named webhook's attempts, newest first; nil for
// a name no webhook has.
func (d *Dispatcher) Deliveries(name string) []Delivery {
	if d == nil {
		return nil
	}
	for _, h := range d.hooks {
		if h.Name != name {
			continue
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		out := make([]Delivery, 0, len(h.history))
		for i := range len(h.history) {
			// h.next-1 is the newest; the ring is full or h.next == len(h.history).
			out = append(out, h.history[(h.next-1-i+2*len(h.history))%len(h.history)])
		}
		return out
	}
	return nil
}

// Webhooks names the webhooks, in configuration order.
func (d *Dispatcher) Webhooks() []string {
	if d == nil {
		return nil
	}
	var out []string
	for _, h := range d.hooks {
		out = append(out, h.Name)
	}
	return out
}

// Close stops accepting events (Publish drops them from now on) and delivers what is queued,
// retries included, until ctx ends; then it stops the workers. The error says how many events
// were left undelivered.
func (d *Dispatcher) Close(ctx context.Context) error {
	if d == nil {
		return nil
	}
	for _, h := range d.hooks {
		h.mu.Lock()
		h.closing = true
		h.mu.Unlock()
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	flushed := make(chan struct{})
	go func() { d.wg.Wait(); close(flushed) }()
	select {
	case <-flushed:
		d.stop()
		return nil
	case <-ctx.Done():
	}
	d.stop()
	<-flushed
	left := 0
	for _, h := range d.hooks {
		h.mu.Lock()
		left += h.n
		h.mu.Unlock()
	}
	if left == 0 {
		return nil
	}
	return fmt.Errorf("events: %d undelivered when closing: %w", left, ctx.Err())
}
