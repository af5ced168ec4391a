package auth

import (
	"context"
	"sync"
)

// gate runs argon2id checks a few at a time (slots), and decides who is next by the address the
// login comes from: the address that has guessed least lately goes first (the guard's count of
// its recent guesses), the longest waiting among equals. A client that logs in now and then is
// thereby served before a flood of checks from addresses that have been guessing, however long
// the flood's queue is; a flood from fresh addresses is served in turn with it.
type gate struct {
	weight func(addr string) float64 // an address's recent guesses

	mu      sync.Mutex
	free    int                  // slots not in use
	waiting map[string][]*waiter // by address, in arrival order
	seq     uint64
}

type waiter struct {
	ch      chan struct{}
	seq     uint64
	granted bool
}

func newGate(slots int, weight func(string) float64) *gate {
	return &gate{free: slots, weight: weight, waiting: map[string][]*waiter{}}
}

// acquire waits for a slot for a check from addr; ctx ends the wait.
func (g *gate) acquire(ctx context.Context, addr string) error {
	g.mu.Lock()
	if g.free > 0 && len(g.waiting) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &waiter{ch: make(chan struct{}), seq: g.seq}
	g.seq++
	g.waiting[addr] = append(g.waiting[addr], w)
	g.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		if w.granted { // the slot came as the caller left: pass it on
			g.mu.Unlock()
			g.release()
			return ctx.Err()
		}
		ws := g.waiting[addr]
		for i := range ws {
			if ws[i] == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(g.waiting, addr)
		} else {
			g.waiting[addr] = ws
		}
		g.mu.Unlock()
		return ctx.Err()
	}
}

// release gives a slot back, to the waiter whose address has guessed least lately.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiting) == 0 {
		g.free++
		return
	}
	var best string
	var bestWeight float64
	var bestSeq uint64
	for addr, ws := range g.waiting {
		w := g.weight(addr)
		if best == "" || w < bestWeight || w == bestWeight && ws[0].seq < bestSeq {
			best, bestWeight, bestSeq = addr, w, ws[0].seq
		}
	}
	ws := g.waiting[best]
	next := ws[0]
	if len(ws) == 1 {
		delete(g.waiting, best)
	} else {
		g.waiting[best] = ws[1:]
	}
	next.granted = true
	close(next.ch)
}
