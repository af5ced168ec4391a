package hot_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/enginetest"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/hot"
	"github.com/berth/berth/internal/metadata/postgres"
	"github.com/berth/berth/internal/oci"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// replica is one process's view of a shared PostgreSQL store: its own connections, its memory,
// its Peers, and its listening, which a test can stall or cut.
type replica struct {
	name  string
	db    *postgres.Store
	store *hot.Store
	peers *hot.Peers

	mu     sync.Mutex
	stall  chan struct{} // while set, messages wait for it to close
	cutoff context.CancelFunc
}

func startReplicas(t *testing.T, n int) []*replica {
	t.Helper()
	// The protocol's timing, short enough for a test and long enough for a loaded machine.
	ttl, renew, margin := hot.TTL, hot.Renew, hot.Margin
	hot.TTL, hot.Renew, hot.Margin = 2*time.Second, 200*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { hot.TTL, hot.Renew, hot.Margin = ttl, renew, margin })
	dsn := enginetest.Postgres(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rs []*replica
	for i := range n {
		db, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{name: fmt.Sprintf("r%d", i), db: db}
		r.store = hot.New(db, hot.Options{MaxBytes: hot.DefaultMaxBytes})
		r.peers = hot.NewPeers(r.store, db, db, r.name, log)
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.peers.Run(runCtx) })
		wg.Go(func() { r.listen(runCtx) })
		t.Cleanup(func() {
			stop()
			wg.Wait()
			db.Close()
		})
		rs = append(rs, r)
	}
	return rs
}

// listen is what the server's listening loop does, with a switch to cut it.
func (r *replica) listen(ctx context.Context) {
	for ctx.Err() == nil {
		lctx, cut := context.WithCancel(ctx)
		r.mu.Lock()
		r.cutoff = cut
		r.mu.Unlock()
		r.db.Listen(lctx, []string{hot.Channel}, r.peers.Ready, func(_, payload string) {
			r.mu.Lock()
			stall := r.stall
			r.mu.Unlock()
			if stall != nil {
				<-stall
			}
			if lctx.Err() != nil {
				return // cut meanwhile: the message is lost, as on a broken connection
			}
			r.peers.Got(payload)
		})
		r.peers.Down()
		cut()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cut stops the replica's listening once (it listens again shortly).
func (r *replica) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cutoff != nil {
		r.cutoff()
	}
}

// untilServing waits until every replica answers ref from memory: it serves from memory, and
// kept the last lookup.
func untilServing(t *testing.T, rs []*replica, repo, ref string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range rs {
		for {
			if _, err := r.store.GetManifest(ctx, repo, ref); err != nil {
				t.Fatal(err)
			}
			if r.peers.Serving() && r.store.Holds(repo, ref) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not keep manifests in memory", r.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func putTag(t *testing.T, s metadata.Store, repo, tag string, i int) oci.Digest {
	t.Helper()
	content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"n":"%d"}}`, i)
	d := digest.FromBytes(content)
	m := &metadata.NewManifest{Manifest: metadata.Manifest{Digest: d, MediaType: oci.MediaTypeImageIndex, Content: content, Created: time.Now()}}
	if err := s.PutManifest(ctx, repo, m, tag); err != nil {
		t.Fatal(err)
	}
	return d
}

// A tag moved through one replica is what every other replica answers as soon as the write
// returns, though each had the old one in memory: a client that pushes through one replica and
// pulls through another never gets the old manifest.
func TestPeersReadYourWrites(t *testing.T) {
	rs := startReplicas(t, 3)
	putTag(t, rs[0].store, "app", "latest", 0)
	untilServing(t, rs, "app", "latest")
	stale := 0
	for i := 1; i <= 150; i++ {
		w := rs[i%3]
		want := putTag(t, w.store, "app", "latest", i)
		for _, r := range rs {
			m, err := r.store.GetManifest(ctx, "app", "latest")
			if err != nil {
				t.Fatal(err)
			}
			if m.Digest != want {
				stale++
			}
		}
	}
	if stale > 0 {
		t.Errorf("%d lookups after a write returned the manifest before it", stale)
	}
	// And the replicas did serve from memory meanwhile: each holds the tag now.
	for _, r := range rs {
		if !r.store.Holds("app", "latest") {
			t.Errorf("%s does not hold app:latest in memory", r.name)
		}
	}
	// A delete too.
	d := putTag(t, rs[0].store, "app", "gone", 9999)
	untilServing(t, rs, "app", d.String())
	if err := rs[1].store.DeleteManifest(ctx, "app", d); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if _, err := r.store.GetManifest(ctx, "app", d.String()); err == nil {
			t.Errorf("%s still serves a manifest deleted through r1", r.name)
		}
	}
}

// A replica that stops reading the messages (stalled) is not waited for forever, and stops
// serving from memory before the writer returns: it answers what the store holds.
func TestPeersStalledReplica(t *testing.T) {
	rs := startReplicas(t, 2)
	putTag(t, rs[0].store, "app", "latest", 0)
	untilServing(t, rs, "app", "latest")
	stall := make(chan struct{})
	rs[1].mu.Lock()
	rs[1].stall = stall
	rs[1].mu.Unlock()
	defer close(stall)
	want := putTag(t, rs[0].store, "app", "latest", 1) // waits out r1's time
	m, err := rs[1].store.GetManifest(ctx, "app", "latest")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != want {
		t.Errorf("a stalled replica served %s from memory after the write returned, want %s", m.Digest, want)
	}
}

// A replica whose listening broke (and so may have missed a change) empties its memory before it
// serves from it again.
func TestPeersListeningBroken(t *testing.T) {
	rs := startReplicas(t, 2)
	putTag(t, rs[0].store, "app", "latest", 0)
	untilServing(t, rs, "app", "latest")
	// r1 misses the change: its listening is cut, and the write lands while it is down.
	rs[1].mu.Lock()
	stall := make(chan struct{})
	rs[1].stall = stall
	rs[1].mu.Unlock()
	want := putTag(t, rs[0].store, "app", "latest", 1)
	rs[1].mu.Lock()
	rs[1].stall = nil
	rs[1].mu.Unlock()
	rs[1].cut()
	close(stall) // the message it held goes nowhere: its listening is gone
	untilServing(t, rs[1:], "app", "latest")
	m, err := rs[1].store.GetManifest(ctx, "app", "latest")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != want {
		t.Errorf("after listening again r1 serves %s from memory, want %s", m.Digest, want)
	}
}
