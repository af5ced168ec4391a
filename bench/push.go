package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// phases is how long each request of one upload took: POST, PATCH, PUT.
type phases [3]time.Duration

// uploadBlob pushes a blob the way crane and docker do: POST a new upload session, one PATCH
// streaming the whole body (Content-Length known), then PUT ?digest= with no body, which must
// answer 201 Created.
func uploadBlob(ctx context.Context, c *http.Client, base, repo string, body io.Reader, size int64, digest string) (phases, error) {
	var ph phases
	t := time.Now()
	lap := func(i int) {
		now := time.Now()
		ph[i], t = now.Sub(t), now
	}
	loc, err := uploadStep(ctx, c, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, 0, http.StatusAccepted)
	if err != nil {
		return ph, err
	}
	lap(0)
	if loc, err = uploadStep(ctx, c, http.MethodPatch, loc, body, size, http.StatusAccepted); err != nil {
		return ph, err
	}
	lap(1)
	u, err := url.Parse(loc)
	if err != nil {
		return ph, err
	}
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	_, err = uploadStep(ctx, c, http.MethodPut, u.String(), nil, 0, http.StatusCreated)
	lap(2)
	return ph, err
}

// uploadStep sends one request of an upload and returns the absolute Location it answers with.
func uploadStep(ctx context.Context, c *http.Client, method, target string, body io.Reader, size int64, want int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	if body == nil {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer drain(resp.Body)
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return "", fmt.Errorf("%s %s: status %d, want %d: %s", method, target, resp.StatusCode, want, bytes.TrimSpace(msg))
	}
	loc, err := resp.Location()
	if err != nil {
		if want == http.StatusCreated {
			return "", nil
		}
		return "", fmt.Errorf("%s %s: no Location: %w", method, target, err)
	}
	return loc.String(), nil
}

// benchPush pushes the workload's 64 MiB blobs at each concurrency, every blob distinct (also
// between concurrencies), and reports MB/s from the first POST to the last 201, and the server's
// CPU seconds per GB.
func benchPush(ctx context.Context, o options, p plan, w *workload, s *server, res *results) error {
	for _, conc := range p.pushConc {
		blobs := w.push[conc]
		syscall.Sync() // the previous phase's writes must not be flushed during this one
		if err := waitQuiet(o.quietWait); err != nil {
			return err
		}
		c := newClient(conc)
		m, err := startMeter(s)
		if err != nil {
			return err
		}
		next := make(chan blob)
		errs := make(chan error, conc)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			total phases // summed over the blobs
		)
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range next {
					ph, err := uploadBlob(ctx, c, s.base, repoPush, bytes.NewReader(b.data), int64(len(b.data)), b.digest)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for i := range total {
						total[i] += ph[i]
					}
					mu.Unlock()
				}
			}()
		}
	feed:
		for _, b := range blobs {
			select {
			case next <- b:
			case err = <-errs:
				break feed
			}
		}
		close(next)
		wg.Wait()
		cpu, others, elapsed, merr := m.stop(0)
		if err == nil {
			select {
			case err = <-errs:
			default:
			}
		}
		if err == nil {
			err = merr
		}
		var sent int64
		for _, b := range blobs {
			sent += int64(len(b.data))
		}
		if err == nil {
			err = checkPushed(ctx, c, s.base, blobs)
		}
		c.CloseIdleConnections()
		if err != nil {
			res.push.set(conc, "MB/s", s.name, failed(err))
			fmt.Printf("   push c=%d: %v\n", conc, err)
			continue
		}
		mbs := float64(sent) / elapsed.Seconds() / 1e6
		cpuGB := cpu / (float64(sent) / 1e9)
		avg := func(i int) time.Duration { return (total[i] / time.Duration(len(blobs))).Round(time.Millisecond) }
		res.push.set(conc, "MB/s", s.name, measuredBy(mbs, others))
		res.push.set(conc, "CPU s/GB", s.name, measuredBy(cpuGB, others))
		fmt.Printf("   push c=%d: %d x %d MiB in %s: %4.0f MB/s, %.2f server CPU s/GB (per blob: POST %s, PATCH %s, PUT %s; others %.2f cores)\n",
			conc, len(blobs), len(blobs[0].data)>>20, elapsed.Round(time.Millisecond), mbs, cpuGB, avg(0), avg(1), avg(2), others)
		if res.pushPhases[conc] == nil {
			res.pushPhases[conc] = map[string]*phaseSum{}
		}
		ps := res.pushPhases[conc][s.name]
		if ps == nil {
			ps = &phaseSum{}
			res.pushPhases[conc][s.name] = ps
		}
		for i := range total {
			ps.total[i] += total[i]
		}
		ps.blobs += len(blobs)
	}
	return nil
}

// checkPushed verifies, untimed, that every pushed blob is there with its size.
func checkPushed(ctx context.Context, c *http.Client, base string, blobs []blob) error {
	for _, b := range blobs {
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repoPush+"/blobs/"+b.digest, nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		drain(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(b.data)) {
			return fmt.Errorf("HEAD pushed blob %s: status %d, length %d", b.digest, resp.StatusCode, resp.ContentLength)
		}
	}
	return nil
}
