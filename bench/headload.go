package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"
)

// headLoadCmd is the hidden subcommand that makes the bench binary a HEAD load generator. wrk
// cannot do HEAD: its HTTP parser waits for the Content-Length bytes of body a HEAD response
// announces but never sends, so every request ends in a timeout (wg/wrk#198, still open in wrk
// 4.1). This is the smallest client that does what wrk does for a GET: one keep-alive connection
// per concurrent request, the request bytes written as is, the response read up to the end of its
// header. It runs as a process of its own, GOMAXPROCS as wrk's threads, so that it takes about the
// CPU wrk would. With -method GET it reads bodies too, to compare it with wrk on the same server.
const headLoadCmd = "__headload"

// loadReport is what headload prints, as JSON, on stdout.
type loadReport struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	Non200   int64   `json:"non200"`
	Errors   int64   `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	P50      string  `json:"p50"`
	P99      string  `json:"p99"`
}

func runHeadLoad(args []string) {
	fs := flag.NewFlagSet(headLoadCmd, flag.ExitOnError)
	conns := fs.Int("c", 1, "connections")
	dur := fs.Duration("d", 5*time.Second, "duration")
	accept := fs.String("accept", "", "Accept header")
	method := fs.String("method", "HEAD", "HEAD, or GET to compare with wrk")
	authz := fs.String("authorization", "", "Authorization header, if any")
	fs.Parse(args)
	u, err := url.Parse(fs.Arg(0))
	if err != nil || u.Scheme != "http" {
		fmt.Fprintln(os.Stderr, "headload: need an http URL:", fs.Arg(0), err)
		os.Exit(2)
	}
	req := []byte(*method + " " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: berth-bench\r\n" +
		"Accept: " + *accept + "\r\n" + authHeader(*authz) + "\r\n")
	var (
		mu  sync.Mutex
		rep loadReport
		lat []time.Duration
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(*dur)
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, n, non200, errs, first := headWorker(u.Host, req, deadline)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, l...)
			rep.Requests += n
			rep.Non200 += non200
			rep.Errors += errs
			if rep.FirstErr == "" {
				rep.FirstErr = first
			}
		}()
	}
	wg.Wait()
	rep.Seconds = dur.Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		rep.P50 = wrkDuration(lat[len(lat)/2])
		rep.P99 = wrkDuration(lat[len(lat)*99/100])
	}
	json.NewEncoder(os.Stdout).Encode(rep)
}

// headWorker sends HEAD requests one after the other on one connection until the deadline, and
// counts those answered before it. It reconnects after an error or a "Connection: close".
func headWorker(host string, req []byte, deadline time.Time) (lat []time.Duration, n, non200, errs int64, first string) {
	fail := func(err error) {
		errs++
		if first == "" {
			first = err.Error()
		}
	}
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		t0 := time.Now()
		if !t0.Before(deadline) {
			return
		}
		if conn == nil {
			c, err := net.Dial("tcp", host)
			if err != nil {
				fail(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c.SetDeadline(deadline.Add(5 * time.Second))
			conn, br = c, bufio.NewReaderSize(c, 16<<10)
		}
		status, closing, err := roundTrip(conn, br, req)
		if err != nil {
			conn.Close()
			conn = nil
			if time.Now().Before(deadline) {
				fail(err)
			}
			continue
		}
		t1 := time.Now()
		if t1.Before(deadline) {
			n++
			lat = append(lat, t1.Sub(t0))
			if status != 200 {
				non200++
				if first == "" {
					first = "status " + strconv.Itoa(status)
				}
			}
		}
		if closing {
			conn.Close()
			conn = nil
		}
	}
}

// roundTrip writes one request and reads the response status line and header, which for a HEAD
// request is the whole response, and then (for a GET) the Content-Length bytes of body.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) (status int, closing bool, err error) {
	if _, err := conn.Write(req); err != nil {
		return 0, false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	head := bytes.HasPrefix(req, []byte("HEAD "))
	length := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(line) <= 2 { // the blank line ending the header
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
			closing = true
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(v))
		}
	}
	if !head {
		if _, err := br.Discard(length); err != nil {
			return 0, false, err
		}
	}
	return status, closing, nil
}

// runHeadLoadProcess runs headload in its own process with GOMAXPROCS threads and reads its report.
func authHeader(v string) string {
	if v == "" {
		return ""
	}
	return "Authorization: " + v + "\r\n"
}

func runHeadLoadProcess(ctx context.Context, threads, conns, secs int, accept, authz, url string) (loadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return loadResult{}, err
	}
	cmd := exec.CommandContext(ctx, self, headLoadCmd, "-c", strconv.Itoa(conns), "-d", strconv.Itoa(secs)+"s", "-accept", accept, "-authorization", authz, url)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(threads))
	out, cpu, err := runClient(cmd, secs)
	if err != nil {
		return loadResult{}, err
	}
	var rep loadReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return loadResult{}, fmt.Errorf("headload output %q: %w", out, err)
	}
	return loadResult{
		rps: float64(rep.Requests) / rep.Seconds, requests: rep.Requests, bad: rep.Non200, badWhat: "non-200",
		sockErrs: rep.Errors, firstErr: rep.FirstErr, p50: rep.P50, p99: rep.P99, clientCPU: cpu,
	}, nil
}

// wrkDuration formats a latency the way wrk does: 463.00us, 19.24ms, 1.07s.
func wrkDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fus", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
