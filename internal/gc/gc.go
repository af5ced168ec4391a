// Package gc is berth's online garbage collector: it deletes the blobs that nothing needs any
// more, while pushes and pulls go on (the GitLab container registry's model).
//
// The metadata store queues a blob for review whenever it may have become garbage or was just
// stored: reserved or linked by a write (internal/content), unlinked by a DELETE, or released by
// a deleted manifest. A pass looks at the blobs queued for longer than the grace period and has
// the store decide each under a lock on its record (metadata.Store.CollectBlob): a blob that no
// manifest references, no cached manifest declares, and nothing reserved, linked or released
// within the grace period is deleted, record, links and bytes. A blob found needed leaves the
// queue until something releases it again. The grace period is what protects a blob pushed
// whose manifest has not come yet, and a writer between its reservation and its link.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// DefaultGrace is how long a blob must have been unneeded before it is deleted, by default.
const DefaultGrace = 24 * time.Hour

// page is how many queued blobs a pass reads at a time.
const page = 200

// Collector deletes unneeded blobs from blobs, as meta decides.
type Collector struct {
	meta  metadata.Store
	blobs storage.BlobStore
	grace time.Duration
	log   *slog.Logger
	duty  float64 // the share of its time a pass works (SetPace); 0: all of it
}

// SetPace makes a pass work at most the share duty (0 < duty < 1) of its time, resting after
// each blob in proportion to what deciding it took: the collector running in berth's background
// leaves the machine and the database to the pushes and pulls.
func (c *Collector) SetPace(duty float64) { c.duty = duty }

// New returns a collector with the given grace period.
func New(meta metadata.Store, blobs storage.BlobStore, grace time.Duration, log *slog.Logger) *Collector {
	return &Collector{meta: meta, blobs: blobs, grace: grace, log: log}
}

// Stats is what a pass did (or, dry, would do).
type Stats struct {
	Reviewed int   // queued blobs looked at
	Deleted  int   // of those, garbage (deleted unless dry)
	Bytes    int64 // their size (blobs only reserved, never stored, count 0)
	Failed   int   // garbage whose deletion failed: still queued, tried again next pass
}

func (s Stats) String() string {
	return fmt.Sprintf("%d blobs reviewed, %d garbage (%d bytes), %d failed", s.Reviewed, s.Deleted, s.Bytes, s.Failed)
}

// Pass reviews every blob queued for longer than the grace period, once. Dry, it only reports
// what it would delete. It stops early when ctx ends; an error from the store ends it too.
func (c *Collector) Pass(ctx context.Context, dry bool) (Stats, error) {
	var st Stats
	before := time.Now().Add(-c.grace)
	after := ""
	for {
		ds, err := c.meta.BlobsToReview(ctx, before, after, page)
		if err != nil {
			return st, err
		}
		if len(ds) == 0 {
			return st, nil
		}
		after = ds[len(ds)-1].String()
		for _, d := range ds {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			st.Reviewed++
			began := time.Now()
			garbage, size, err := c.meta.CollectBlob(ctx, d, before, c.remove(d, dry))
			if c.duty > 0 && c.duty < 1 {
				rest := time.Duration(float64(time.Since(began)) * (1 - c.duty) / c.duty)
				select {
				case <-ctx.Done():
				case <-time.After(rest):
				}
			}
			if err != nil {
				if errors.Is(err, metadata.ErrUnavailable) {
					return st, err
				}
				st.Failed++
				c.log.Warn("garbage collection: deleting a blob", "digest", d, "err", err)
				continue
			}
			if garbage {
				st.Deleted++
				st.Bytes += max(size, 0)
			}
		}
	}
}

// remove is what deletes d's bytes, within the store's decision; nil for a dry run. Bytes that
// are not there (never stored, or deleted by a pass that failed to commit) are no error.
func (c *Collector) remove(d oci.Digest, dry bool) func(context.Context) error {
	if dry {
		return nil
	}
	return func(ctx context.Context) error {
		if err := c.blobs.Delete(ctx, d); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		return nil
	}
}
