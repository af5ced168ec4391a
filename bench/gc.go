package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The gc measurement (-only gc, berth and berth-s3pg): what online garbage collection costs.
//
//  1. Push and pull throughput while berth's own collector sweeps (gc.interval 1s, gc.grace 1m,
//     with thousands of unreferenced blobs older than the grace to delete), against the same
//     with collection off (gc.interval 0), each on a fresh server. Pushes are of fresh
//     unreferenced blobs; pulls are GETs of blobs a manifest references. Target: >= 0.9x.
//  2. Collection throughput: one `berth gc` pass over the garbage of the idle server, blobs
//     reviewed and deleted per second (the command's start included).

// gcGrace is the grace period of the collector while it sweeps (the configuration's minimum).
const gcGrace = time.Minute

// gcTarget is the target for throughput while collection sweeps, against idle.
const gcTarget = 0.9

type gcPlan struct {
	garbage   int   // unreferenced blobs pushed for the collector to delete
	blobSize  int64 // their size
	pushes    int   // blobs pushed per throughput phase (4 at a time)
	pushSize  int64
	pulls     int // blob GETs per throughput phase (4 at a time)
	pullBlobs int // distinct blobs they spread over
	pullSize  int64
}

func gcPlanFor(quick bool) gcPlan {
	if quick {
		return gcPlan{garbage: 1000, blobSize: 1 << 10, pushes: 100, pushSize: 1 << 20, pulls: 1000, pullBlobs: 8, pullSize: 1 << 20}
	}
	return gcPlan{garbage: 4000, blobSize: 1 << 10, pushes: 400, pushSize: 1 << 20, pulls: 8000, pullBlobs: 16, pullSize: 1 << 20}
}

// benchGC measures the servers of o that are berth on the data directory or on S3 + PostgreSQL.
func benchGC(ctx context.Context, o options, tmp string) (string, error) {
	gp := gcPlanFor(o.quick)
	var out strings.Builder
	fmt.Fprintf(&out, "== garbage collection (berth's collector every 1s, grace %s, %d garbage blobs to delete)\n", gcGrace, gp.garbage)
	fmt.Fprintf(&out, "%-12s %12s %12s %7s %12s %12s %7s %8s %14s %14s\n", "server", "push idle", "push gc", "ratio",
		"pull idle", "pull gc", "ratio", "left", "reviewed/s", "deleted/s")
	measured := 0
	for _, name := range []string{"berth", "berth-s3pg"} {
		if !strings.Contains(","+strings.Join(o.servers, ",")+",", ","+name+",") {
			continue
		}
		fmt.Printf("\n== gc on %s\n", name)
		row, err := benchGCServer(ctx, o, gp, tmp, name)
		if err != nil {
			return out.String(), fmt.Errorf("%s: %w", name, err)
		}
		out.WriteString(row)
		measured++
	}
	if measured == 0 {
		return "", fmt.Errorf("gc: name berth or berth-s3pg in -servers")
	}
	fmt.Fprintf(&out, "target: push and pull while the collector sweeps >= %.1fx of idle; left: garbage blobs the sweep had not deleted when the phase ended\n", gcTarget)
	return out.String(), nil
}

type gcPhaseResult struct {
	pushMBs, pullRPS float64
	left             int     // garbage the collector had not deleted when the phase ended
	pass             gcStats // the idle server's one pass by hand
	passSecs         float64
}

func benchGCServer(ctx context.Context, o options, gp gcPlan, tmp, name string) (string, error) {
	idle, err := gcPhase(ctx, o, gp, tmp, name, false)
	if err != nil {
		return "", err
	}
	fmt.Printf("   collection off: push %.1f MB/s, pull %.0f blobs/s; then one pass: %d reviewed, %d deleted in %.2f s\n",
		idle.pushMBs, idle.pullRPS, idle.pass.reviewed, idle.pass.deleted, idle.passSecs)
	gc, err := gcPhase(ctx, o, gp, tmp, name, true)
	if err != nil {
		return "", err
	}
	fmt.Printf("   collector sweeping: push %.1f MB/s, pull %.0f blobs/s; %d garbage blobs left after\n", gc.pushMBs, gc.pullRPS, gc.left)
	if gc.left >= gp.garbage {
		return "", fmt.Errorf("the collector deleted nothing during the phase")
	}
	verdict := func(r float64) string {
		if r >= gcTarget {
			return fmt.Sprintf("%.2fx", r)
		}
		return fmt.Sprintf("%.2fx!", r)
	}
	return fmt.Sprintf("%-12s %9.1f MB/s %9.1f MB/s %7s %8.0f /s %8.0f /s %7s %8d %14.0f %14.0f\n", name,
		idle.pushMBs, gc.pushMBs, verdict(gc.pushMBs/idle.pushMBs), idle.pullRPS, gc.pullRPS, verdict(gc.pullRPS/idle.pullRPS),
		gc.left, float64(idle.pass.reviewed)/idle.passSecs, float64(idle.pass.deleted)/idle.passSecs), nil
}

// gcPhase starts a fresh server with collection on (sweep) or off, gives it garbage older than
// the grace period, and measures pushes and pulls. Off, it then times one pass by hand.
func gcPhase(ctx context.Context, o options, gp gcPlan, tmp, name string, sweep bool) (r gcPhaseResult, err error) {
	o.berthExtra = "gc:\n  interval: 0s\n"
	if sweep {
		o.berthExtra = fmt.Sprintf("gc:\n  grace: %s\n  interval: 1s\n", gcGrace)
	}
	s, err := startServer(ctx, o, tmp, name, "", nil)
	if err != nil {
		return r, err
	}
	defer func() {
		s.stop()
		os.RemoveAll(s.dir)
	}()
	c := newClient(8)
	defer c.CloseIdleConnections()
	seed := uint64(0x9c0000)
	fresh := func(n int, size int64) []blob {
		out := make([]blob, n)
		for i := range out {
			seed++
			out[i] = newBlob(randomBytes(seed, size))
		}
		return out
	}
	pullSet := fresh(gp.pullBlobs, gp.pullSize)
	if err := pushKeptImage(ctx, c, s.base, "bench/gc-kept", pullSet); err != nil {
		return r, err
	}
	garbage := fresh(gp.garbage, gp.blobSize)
	pushed := time.Now()
	if err := pushAll(ctx, c, s.base, garbage, 8); err != nil {
		return r, err
	}
	fmt.Printf("   %s: %d garbage blobs pushed in %.1f s; waiting for them to be older than %s\n",
		map[bool]string{false: "collection off", true: "collector on"}[sweep], gp.garbage, time.Since(pushed).Seconds(), gcGrace)
	time.Sleep(time.Until(pushed.Add(gcGrace + time.Second)))
	pushes := fresh(gp.pushes, gp.pushSize)
	start := time.Now()
	if err := pushAll(ctx, c, s.base, pushes, 4); err != nil {
		return r, err
	}
	r.pushMBs = float64(int64(gp.pushes)*gp.pushSize) / (1 << 20) / time.Since(start).Seconds()
	start = time.Now()
	if err := pullAll(ctx, c, s.base, pullSet, gp.pulls, 4); err != nil {
		return r, err
	}
	r.pullRPS = float64(gp.pulls) / time.Since(start).Seconds()
	for _, b := range garbage {
		if gcStored(ctx, c, s.base, b) {
			r.left++
		}
	}
	if !sweep {
		start = time.Now()
		if r.pass, err = gcPass(ctx, o, s); err != nil {
			return r, err
		}
		r.passSecs = time.Since(start).Seconds()
		if r.pass.deleted < gp.garbage {
			return r, fmt.Errorf("the pass deleted %d blobs of the %d garbage ones", r.pass.deleted, gp.garbage)
		}
	}
	return r, nil
}

// gcStored reports whether blob b is still in bench/gc (a HEAD).
func gcStored(ctx context.Context, c *http.Client, base string, b blob) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/bench/gc/blobs/"+b.digest, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

type gcStats struct{ reviewed, deleted int }

var gcOutput = regexp.MustCompile(`reviewed (\d+) blobs.*; (?:deleted|would delete) (\d+) `)

// gcPass runs `berth gc --grace 1s` against s's storage and metadata, as an operator would beside
// the running server.
func gcPass(ctx context.Context, o options, s *server) (gcStats, error) {
	args := []string{"gc", "--grace", "1s", "--data", filepath.Join(s.dir, "data")}
	if _, err := os.Stat(filepath.Join(s.dir, "berth.yaml")); err == nil {
		args = append(args, "--config", filepath.Join(s.dir, "berth.yaml"))
	}
	cmd := exec.CommandContext(ctx, o.berth, args...)
	if s.space != nil {
		cmd.Env = append(os.Environ(), s.space.berthEnv()...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return gcStats{}, fmt.Errorf("berth gc: %v: %s", err, out)
	}
	m := gcOutput.FindSubmatch(out)
	if m == nil {
		return gcStats{}, fmt.Errorf("berth gc printed %q", out)
	}
	r, _ := strconv.Atoi(string(m[1]))
	d, _ := strconv.Atoi(string(m[2]))
	return gcStats{r, d}, nil
}

// pushAll pushes blobs into bench/gc, conc at a time.
func pushAll(ctx context.Context, c *http.Client, base string, blobs []blob, conc int) error {
	return each(len(blobs), conc, func(i int) error {
		_, err := uploadBlob(ctx, c, base, "bench/gc", bytes.NewReader(blobs[i].data), int64(len(blobs[i].data)), blobs[i].digest)
		return err
	})
}

// pushKeptImage pushes blobs and a manifest that references them into repo.
func pushKeptImage(ctx context.Context, c *http.Client, base, repo string, blobs []blob) error {
	cfg := newBlob([]byte(`{"architecture":"amd64","os":"linux"}`))
	for _, b := range append([]blob{cfg}, blobs...) {
		if _, err := uploadBlob(ctx, c, base, repo, bytes.NewReader(b.data), int64(len(b.data)), b.digest); err != nil {
			return err
		}
	}
	var layers []string
	for _, b := range blobs {
		layers = append(layers, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, b.digest, len(b.data)))
	}
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		cfg.digest, len(cfg.data), strings.Join(layers, ","))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/kept", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("PUT manifest: %d %s", resp.StatusCode, b)
	}
	return nil
}

// pullAll GETs n blobs of set (round robin) from the kept image's repository, conc at a time.
func pullAll(ctx context.Context, c *http.Client, base string, set []blob, n, conc int) error {
	return each(n, conc, func(i int) error {
		b := set[i%len(set)]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/bench/gc-kept/blobs/"+b.digest, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || got != int64(len(b.data)) {
			return fmt.Errorf("GET blob: %d, %d bytes, %v", resp.StatusCode, got, err)
		}
		return nil
	})
}

// each runs fn(0..n-1), conc at a time, and returns the first error.
func each(n, conc int, fn func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}
