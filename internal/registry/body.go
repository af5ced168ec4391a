package registry

import (
	"io"
	"net/http"
	"time"
)

// DefaultBodyIdleTimeout is how long a request body may send nothing before berth gives up on it:
// a client that opens an upload and stalls must not hold a connection and a session forever.
const DefaultBodyIdleTimeout = time.Minute

// SetBodyIdleTimeout changes how long a request body may stall (DefaultBodyIdleTimeout).
func (rg *Registry) SetBodyIdleTimeout(d time.Duration) { rg.bodyIdle = d }

// body returns r's body with a read deadline pushed forward before every read, so that a slow
// client keeps its upload going and a stalled one is cut off after the idle timeout.
func (rg *Registry) body(w http.ResponseWriter, r *http.Request) io.Reader {
	idle := rg.bodyIdle
	if idle <= 0 {
		idle = DefaultBodyIdleTimeout
	}
	return &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: idle}
}

type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	set  time.Time // when the deadline was last pushed
}

func (b *idleReader) Read(p []byte) (int, error) {
	// Pushing the deadline costs a syscall: do it at most every tenth of the timeout.
	if now := time.Now(); now.Sub(b.set) > b.idle/10 {
		b.rc.SetReadDeadline(now.Add(b.idle)) // not every connection supports it (tests' recorders)
		b.set = now
	}
	return b.r.Read(p)
}
