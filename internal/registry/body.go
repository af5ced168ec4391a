package registry

import (
	"errors"
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
//
// room is how many more bytes the blob being uploaded may take (the configured maximum less what
// the upload holds); past it the body fails with errBlobTooLarge.
func (rg *Registry) body(w http.ResponseWriter, r *http.Request, room int64) io.Reader {
	idle := rg.bodyIdle
	if idle <= 0 {
		idle = DefaultBodyIdleTimeout
	}
	var body io.Reader = &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: idle}
	if room >= 0 {
		body = &limitReader{r: body, left: room}
	}
	return body
}

// SetMaxBlobSize bounds the size of an uploaded blob (0: no bound).
func (rg *Registry) SetMaxBlobSize(n int64) { rg.maxBlob = n }

// room is how many more bytes an upload already holding size bytes may take; -1: no bound. It
// refuses at once a request whose Content-Length says it will not fit.
func (rg *Registry) room(r *http.Request, size int64) (int64, error) {
	if rg.maxBlob <= 0 {
		return -1, nil
	}
	left := max(rg.maxBlob-size, 0)
	if r.ContentLength > left {
		return 0, errBlobTooLarge
	}
	return left, nil
}

var errBlobTooLarge = errors.New("blob too large")

// limitReader fails with errBlobTooLarge once more than left bytes come.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Anything more is one byte too many; a body that ends exactly here is fine.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errBlobTooLarge
		}
		return l.r.Read(p[:0])
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
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
