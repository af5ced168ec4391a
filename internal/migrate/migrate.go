// Package migrate moves a berth installation from one pair of backends to another: the embedded
// filesystem + SQLite of one machine into S3-compatible storage + PostgreSQL that replicas share.
//
// Blobs go first, each verified against its digest as the target stores it; then the metadata,
// table by table, so that nothing in the target links bytes it does not hold. A migration that
// stopped (killed, a network failure) runs again from the start and skips what it moved: the
// target keeps a blob it holds whole (content-addressed), and rows whose keys are there. It ends
// by counting every table on both sides. Upload sessions in flight are not moved (clients start
// them again), nor leases and login throttles.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Side is one installation's stores.
type Side struct {
	Blobs storage.BlobStore
	Meta  metadata.Dumper
}

// Report is what a migration moved.
type Report struct {
	Blobs        int64        // blobs the source holds
	BlobsCopied  int64        // copied by this run
	BytesCopied  int64        // their bytes
	BlobsPresent int64        // in the target already (an earlier run)
	Tables       []TableCount // in metadata.Tables' order, the same on both sides at the end
}

// TableCount is the number of rows of a table.
type TableCount struct {
	Name string
	Rows int64
}

// batch is how many rows go into the target in one transaction; copiers how many blobs are
// copied at once (object storage is slow per request and fast in parallel).
const (
	batch   = 500
	copiers = 4
)

// Run moves everything src holds into dst.
func Run(ctx context.Context, src, dst Side, log *slog.Logger) (Report, error) {
	var rep Report
	if err := copyBlobs(ctx, src, dst, &rep, log); err != nil {
		return rep, err
	}
	for _, t := range metadata.Tables {
		if err := copyTable(ctx, src.Meta, dst.Meta, t); err != nil {
			return rep, err
		}
	}
	var mismatch []string
	for _, t := range metadata.Tables {
		n, err := src.Meta.Count(ctx, t)
		if err != nil {
			return rep, err
		}
		m, err := dst.Meta.Count(ctx, t)
		if err != nil {
			return rep, err
		}
		rep.Tables = append(rep.Tables, TableCount{t.Name, n})
		if n != m && !t.Live() {
			mismatch = append(mismatch, fmt.Sprintf("%s: %d in the source, %d in the target", t.Name, n, m))
		}
	}
	if len(mismatch) > 0 {
		return rep, fmt.Errorf("the counts differ (did the target hold other data before?): %s", strings.Join(mismatch, "; "))
	}
	return rep, nil
}

// copyBlobs copies every blob the source's metadata records as stored (a size: reservations
// that were never linked have no bytes to move).
func copyBlobs(ctx context.Context, src, dst Side, rep *Report, log *slog.Logger) error {
	type blob struct {
		d    oci.Digest
		size int64
	}
	var blobs []blob
	err := src.Meta.Dump(ctx, metadata.BlobsTable, func(row []any) error {
		if size := row[1].(*int64); size != nil {
			blobs = append(blobs, blob{oci.Digest(row[0].(string)), *size})
		}
		return nil
	})
	if err != nil {
		return err
	}
	rep.Blobs = int64(len(blobs))
	log.Info("copying blobs", "blobs", len(blobs))
	var copied, present, bytes atomic.Int64
	var (
		mu      sync.Mutex
		missing []string
	)
	last := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copiers)
	for i, b := range blobs {
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			log.Info("copying blobs", "done", i, "of", len(blobs), "bytes_copied", bytes.Load())
		}
		g.Go(func() error {
			n, err := copyBlob(gctx, src.Blobs, dst.Blobs, b.d, b.size)
			switch {
			case errors.Is(err, errPresent):
				present.Add(1)
				return nil
			case errors.Is(err, errNoBytes):
				mu.Lock()
				missing = append(missing, b.d.String())
				mu.Unlock()
				return nil
			case err != nil:
				return err
			}
			copied.Add(1)
			bytes.Add(n)
			return nil
		})
	}
	err = g.Wait()
	rep.BlobsCopied, rep.BlobsPresent, rep.BytesCopied = copied.Load(), present.Load(), bytes.Load()
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d blobs that the source's metadata records are not in its blob store (nothing of the metadata was moved): %s",
			len(missing), strings.Join(missing, ", "))
	}
	return nil
}

var (
	errPresent = errors.New("in the target already")
	errNoBytes = errors.New("not in the source's blob store")
)

// copyBlob copies blob d unless the target holds it with its size; the target verifies the bytes
// against d as it stores them.
func copyBlob(ctx context.Context, src, dst storage.BlobStore, d oci.Digest, size int64) (int64, error) {
	if n, err := dst.Stat(ctx, d); err == nil && n == size {
		return 0, errPresent
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return 0, fmt.Errorf("target: %w", err)
	}
	r, n, err := src.Open(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, errNoBytes
	}
	if err != nil {
		return 0, fmt.Errorf("source: %w", err)
	}
	defer r.Close()
	if n != size {
		return 0, fmt.Errorf("source: blob %s holds %d bytes, its record says %d", d, n, size)
	}
	w, err := dst.Put(ctx, d, r)
	if err != nil {
		return 0, fmt.Errorf("target: blob %s: %w", d, err)
	}
	return w, nil
}

// copyTable moves the rows of t in batches.
func copyTable(ctx context.Context, src, dst metadata.Dumper, t metadata.Table) error {
	rows := make([][]any, 0, batch)
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		err := dst.Load(ctx, t, rows)
		rows = rows[:0]
		return err
	}
	err := src.Dump(ctx, t, func(row []any) error {
		if rows = append(rows, row); len(rows) == batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("table %s: %w", t.Name, err)
	}
	return nil
}
