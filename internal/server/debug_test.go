package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDebugListener: with debug.pprof_addr, berth serves its profiles and /debug/memory (Go's
// memory classes, what SQLite's connections hold) on that address. (It is off by default:
// config's TestDefault.)
func TestDebugListener(t *testing.T) {
	freeAddr := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	start := func(pprofAddr string) func() {
		cfg := encConfig(t, t.TempDir(), "")
		cfg.Debug.PprofAddr = pprofAddr
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resp, err := http.Get("http://" + cfg.Addr + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
			select {
			case err := <-errc:
				t.Fatalf("Run: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("berth did not answer")
			}
		}
		return func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		}
	}

	addr := freeAddr()
	stop := start(addr)
	runtime.GC() // the live heap is what the last collection found: there must have been one
	resp, err := http.Get("http://" + addr + "/debug/memory")
	if err != nil {
		t.Fatal(err)
	}
	var mem struct {
		Go     map[string]uint64 `json:"go"`
		SQLite *struct {
			Writer      struct{ Cache, Schema int } `json:"writer"`
			Reader      struct{ Cache, Schema int } `json:"reader"`
			OpenReaders int                         `json:"open_readers"`
		} `json:"sqlite"`
		SQLiteError string `json:"sqlite_error"`
	}
	err = json.NewDecoder(resp.Body).Decode(&mem)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/memory: status %d, %v", resp.StatusCode, err)
	}
	if mem.Go["in_use"] == 0 || mem.Go["in_use"] > mem.Go["total"] || mem.Go["heap_live"] == 0 || mem.Go["goroutines"] == 0 {
		t.Errorf("Go figures %v", mem.Go)
	}
	if mem.SQLite == nil {
		t.Fatalf("no SQLite figures: %s", mem.SQLiteError)
	}
	// Every connection has parsed the schema; the reader pool has at least the one asked.
	if mem.SQLite.Writer.Schema == 0 || mem.SQLite.Reader.Schema == 0 || mem.SQLite.OpenReaders < 1 {
		t.Errorf("SQLite figures %+v", *mem.SQLite)
	}
	resp, err = http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "heap profile:") {
		t.Errorf("GET /debug/pprof/heap: status %d, %.100q", resp.StatusCode, body)
	}
	stop()
}
