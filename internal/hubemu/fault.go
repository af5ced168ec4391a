package hubemu

import (
	"net/http"
	"sync"
	"time"
)

// FaultKind is a failure mode. None of these is documented Docker Hub behaviour: they are the
// ways an upstream fails (DESIGN.md §4, stale-if-error), on demand.
type FaultKind int

const (
	// Down closes the connection without an answer (the handler hijacks it and closes it), so the
	// client sees a network error. Note that Go's http.Transport silently retries a GET or HEAD
	// once on a new connection when a kept-alive one closes without an answer: with Times: 1 such
	// a client never sees the failure.
	Down FaultKind = iota + 1
	// Slow waits Fault.Delay before answering.
	Slow
	// Stall sends the headers and the body up to Fault.After (default: half the Content-Length),
	// then stops for Fault.Delay, then sends the rest.
	Stall
	// Truncated sends the headers with the full Content-Length and the body up to Fault.After
	// (default: half), then closes the connection.
	Truncated
	// Corrupt sends the whole body with the byte at Fault.After (default: the middle) inverted:
	// same length, wrong digest.
	Corrupt
	// Status5xx answers Fault.Status (default 503) with an UNAVAILABLE error body; Status 429
	// answers a bare 429 without body, as Docker Hub's abuse limit does (DESIGN.md §2).
	Status5xx
	// Token429 makes the token service answer 429 (whatever Fault.On says).
	Token429
)

// Target says which requests a fault acts on; combine with |.
type Target uint8

// Fault targets.
const (
	Manifests  Target = 1 << iota // /v2/<name>/manifests/<ref>
	Blobs                         // /v2/<name>/blobs/<digest>, and the CDN with RedirectBlobs
	Tokens                        // the token service
	OtherPaths                    // everything else on the registry: /v2/, tags, referrers, ...
	All        = Manifests | Blobs | Tokens | OtherPaths
)

// Fault is a failure mode and the requests it acts on. The body faults (Stall, Truncated,
// Corrupt) act only on GETs answered 200 or 206.
type Fault struct {
	Kind FaultKind
	// On is the set of targets; 0 means All.
	On Target
	// Repo, if set, limits the fault to one repository (for the token service: the repository of
	// the first scope asked for).
	Repo string
	// Times, if positive, makes the fault act on the next Times matching requests only.
	Times int
	// Delay is how long Slow waits and Stall pauses.
	Delay time.Duration
	// After is the body offset where Stall, Truncated and Corrupt act; 0 means half the
	// Content-Length.
	After int64
	// Status is what Status5xx answers; 0 means 503.
	Status int
}

func (f *Fault) matches(t Target, repo string) bool {
	on := f.On
	if on == 0 {
		on = All
	}
	if f.Kind == Token429 {
		on = Tokens
	}
	return on&t != 0 && (f.Repo == "" || f.Repo == repo)
}

// stage says which faults a point of the request handling applies: the ones that replace or delay
// the answer, or the ones that act on a body.
type stage func(FaultKind) bool

func requestStage(k FaultKind) bool { return k == Down || k == Slow || k == Status5xx || k == Token429 }
func bodyStage(k FaultKind) bool    { return k == Stall || k == Truncated || k == Corrupt }

type faults struct {
	mu   sync.Mutex
	list []*activeFault
}

type activeFault struct {
	Fault
	left int // for Times
}

// SetFault replaces the active faults with fs; SetFault() clears them. When several match a
// request, the first of each stage acts (one of Down, Slow, Status5xx, Token429, and one of
// Stall, Truncated, Corrupt).
func (h *Hub) SetFault(fs ...Fault) {
	list := make([]*activeFault, len(fs))
	for i, f := range fs {
		list[i] = &activeFault{Fault: f, left: f.Times}
	}
	h.faults.mu.Lock()
	h.faults.list = list
	h.faults.mu.Unlock()
}

// match returns a copy of the first active fault of the stage that matches, spending one of its
// Times.
func (fs *faults) match(t Target, repo string, st stage) *Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, a := range fs.list {
		if !st(a.Kind) || !a.matches(t, repo) || (a.Times > 0 && a.left == 0) {
			continue
		}
		if a.Times > 0 {
			a.left--
		}
		f := a.Fault
		return &f
	}
	return nil
}

// applyFault applies the matching fault of a stage. For the request stage it reports whether
// the fault answered (or dropped) the request; for the body stage it returns the fault for the
// bodyWriter. The counts are updated before the fault acts, so that a client that sees the
// fault sees it counted; counted, if not nil, adds the request's own count.
func (h *Hub) applyFault(w http.ResponseWriter, r *http.Request, t Target, repo string, st stage, counted func()) (*Fault, bool) {
	f := h.faults.match(t, repo, st)
	if f == nil {
		return nil, false
	}
	h.counts.add(func(c *Counts) { c.Faulted++ })
	if counted != nil {
		counted()
	}
	switch f.Kind {
	case Down:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
			return nil, true
		}
		panic(http.ErrAbortHandler) // cannot hijack (HTTP/2): abort the stream instead
	case Slow:
		if !h.sleep(r.Context(), f.Delay) {
			panic(http.ErrAbortHandler) // the client left or the hub closed: drop, do not answer
		}
		return nil, false
	case Status5xx:
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(status)
		} else {
			writeErrors(w, status, "UNAVAILABLE", "service unavailable", nil)
		}
		return nil, true
	case Token429:
		tokenError(w, http.StatusTooManyRequests, "Too Many Requests")
		return nil, true
	}
	return f, false
}
