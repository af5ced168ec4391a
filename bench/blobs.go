package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// benchDownload pushes the download blob (untimed), downloads it once alone and timed ("first
// MB/s": for berth-enc, the download that decrypts the blob into its memory cache), once more
// checking its sha256, then at each concurrency downloads it over and over for a fixed window:
// MB/s is the bytes received in the window over its length, CPU s/GB the server's utime+stime
// over the window per GB received. Every download that completes must have exactly the blob's
// size; those the end of the window cuts off count for their bytes.
func benchDownload(ctx context.Context, o options, p plan, w *workload, s *server, res *results) error {
	url := s.base + "/blob"
	if s.isRegistry() {
		f, err := os.Open(w.dlFile)
		if err != nil {
			return err
		}
		c := newClient(1)
		_, err = uploadBlob(ctx, c, s.base, repoBig, f, w.dlSize, w.dlDigest)
		f.Close()
		c.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("pushing the download blob: %w", err)
		}
		url = s.base + "/v2/" + repoBig + "/blobs/" + w.dlDigest
	}
	mbs, err := firstDownload(ctx, url, w.dlSize)
	if err != nil {
		return err
	}
	for _, ser := range res.downloadSeries(s.name) {
		ser.set(1, "first MB/s", s.name, value(mbs))
	}
	fmt.Printf("   first download: %6.0f MB/s\n", mbs)
	var before int64
	if s.fwd != nil {
		before = s.fwd.Served()
	}
	if err := verifyDownload(ctx, url, w); err != nil {
		return err
	}
	if s.fwd != nil {
		via := s.fwd.Served() - before
		res.download.set(1, "B via server", s.name, value(float64(via)))
		fmt.Printf("   one GET of the blob: %d bytes sent by the server itself (the rest came from the bucket)\n", via)
	}
	syscall.Sync()
	for _, conc := range p.dlConc {
		if err := waitQuiet(o.quietWait); err != nil {
			return err
		}
		mbs, cpuGB, others, n, err := downloadWindow(ctx, url, conc, p.dlDur, w.dlSize, s)
		if err != nil {
			for _, ser := range res.downloadSeries(s.name) {
				ser.set(conc, "MB/s", s.name, failed(err))
			}
			fmt.Printf("   download c=%d: %v\n", conc, err)
			continue
		}
		for _, ser := range res.downloadSeries(s.name) {
			ser.set(conc, "MB/s", s.name, measuredBy(mbs, others))
			ser.set(conc, "CPU s/GB", s.name, measuredBy(cpuGB, others))
		}
		fmt.Printf("   download c=%d: %6.0f MB/s, %.3f server CPU s/GB (%d complete downloads in %s; others %.2f cores)\n",
			conc, mbs, cpuGB, n, p.dlDur, others)
	}
	return nil
}

// firstDownload downloads the blob once, alone, and checks its length: MB/s from the request to
// the last byte.
func firstDownload(ctx context.Context, url string, size int64) (float64, error) {
	c := newClient(1)
	defer c.CloseIdleConnections()
	var received atomic.Int64
	start := time.Now()
	n, err := downloadOnce(ctx, c, url, make([]byte, 1<<20), &received)
	elapsed := time.Since(start)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("GET %s: %d bytes, want %d", url, n, size)
	}
	return float64(n) / elapsed.Seconds() / 1e6, nil
}

// verifyDownload downloads the blob once and checks its length and sha256.
func verifyDownload(ctx context.Context, url string, w *workload) error {
	c := newClient(1)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != w.dlSize || got != w.dlDigest {
		return fmt.Errorf("GET %s: %d bytes with digest %s, want %d bytes with %s", url, n, got, w.dlSize, w.dlDigest)
	}
	return nil
}

// downloadWindow runs conc workers downloading url in a loop, and samples bytes received and the
// server's CPU at the start and the end of a window of length d.
func downloadWindow(ctx context.Context, url string, conc int, d time.Duration, size int64, s *server) (mbs, cpuGB, others float64, complete int64, err error) {
	c := newClient(conc)
	defer c.CloseIdleConnections()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		received atomic.Int64
		done     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		stop()
	}
	m, err := startMeter(s)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for wctx.Err() == nil {
				n, err := downloadOnce(wctx, c, url, buf, &received)
				switch {
				case wctx.Err() != nil: // the window is over: a cut-off download is fine
					return
				case err != nil:
					fail(err)
					return
				case n != size:
					fail(fmt.Errorf("GET %s: %d bytes, want %d", url, n, size))
					return
				}
				done.Add(1)
			}
		}()
	}
	select {
	case <-time.After(d):
	case <-wctx.Done():
	}
	got := received.Load()
	cpu, others, elapsed, merr := m.stop(0)
	stop()
	wg.Wait()
	if err := errors.Join(firstErr, merr); err != nil {
		return 0, 0, 0, 0, err
	}
	if got == 0 {
		return 0, 0, 0, 0, errors.New("no byte received")
	}
	return float64(got) / elapsed.Seconds() / 1e6, cpu / (float64(got) / 1e9), others, done.Load(), nil
}

// downloadOnce GETs url and reads the body into buf, discarding it, adding to received as it goes.
func downloadOnce(ctx context.Context, c *http.Client, url string, buf []byte, received *atomic.Int64) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		received.Add(int64(k))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
