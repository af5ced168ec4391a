package registry_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// failing fails its first RecordPulls calls, then writes to the store.
type failing struct {
	*envStore
	fails atomic.Int32
}

type envStore = struct{ metadata.Store }

func (f *failing) RecordPulls(ctx context.Context, ps []metadata.Pull) error {
	if f.fails.Add(-1) >= 0 {
		return errors.New("database down")
	}
	return f.Store.RecordPulls(ctx, ps)
}

// Manifest GETs are pulls, counted exactly however many come at once (HEADs are not, as in ECR),
// and written in a batch; a batch the store refuses waits for the next flush; a stop writes what
// is counted.
func TestPullTracking(t *testing.T) {
	e := newEnv(t)
	rec := &failing{envStore: &envStore{e.meta}}
	rec.fails.Store(1)
	stop := e.reg.TrackPulls(rec, time.Hour) // flushed by hand below
	body := e.image(t, "team/app", "pulled", oci.MediaTypeImageManifest)
	d := e.pushManifest(t, "team/app", "v1", oci.MediaTypeImageManifest, body)
	before := time.Now()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 10 {
				if r := e.do(t, "GET", "/v2/team/app/manifests/v1", nil, "Accept", oci.MediaTypeImageManifest); r.code != http.StatusOK {
					t.Errorf("GET: %d", r.code)
				}
			}
		})
	}
	wg.Wait()
	e.do(t, "GET", "/v2/team/app/manifests/"+d.String(), nil, "Accept", oci.MediaTypeImageManifest)
	for range 3 {
		e.do(t, "HEAD", "/v2/team/app/manifests/v1", nil, "Accept", oci.MediaTypeImageManifest)
	}
	counts := func() int64 {
		c, err := e.meta.PullCounts(context.Background(), "team/app")
		if err != nil {
			t.Fatal(err)
		}
		return c[d]
	}
	e.reg.FlushPulls(context.Background(), rec) // refused: kept
	if n := counts(); n != 0 {
		t.Fatalf("%d pulls recorded by a refused flush", n)
	}
	e.do(t, "GET", "/v2/team/app/manifests/v1", nil, "Accept", oci.MediaTypeImageManifest)
	e.reg.FlushPulls(context.Background(), rec)
	if n := counts(); n != 202 {
		t.Errorf("%d pulls recorded, want 202 (200 concurrent, 1 by digest, 1 after the failed flush; no HEADs)", n)
	}
	last, _ := e.meta.LastPulled(context.Background(), "team/app")
	if last[d].Before(before) {
		t.Errorf("last pulled %v, before the pulls began at %v", last[d], before)
	}
	e.do(t, "GET", "/v2/team/app/manifests/v1", nil, "Accept", oci.MediaTypeImageManifest)
	stop()
	if n := counts(); n != 203 {
		t.Errorf("%d pulls recorded after stop, want 203", n)
	}
}
