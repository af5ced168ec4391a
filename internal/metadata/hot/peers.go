package hot

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// Replicas sharing one store keep manifests and tags in memory too, and stay exact: a client that
// pushes through one replica and pulls through another at once gets what it pushed.
//
// The store notifies Channel with "d <repository>" on every committed change to a repository's
// manifests or tags, whoever made it (a trigger, in the same transaction). Each replica drops that
// repository's entries when it reads the message. That alone would leave a window (a client is
// told "created" before the others have read the message), so a writer then sends a barrier,
// "b <writer> <n>", and waits until every replica has answered it ("a <replica> <writer> <n>"):
// messages arrive in commit order, so a replica that answers has read the change and dropped it.
//
// A replica that does not answer (dead, stalled, cut off) must not serve from memory by then.
// Each replica proves to itself every Renew that it hears the channel (it sends itself a barrier
// and reads it back), then holds a lease, "memory/<holder>", for TTL: the writers wait for the
// replicas holding one. A replica serves from memory only until TTL-Margin after it sent the
// barrier it last read back, which is before its lease ends; a writer waits at most TTL after its
// own barrier, so a replica that never answers has stopped serving from memory by then. A replica
// that stopped (its listening broke, or it was late) empties its memory before it serves from it
// again, since it may have missed messages meanwhile.

// Channel is the Notifier channel of the messages above.
const Channel = "berth_memory"

// Timing of the protocol above: variables so that tests can shorten them.
var (
	TTL    = 4 * time.Second
	Renew  = time.Second
	Margin = time.Second
)

const leasePrefix = "memory/"

// Peers keeps a Store exact among the replicas that share its underlying store. Messages on
// Channel go to Got, in order, from a listener that calls Ready when it starts and Down when it
// stops (see metadata.Notifier); Run renews this replica's standing.
type Peers struct {
	bus    metadata.Notifier
	leases metadata.Leases
	me     string
	store  *Store
	log    *slog.Logger

	until atomic.Pointer[time.Time] // serve from memory until then; nil: not now
	lost  atomic.Bool               // listening stopped since memory was last emptied

	listening chan struct{} // closed by the first Ready
	once      sync.Once

	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]*barrier
}

// barrier is one that this replica sent and waits on: for itself to read it back (heard) and
// for the other replicas to answer it (acked).
type barrier struct {
	heard chan struct{}
	acked map[string]bool
	more  chan struct{} // a signal per answer
}

// NewPeers makes s a replica among others sharing its store, known to them as me.
func NewPeers(s *Store, bus metadata.Notifier, leases metadata.Leases, me string, log *slog.Logger) *Peers {
	p := &Peers{bus: bus, leases: leases, me: me, store: s, log: log, pending: map[uint64]*barrier{},
		listening: make(chan struct{})}
	s.peers = p
	return p
}

// Serving reports whether this replica answers from memory now.
func (p *Peers) Serving() bool {
	u := p.until.Load()
	return u != nil && time.Now().Before(*u)
}

// Ready is called when listening on Channel starts: nothing is served from memory until Run has
// heard its own barrier through this listening.
func (p *Peers) Ready() { p.once.Do(func() { close(p.listening) }) }

// Down is called when listening on Channel stops: messages may be missed from now on.
func (p *Peers) Down() {
	p.lost.Store(true)
	p.until.Store(nil)
}

// Got handles one message on Channel.
func (p *Peers) Got(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "d":
		p.store.invalidate(rest, true)
	case "b":
		writer, n, ok := strings.Cut(rest, " ")
		if !ok {
			break
		}
		if writer == p.me {
			p.mu.Lock()
			if b := p.pending[parseSeq(n)]; b != nil {
				close(b.heard)
			}
			p.mu.Unlock()
			break
		}
		// Answered on a connection of the pool, so as not to hold up the messages that follow.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), TTL)
			defer cancel()
			if err := p.bus.Notify(ctx, Channel, fmt.Sprintf("a %s %s %s", p.me, writer, n)); err != nil {
				p.log.Warn("answering another replica's barrier", "replica", writer, "err", err)
			}
		}()
	case "a":
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 || f[1] != p.me {
			break
		}
		p.mu.Lock()
		if b := p.pending[parseSeq(f[2])]; b != nil {
			b.acked[f[0]] = true
			select {
			case b.more <- struct{}{}:
			default:
			}
		}
		p.mu.Unlock()
	}
}

func parseSeq(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// send sends a barrier and registers it; the caller must call done.
func (p *Peers) send(ctx context.Context) (b *barrier, done func(), err error) {
	n := p.seq.Add(1)
	b = &barrier{heard: make(chan struct{}), acked: map[string]bool{}, more: make(chan struct{}, 1)}
	p.mu.Lock()
	p.pending[n] = b
	p.mu.Unlock()
	done = func() {
		p.mu.Lock()
		delete(p.pending, n)
		p.mu.Unlock()
	}
	if err := p.bus.Notify(ctx, Channel, fmt.Sprintf("b %s %d", p.me, n)); err != nil {
		done()
		return nil, nil, err
	}
	return b, done, nil
}

// Sync returns once every other replica has read the changes this one committed before calling
// it (and so dropped them from memory), or can no longer serve from memory. It is called after
// every write to manifests or tags.
func (p *Peers) Sync(ctx context.Context) {
	b, done, err := p.send(ctx)
	if err != nil {
		// The store's own message of the change reaches the others all the same, a little later.
		p.log.Warn("telling other replicas of a manifest change", "err", err)
		return
	}
	defer done()
	deadline := time.NewTimer(TTL) // from after the barrier was committed: see above
	defer deadline.Stop()
	names, err := p.leases.Leased(ctx, leasePrefix)
	if err != nil {
		p.log.Warn("listing the replicas that keep manifests in memory; waiting out their time", "err", err)
	}
	for {
		p.mu.Lock()
		missing := ""
		for _, name := range names {
			if r := strings.TrimPrefix(name, leasePrefix); r != p.me && !b.acked[r] {
				missing = r
				break
			}
		}
		p.mu.Unlock()
		if missing == "" && err == nil {
			return
		}
		select {
		case <-b.more:
		case <-deadline.C:
			p.log.Warn("a replica did not confirm a manifest change; it no longer serves from memory", "replica", missing)
			return
		case <-ctx.Done():
			return
		}
	}
}

// Run renews this replica's standing every Renew until ctx ends, then gives it up.
func (p *Peers) Run(ctx context.Context) {
	name := leasePrefix + p.me
	defer func() {
		p.until.Store(nil)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := p.leases.ReleaseLease(rctx, name, p.me); err != nil {
			p.log.Warn("giving up the memory lease", "err", err)
		}
	}()
	select { // the first barrier would not be heard before
	case <-p.listening:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(Renew)
	defer t.Stop()
	for {
		if err := p.renew(ctx, name); err != nil && ctx.Err() == nil {
			p.log.Warn("renewing this replica's memory of manifests; serving them from the store meanwhile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renew hears its own barrier back, then takes the lease; serving from memory is then allowed
// until TTL-Margin after the barrier was sent.
func (p *Peers) renew(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, Renew)
	defer cancel()
	sent := time.Now()
	b, done, err := p.send(ctx)
	if err != nil {
		return err
	}
	defer done()
	select {
	case <-b.heard:
	case <-ctx.Done():
		p.until.Store(nil)
		return fmt.Errorf("own barrier not heard back within %v", Renew)
	}
	held, err := p.leases.AcquireLease(ctx, name, p.me, TTL)
	if err != nil || !held {
		p.until.Store(nil)
		if err == nil {
			err = fmt.Errorf("lease %s held by another process", name)
		}
		return err
	}
	// Stopped until now, or listening broke since (or at the very start): what is in memory
	// may have missed a change.
	if p.lost.Swap(false) || !p.Serving() {
		p.store.clear()
	}
	until := sent.Add(TTL - Margin)
	p.until.Store(&until)
	return nil
}
