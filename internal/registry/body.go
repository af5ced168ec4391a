package registry

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// DefaultBodyIdleTimeout is how long a request body may go without sending minBodyProgress bytes
// before berth gives up on it: a client that opens an upload and stalls, or trickles a byte now
// and then, must not hold a connection and a session forever.
const DefaultBodyIdleTimeout = time.Minute

// minBodyProgress is how many bytes a body must send within every idle timeout (32 KiB a minute
// is 550 bytes a second, far below any real link). A whole body smaller than that must arrive
// within one idle timeout.
const minBodyProgress = 32 << 10

// SetBodyIdleTimeout changes how long a request body may stall (DefaultBodyIdleTimeout).
func (rg *Registry) SetBodyIdleTimeout(d time.Duration) { rg.bodyIdle = d }

// body returns r's body with a read deadline that moves forward as the body makes progress, so
// that a slow client keeps its upload going and a stalled or trickling one is cut off.
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

// SetMinFreeSpace makes pushes leave n bytes free on the blob store's filesystem (when it has
// one: storage.FreeSpacer); 0 turns the floor off.
func (rg *Registry) SetMinFreeSpace(n int64) { rg.minFree = n }

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

// bodyError is a request body that could not be read to its end: the client broke it off, or it
// stalled (os.ErrDeadlineExceeded, which it wraps).
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

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
	r     io.Reader
	rc    *http.ResponseController
	idle  time.Duration
	until time.Time // the read deadline
	since int64     // bytes read since it was last pushed forward
}

func (b *idleReader) Read(p []byte) (int, error) {
	now := time.Now()
	if b.until.IsZero() {
		b.push(now)
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err} // the client's body broke off: not ours
	}
	b.since += int64(n)
	// Only progress moves the deadline: a byte now and then does not. Pushing it costs a
	// system call, so not more often than every tenth of the timeout.
	if b.since >= minBodyProgress && b.until.Sub(now) < b.idle*9/10 {
		b.push(now)
	}
	return n, err
}

func (b *idleReader) push(now time.Time) {
	b.until, b.since = now.Add(b.idle), 0
	b.rc.SetReadDeadline(b.until) // not every connection supports it (tests' recorders)
}
