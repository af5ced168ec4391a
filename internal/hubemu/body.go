package hubemu

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// bodyWriter carries the backend's response to the client, applying a body fault, the bandwidth
// limit (blob bodies only) and the BlobBytes count. It does not implement io.ReaderFrom, so that
// every byte passes through Write.
type bodyWriter struct {
	http.ResponseWriter // the server's
	h                   *Hub
	ctx                 context.Context
	fault               *Fault // Stall, Truncated or Corrupt, or nil
	blob                bool   // a blob body: throttled and counted

	status  int
	active  bool  // a 200 or 206 body: faults and the throttle act on it
	at      int64 // offset where the fault acts
	off     int64 // bytes sent
	stalled bool
}

func (b *bodyWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
		b.active = code == http.StatusOK || code == http.StatusPartialContent
		if b.active && b.fault != nil {
			b.at = b.fault.After
			if b.at <= 0 {
				cl, _ := strconv.ParseInt(b.Header().Get("Content-Length"), 10, 64)
				b.at = cl / 2
			}
		}
	}
	b.ResponseWriter.WriteHeader(code)
}

func (b *bodyWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.WriteHeader(http.StatusOK)
	}
	if !b.active || (b.fault == nil && !b.blob) {
		return b.ResponseWriter.Write(p)
	}
	f := b.fault
	sent := 0
	for len(p) > 0 {
		n := len(p)
		if b.blob {
			n = min(n, b.h.link.chunk())
		}
		if f != nil && f.Kind != Corrupt && b.off < b.at && b.off+int64(n) > b.at {
			n = int(b.at - b.off) // send up to where the fault acts
		}
		if f != nil && b.off == b.at {
			switch {
			case f.Kind == Truncated:
				b.flush()
				panic(http.ErrAbortHandler) // net/http closes the connection, Content-Length unmet
			case f.Kind == Stall && !b.stalled:
				b.stalled = true
				b.flush()
				if !b.h.sleep(b.ctx, f.Delay) {
					panic(http.ErrAbortHandler)
				}
			}
		}
		chunk := p[:n]
		if f != nil && f.Kind == Corrupt && b.off <= b.at && b.at < b.off+int64(n) {
			chunk = bytes.Clone(chunk)
			chunk[b.at-b.off] ^= 0xff
		}
		if b.blob && !b.h.link.wait(b, n) {
			panic(http.ErrAbortHandler) // the client left or the hub closed
		}
		if b.blob { // counted before it is sent, so that a client that has the bytes sees them counted
			b.h.counts.add(func(c *Counts) { c.BlobBytes += int64(n) })
		}
		m, err := b.ResponseWriter.Write(chunk)
		b.off += int64(m)
		sent += m
		if b.blob {
			if m < n {
				b.h.counts.add(func(c *Counts) { c.BlobBytes -= int64(n - m) })
			}
			if b.h.link.limited() {
				b.flush()
			}
		}
		if err != nil {
			return sent, err
		}
		p = p[n:]
	}
	return sent, nil
}

func (b *bodyWriter) flush() { http.NewResponseController(b.ResponseWriter).Flush() }

// Flush implements http.Flusher.
func (b *bodyWriter) Flush() { b.flush() }

// Unwrap lets http.ResponseController reach the server's writer.
func (b *bodyWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

// link is the bandwidth limit of SetThrottle: one link shared by every blob body, as if all
// clients sat behind one connection. It is a virtual clock: each chunk books the link for
// size/rate after the previous booking ends, and is sent when its booking ends, so that the last
// byte of N bytes leaves no sooner than N/rate after the first was asked for.
type link struct {
	mu   sync.Mutex
	rate int64 // bytes per second; 0: unlimited
	next time.Time
}

// SetThrottle limits the bandwidth of blob bodies, shared across all connections, to
// bytesPerSecond; 0 removes the limit. It takes effect at the next chunk of any body in flight.
func (h *Hub) SetThrottle(bytesPerSecond int64) {
	h.link.mu.Lock()
	h.link.rate = max(bytesPerSecond, 0)
	h.link.next = time.Time{}
	h.link.mu.Unlock()
}

func (l *link) limited() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate > 0
}

// chunk is how many bytes to send at a time: about 20 ms of the link, between 512 B and 64 KiB.
func (l *link) chunk() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate <= 0 {
		return 1 << 20
	}
	return int(min(max(l.rate/50, 512), 64<<10))
}

// wait books the link for n bytes and sleeps until the booking ends; false if the request went
// away or the hub closed.
func (l *link) wait(b *bodyWriter, n int) bool {
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return true
	}
	// A link idle for a while starts anew; a booking that ended a moment ago keeps its schedule, so
	// that the time a sender spends writing between bookings is not lost (one stream gets the
	// whole rate).
	now := time.Now()
	if l.next.Before(now.Add(-10 * time.Millisecond)) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(int64(n) * int64(time.Second) / l.rate))
	end := l.next
	l.mu.Unlock()
	return b.h.sleep(b.ctx, time.Until(end))
}
