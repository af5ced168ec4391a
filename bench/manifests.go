package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// benchManifests pushes the small image and measures manifest GET (wrk) and HEAD (headload, since
// wrk cannot do HEAD) by tag at each concurrency: a warm-up run, then the measured run. A run with
// any error response or socket error counts as failed, so a registry that answers errors fast
// cannot win.
func benchManifests(ctx context.Context, o options, p plan, w *workload, s *server, res *results) error {
	c := s.client(1)
	defer c.CloseIdleConnections()
	// The memory server holds manifests only: it gets the manifest alone.
	if err := pushImage(ctx, c, s.base, w, s.name != "memory"); err != nil {
		return fmt.Errorf("pushing the small image: %w", err)
	}
	url := s.base + "/v2/" + repoSmall + "/manifests/latest"
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		// wrk counts only statuses >= 400 as errors: check once here that the answer is a 200 with
		// the right manifest, so that a 3xx cannot pass either.
		if err := checkManifest(ctx, c, method, url, w.manifest); err != nil {
			return err
		}
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, conc := range p.manConc {
			threads := min(o.wrkThreads, conc)
			load := func(secs int) (loadResult, error) {
				if method == http.MethodHead {
					return runHeadLoadProcess(ctx, threads, conc, secs, acceptAll, s.auth, url)
				}
				args := []string{"--timeout", "5s", "-H", "Accept: " + acceptAll}
				if s.auth != "" {
					args = append(args, "-H", "Authorization: "+s.auth)
				}
				return runWrk(ctx, o.wrk, threads, conc, secs, args, url)
			}
			if err := waitQuiet(o.quietWait); err != nil {
				return err
			}
			if _, err := load(p.manWarm); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			m, err := startMeter(s)
			if err != nil {
				return err
			}
			r, err := load(p.manDur)
			if err != nil {
				return err
			}
			srvCPU, others, _, err := m.stop(r.clientCPU)
			if err != nil {
				return err
			}
			key := fmt.Sprintf("%s c=%d", method, conc)
			if bad := r.problems(); bad != "" {
				res.manifest.set(conc, method, s.name, failure(bad))
				fmt.Printf("   manifest %-10s FAILED: %s\n", key, bad)
				continue
			}
			perReq := srvCPU / float64(r.requests) * 1e6
			res.manifest.set(conc, method, s.name, measuredBy(r.rps, others))
			res.auth.set(conc, method, s.name, measuredBy(r.rps, others))
			res.manifestCPU.set(conc, method, s.name, measuredBy(perReq, others))
			var front string
			if m.front > 0 {
				front = fmt.Sprintf(" (HAProxy %.0f)", m.front/float64(r.requests)*1e6)
			}
			fmt.Printf("   manifest %-10s %7.0f req/s, server CPU %4.0f us/req%s  (p50 %s, p99 %s; client %.2f cores, others %.2f cores, engines %.2f cores)\n",
				key, r.rps, perReq, front, r.p50, r.p99, r.clientCPU/float64(p.manDur), others, m.engines/float64(p.manDur))
		}
	}
	return nil
}

// pushImage pushes the config and the layer (when blobs is set) and the manifest, tagged latest.
func pushImage(ctx context.Context, c *http.Client, base string, w *workload, blobs bool) error {
	for _, b := range []blob{w.config, w.layer} {
		if !blobs {
			break
		}
		if _, err := uploadBlob(ctx, c, base, repoSmall, bytes.NewReader(b.data), int64(len(b.data)), b.digest); err != nil {
			return err
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repoSmall+"/manifests/latest", bytes.NewReader(w.manifest.data))
	req.Header.Set("Content-Type", mtManifest)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("PUT manifest: status %d: %s", resp.StatusCode, msg)
	}
	return nil
}

// checkManifest verifies one GET or HEAD of the manifest: 200, its media type, digest, length and
// (for GET) content.
func checkManifest(ctx context.Context, c *http.Client, method, url string, m blob) error {
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	req.Header.Set("Accept", acceptAll)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, body)
	case resp.Header.Get("Content-Type") != mtManifest:
		return fmt.Errorf("%s %s: Content-Type %q", method, url, resp.Header.Get("Content-Type"))
	case resp.Header.Get("Docker-Content-Digest") != m.digest:
		return fmt.Errorf("%s %s: Docker-Content-Digest %q, want %s", method, url, resp.Header.Get("Docker-Content-Digest"), m.digest)
	case resp.ContentLength != int64(len(m.data)):
		return fmt.Errorf("%s %s: Content-Length %d, want %d", method, url, resp.ContentLength, len(m.data))
	case method == http.MethodGet && !bytes.Equal(body, m.data):
		return fmt.Errorf("GET %s: body differs from the pushed manifest", url)
	}
	return nil
}

// loadResult is what one run of wrk or headload reports.
type loadResult struct {
	rps       float64
	requests  int64
	bad       int64  // error responses: status >= 400 for wrk, not 200 for headload
	badWhat   string // how bad was counted
	sockErrs  int64
	firstErr  string
	p50, p99  string
	clientCPU float64 // seconds the load generator used
}

// problems is empty for a clean run.
func (r loadResult) problems() string {
	var bad []string
	if r.requests == 0 {
		bad = append(bad, "no request completed")
	}
	if r.bad > 0 {
		bad = append(bad, fmt.Sprintf("%d %s responses", r.bad, r.badWhat))
	}
	if r.sockErrs > 0 {
		bad = append(bad, fmt.Sprintf("%d socket errors", r.sockErrs))
	}
	if len(bad) > 0 && r.firstErr != "" {
		bad = append(bad, "first: "+r.firstErr)
	}
	return strings.Join(bad, "; ")
}

// runWrk runs wrk for secs seconds and parses its report.
func runWrk(ctx context.Context, wrk string, threads, conns, secs int, args []string, url string) (loadResult, error) {
	all := append([]string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", strconv.Itoa(secs) + "s", "--latency"}, args...)
	out, cpu, err := runClient(exec.CommandContext(ctx, wrk, append(all, url)...), secs)
	if err != nil {
		return loadResult{}, err
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("%w in:\n%s", err, out)
	}
	r.clientCPU = cpu
	return r, nil
}

func parseWrk(out string) (loadResult, error) {
	r := loadResult{badWhat: "status >= 400"}
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, err
			}
			r.rps, found = v, true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			r.bad, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		case strings.HasPrefix(line, "Socket errors:"):
			var c, rd, w, t int64
			fmt.Sscanf(line, "Socket errors: connect %d, read %d, write %d, timeout %d", &c, &rd, &w, &t)
			r.sockErrs = c + rd + w + t
			r.firstErr = line
		case len(f) == 2 && f[0] == "50%":
			r.p50 = f[1]
		case len(f) == 2 && f[0] == "99%":
			r.p99 = f[1]
		}
	}
	if !found {
		return r, fmt.Errorf("no Requests/sec line")
	}
	return r, nil
}

// runClient runs a load generator that should take secs seconds, and returns its standard output
// and the CPU seconds it used.
func runClient(cmd *exec.Cmd, secs int) ([]byte, float64, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := startTracked(cmd); err != nil {
		return nil, 0, err
	}
	defer untrack(cmd)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Duration(secs+30) * time.Second):
		cmd.Process.Kill()
		err = fmt.Errorf("did not finish: %w", <-done)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w: %s%s", filepath.Base(cmd.Path), err, out.Bytes(), errb.Bytes())
	}
	ps := cmd.ProcessState
	return out.Bytes(), (ps.UserTime() + ps.SystemTime()).Seconds(), nil
}
