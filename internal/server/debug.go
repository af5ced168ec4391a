package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/metrics"
	"time"

	"github.com/berth/berth/internal/metadata/sqlite"
)

// startDebug serves Go's profiles (/debug/pprof/) and /debug/memory on addr (debug.pprof_addr,
// loopback only, checked by config) until stop is called. Off unless configured: the profiles
// show goroutine stacks and request paths, and are served without authentication.
func startDebug(addr string, meta Metadata, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/memory", memoryHandler(meta))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug listener stopped", "err", err)
		}
	}()
	log.Warn("serving profiles and memory figures without authentication (debug.pprof_addr)", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// goMemory names the runtime/metrics samples /debug/memory reports, by their JSON names.
var goMemory = []struct{ name, metric string }{
	{"heap_live", "/gc/heap/live:bytes"},                   // marked live by the last GC
	{"heap_goal", "/gc/heap/goal:bytes"},                   // the heap size the next GC aims at
	{"heap_objects", "/memory/classes/heap/objects:bytes"}, // live and not yet swept
	{"heap_free", "/memory/classes/heap/free:bytes"},       // free, still mapped in
	{"heap_released", "/memory/classes/heap/released:bytes"},
	{"stacks", "/memory/classes/heap/stacks:bytes"},
	{"total", "/memory/classes/total:bytes"}, // everything the runtime mapped
	{"goroutines", "/sched/goroutines:goroutines"},
	{"gc_cycles", "/gc/cycles/total:gc-cycles"},
}

// memoryHandler answers GET /debug/memory: the Go runtime's memory classes and what SQLite holds
// outside the Go heap, as JSON. in_use (total less released) is what the Go runtime holds of
// the process's RSS at most; the rest of the anonymous RSS is SQLite (modernc's libc allocator).
func memoryHandler(meta Metadata) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		samples := make([]metrics.Sample, len(goMemory))
		for i, m := range goMemory {
			samples[i].Name = m.metric
		}
		metrics.Read(samples)
		goOut := map[string]uint64{}
		for i, s := range samples {
			if s.Value.Kind() == metrics.KindUint64 {
				goOut[goMemory[i].name] = s.Value.Uint64()
			}
		}
		goOut["in_use"] = goOut["total"] - goOut["heap_released"]
		out := map[string]any{"go": goOut}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if db, ok := meta.(*sqlite.Store); ok {
			if m, err := db.Memory(ctx); err != nil {
				out["sqlite_error"] = err.Error()
			} else {
				out["sqlite"] = m
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
}
