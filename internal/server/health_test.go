package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata/sqlite"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyAndDrain: /readyz is 200 while the backends answer and 503 (naming the backend, no
// more) while one does not, recovering by itself; on shutdown it turns 503 at once while berth
// goes on serving for shutdown.drain, and a request in flight then still completes.
func TestReadyAndDrain(t *testing.T) {
	data := t.TempDir()
	cfg := encConfig(t, data, "")
	cfg.Shutdown.Drain = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	base := "http://" + cfg.Addr
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("berth did not answer")
		}
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}

	// The blob store's directory goes away (a lost mount): unready, then ready again by itself.
	blobs := filepath.Join(data, "blobs")
	if err := os.Rename(blobs, blobs+".away"); err != nil {
		t.Fatal(err)
	}
	// A result is reused for a second: the change shows within that.
	eventually := func(what string, want int, body string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, b := get(t, base+"/readyz")
			if code == want && (body == "" || b == body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz = %d %q, want %d %q", what, code, b, want, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("without the blob directory", http.StatusServiceUnavailable, "storage unreachable\n")
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d: the process is alive", code)
	}
	if err := os.Rename(blobs+".away", blobs); err != nil {
		t.Fatal(err)
	}
	eventually("after the blob directory came back", http.StatusOK, "ready\n")

	// A monolithic push whose body is still coming when the shutdown begins.
	body := strings.Repeat("in flight\n", 1000)
	sum := sha256.Sum256([]byte(body))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/drain/blobs/uploads/?digest=sha256:"+hex.EncodeToString(sum[:]), pr)
	req.ContentLength = int64(len(body))
	status := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("push in flight: %v", err)
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	io.WriteString(pw, body[:100])
	time.Sleep(100 * time.Millisecond) // the request is in
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := get(t, base+"/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d after shutdown began", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Draining: new requests are still served.
	if code, _ := get(t, base+"/v2/"); code != http.StatusOK {
		t.Errorf("/v2/ while draining = %d", code)
	}
	io.WriteString(pw, body[100:])
	pw.Close()
	if code := <-status; code != http.StatusCreated {
		t.Errorf("push in flight during shutdown: %d, want 201", code)
	}
	if err := <-errc; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestExclusiveJob: of two replicas sharing a store, one runs a background job; when it stops it
// hands the lease over, and the other runs the job from its next period on.
func TestExclusiveJob(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The lease lasts two periods: a holder would lose it only if it were late by a whole one.
	const period = 200 * time.Millisecond
	var runs [2]atomic.Int32
	var cancels [2]context.CancelFunc
	var wg sync.WaitGroup
	start := func(i int) {
		var ctx context.Context
		ctx, cancels[i] = context.WithCancel(context.Background())
		wg.Go(func() {
			exclusive(ctx, st, "purge", []string{"a", "b"}[i], period, log, func(context.Context) { runs[i].Add(1) })
		})
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: a ran %d times, b %d", what, runs[0].Load(), runs[1].Load())
			}
		}
	}
	start(0)
	eventually("a takes the lease", func() bool { return runs[0].Load() >= 1 })
	start(1)
	eventually("a runs on", func() bool { return runs[0].Load() >= 4 })
	if b := runs[1].Load(); b != 0 {
		t.Errorf("b ran %d times while a held the lease", b)
	}
	cancels[0]()
	eventually("b takes over once a stopped", func() bool { return runs[1].Load() >= 2 })
	cancels[1]()
	wg.Wait()
}

// slowPinger answers after delay, or fails with err at once.
type slowPinger struct {
	delay time.Duration
	err   error
	calls atomic.Int32
}

func (p *slowPinger) Ping(ctx context.Context) error {
	p.calls.Add(1)
	if p.err != nil {
		return p.err
	}
	select {
	case <-time.After(p.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestReadySlowBackend: a backend that is slow to answer a ping (a loaded bucket) leaves the
// replica ready (a load balancer would otherwise take every replica out at once); one that fails
// makes it unready; however many checks ask at once, one ping runs.
func TestReadySlowBackend(t *testing.T) {
	slow := &slowPinger{delay: 3 * time.Second}
	h := newHealth(slog.New(slog.NewTextHandler(io.Discard, nil)), map[string]Pinger{"storage": slow})
	srv := httptest.NewServer(http.HandlerFunc(h.ready))
	defer srv.Close()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if code, body := get(t, srv.URL); code != http.StatusOK {
				t.Errorf("/readyz with a slow backend: %d %q", code, body)
			}
		})
	}
	wg.Wait()
	if n := slow.calls.Load(); n != 1 {
		t.Errorf("10 checks at once ran %d pings, want 1", n)
	}
	// Once the slow ping has ended, its answer (reachable) stands.
	pr := h.probes["storage"]
	for ended := false; !ended; time.Sleep(50 * time.Millisecond) {
		pr.mu.Lock()
		ended = !pr.at.IsZero()
		pr.mu.Unlock()
	}
	if code, body := get(t, srv.URL); code != http.StatusOK {
		t.Errorf("/readyz after a slow ping ended: %d %q", code, body)
	}
	failing := &slowPinger{err: errors.New("connection refused")}
	h = newHealth(slog.New(slog.NewTextHandler(io.Discard, nil)), map[string]Pinger{"metadata": failing})
	srv2 := httptest.NewServer(http.HandlerFunc(h.ready))
	defer srv2.Close()
	if code, body := get(t, srv2.URL); code != http.StatusServiceUnavailable || body != "metadata unreachable\n" {
		t.Errorf("/readyz with a failing backend: %d %q", code, body)
	}
}
