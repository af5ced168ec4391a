package registry

import (
	"context"
	"sync"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Pull tracking: each manifest GET (not HEAD, as ECR counts) is counted in memory and written in
// batches, so that a pull costs no database write of its own (never one fsync per pull), and a
// failing database fails no pull: the counts wait for the next flush.

// maxPending bounds the distinct manifests whose pulls wait for a flush while the store fails;
// beyond it, new ones are not counted (and the log says so once per flush).
const maxPending = 100_000

type pullKey struct {
	repo   string
	digest oci.Digest
}

type pullCount struct {
	n    int64
	last time.Time
}

// pullCounter counts pulls until they are flushed.
type pullCounter struct {
	mu      sync.Mutex
	pending map[pullKey]*pullCount
	dropped int64
}

func (c *pullCounter) add(repo string, d oci.Digest, at time.Time) {
	k := pullKey{repo, d}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[k]
	if p == nil {
		if len(c.pending) >= maxPending {
			c.dropped++
			return
		}
		if c.pending == nil {
			c.pending = map[pullKey]*pullCount{}
		}
		p = &pullCount{}
		c.pending[k] = p
	}
	p.n++
	if at.After(p.last) {
		p.last = at
	}
}

// take empties the counter.
func (c *pullCounter) take() (map[pullKey]*pullCount, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, d := c.pending, c.dropped
	c.pending, c.dropped = nil, 0
	return m, d
}

// putBack returns counts a flush could not write.
func (c *pullCounter) putBack(m map[pullKey]*pullCount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, p := range m {
		q := c.pending[k]
		if q == nil {
			if c.pending == nil {
				c.pending = map[pullKey]*pullCount{}
			}
			if len(c.pending) >= maxPending {
				c.dropped += p.n
				continue
			}
			c.pending[k] = p
			continue
		}
		q.n += p.n
		if p.last.After(q.last) {
			q.last = p.last
		}
	}
}

// PullRecorder is where pulls are written (metadata.Store).
type PullRecorder interface {
	RecordPulls(ctx context.Context, ps []metadata.Pull) error
}

// TrackPulls makes the registry count manifest pulls and write them to rec every period. The
// returned function writes what is counted and stops; call it before the store closes.
func (rg *Registry) TrackPulls(rec PullRecorder, period time.Duration) (stop func()) {
	rg.pulls = &pullCounter{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				rg.FlushPulls(context.Background(), rec)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rg.FlushPulls(ctx, rec)
	}
}

// FlushPulls writes the pulls counted so far to rec; on failure they wait for the next flush.
func (rg *Registry) FlushPulls(ctx context.Context, rec PullRecorder) {
	if rg.pulls == nil {
		return
	}
	m, dropped := rg.pulls.take()
	if dropped > 0 {
		rg.log.Warn("pull tracking: pulls not counted, the store has been failing", "pulls", dropped)
	}
	if len(m) == 0 {
		return
	}
	ps := make([]metadata.Pull, 0, len(m))
	for k, p := range m {
		ps = append(ps, metadata.Pull{Repo: k.repo, Digest: k.digest, At: p.last, Count: p.n})
	}
	if err := rec.RecordPulls(ctx, ps); err != nil {
		rg.log.Warn("pull tracking: writing pulls; kept for the next try", "manifests", len(ps), "err", err)
		rg.pulls.putBack(m)
	}
}

// countPull counts a pull of manifest d of repo, when pulls are tracked.
func (rg *Registry) countPull(repo string, d oci.Digest) {
	if rg.pulls != nil {
		rg.pulls.add(repo, d, time.Now())
	}
}
