package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// The soak (-only soak): berth as it runs in production (authentication on, a pull-through rule)
// under a steady mixed load for -duration, with its memory sampled every 10 s. It answers one
// question: does berth's memory level off under a load that keeps the stored data level? The
// verdict: every one of the last 5 minutes' mean RSS within 10% of minute 5's, with no failed
// workflow.

// soakPlan is how the soak runs.
type soakPlan struct {
	duration time.Duration
	rate     int // HTTP requests/s to berth, token requests and pings included
	conc     int // workers, each one client at a time
	keep     int // pushed manifests kept stored
	sample   time.Duration
	profiles []time.Duration // when heap profiles are saved (and at the end)
}

// soakSample is berth's memory at one moment, and the load so far.
type soakSample struct {
	at                     time.Duration
	rss, hwm, anon, file   int64 // bytes, from /proc/PID/status
	goInUse, heapLive      int64 // bytes, from /debug/memory (-1: not available)
	sqlWriter, sqlReader   int64 // page cache bytes of the writer and of one reader
	openReaders            int64
	db, wal                int64 // bytes of metadata.db and its write-ahead log
	requests, errs, stored int64
	cpu                    float64 // server CPU seconds so far
}

// debugMemory is the part of berth's /debug/memory the soak reads.
type debugMemory struct {
	Go struct {
		InUse    int64 `json:"in_use"`
		HeapLive int64 `json:"heap_live"`
	} `json:"go"`
	SQLite *struct {
		Writer      struct{ Cache int64 } `json:"writer"`
		Reader      struct{ Cache int64 } `json:"reader"`
		OpenReaders int64                 `json:"open_readers"`
	} `json:"sqlite"`
}

// berthSoakConfig is berth's configuration for the soak: defaults (authentication on, tokens of
// 5 minutes), the profiles on a loopback port, and one pull-through rule to the emulator that
// revalidates every tag pull (a manifest HEAD upstream each time).
func berthSoakConfig(upstream, debugAddr string) string {
	return fmt.Sprintf(`debug:
  pprof_addr: %s
proxy:
  defaults: false
  rules:
    - prefix: %s
      upstream: %s
      docker_hub: true
      revalidate: always
`, debugAddr, proxyPrefix, upstream)
}

// runSoak runs the soak and returns its report as text and markdown; err is set when the soak
// could not run or did not pass.
func runSoak(ctx context.Context, o options, sp soakPlan, tmp string) (text, md string, err error) {
	fmt.Printf("\n== soak: %s at %d requests/s, %d workers, %d manifests kept\n", sp.duration, sp.rate, sp.conc, sp.keep)
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true})
	if err != nil {
		return "", "", err
	}
	defer hub.Close()
	addCleanup(hub.Close) // also on a signal
	l := &soakLoad{hub: hub, pace: newPacer(sp.rate), keep: sp.keep, robot: "soak"}
	for i := range 8 {
		img, err := hub.PushImage(fmt.Sprintf("library/soak-warm-%d", i), "v1", randomBytes(uint64(300+i), 4096))
		if err != nil {
			return "", "", err
		}
		l.warm = append(l.warm, img)
	}
	w := &workload{}
	if err := w.smallImage(); err != nil {
		return "", "", err
	}
	l.config = w.config

	s, debugBase, err := startSoakServer(ctx, o, tmp, hub.RegistryURL())
	if err != nil {
		return "", "", err
	}
	defer s.stop()
	l.base = s.base
	pid := s.cmd.Process.Pid
	fmt.Printf("   berth pid %d on %s, profiles on %s, emulated Docker Hub on %s\n", pid, s.base, debugBase, hub.RegistryURL())
	if l.secret, err = soakAccounts(ctx, o, s); err != nil {
		return "", "", err
	}

	stamp := time.Now().Format("20060102-150405")
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return "", "", err
	}
	var profiles []string
	saveProfile := func(label string) {
		path := filepath.Join(o.out, fmt.Sprintf("soak-%s-heap-%s.pb.gz", stamp, label))
		if err := fetchTo(ctx, debugBase+"/debug/pprof/heap", path); err != nil {
			fmt.Printf("   heap profile %s: %v\n", label, err)
			return
		}
		profiles = append(profiles, path)
	}

	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, sp.duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range sp.conc {
		wg.Add(1)
		go func() { defer wg.Done(); l.worker(lctx, i) }()
	}
	var samples []soakSample
	take := func() {
		smp := soakSample{at: time.Since(start), requests: l.requests.Load(), errs: l.errorCount(), goInUse: -1, heapLive: -1}
		l.mu.Lock()
		smp.stored = int64(len(l.store))
		l.mu.Unlock()
		st, err := procStatus(pid)
		if err != nil {
			fmt.Printf("   sample: %v\n", err)
			return
		}
		smp.rss, smp.hwm, smp.anon, smp.file = st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"]
		smp.cpu, _ = procCPU(strconv.Itoa(pid))
		if fi, err := os.Stat(filepath.Join(s.dir, "data", "metadata.db")); err == nil {
			smp.db = fi.Size()
		}
		if fi, err := os.Stat(filepath.Join(s.dir, "data", "metadata.db-wal")); err == nil {
			smp.wal = fi.Size()
		}
		var dm debugMemory
		if err := getJSON(ctx, debugBase+"/debug/memory", &dm); err == nil {
			smp.goInUse, smp.heapLive = dm.Go.InUse, dm.Go.HeapLive
			if dm.SQLite != nil {
				smp.sqlWriter, smp.sqlReader, smp.openReaders = dm.SQLite.Writer.Cache, dm.SQLite.Reader.Cache, dm.SQLite.OpenReaders
			}
		}
		samples = append(samples, smp)
	}
	take()
	tick := time.NewTicker(sp.sample)
	defer tick.Stop()
	nextProfile, lastMinute := 0, 0
loop:
	for {
		select {
		case <-lctx.Done():
			break loop
		case <-tick.C:
		}
		take()
		el := time.Since(start)
		if nextProfile < len(sp.profiles) && el >= sp.profiles[nextProfile] {
			saveProfile(fmt.Sprintf("m%02d", int(sp.profiles[nextProfile].Minutes())))
			nextProfile++
		}
		if m := int(el / time.Minute); m > lastMinute {
			lastMinute = m
			last := samples[len(samples)-1]
			fmt.Printf("   %3d min: RSS %.1f MiB (peak %.1f), Go in use %.1f MiB, %d requests, %d failed workflows\n",
				m, mib(last.rss), mib(last.hwm), mib(last.goInUse), last.requests, last.errs)
		}
	}
	wg.Wait()
	take()
	saveProfile("end")
	if s.exited() {
		return "", "", fmt.Errorf("berth exited during the soak: %s", s.logTail())
	}
	rep := soakReport(sp, l, samples, profiles)
	return rep.text(), rep.markdown(), rep.err
}

// startSoakServer starts berth with authentication on and the soak's configuration, and returns
// the base URL of its profiles.
func startSoakServer(ctx context.Context, o options, tmp, upstream string) (*server, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	dport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr, debugAddr := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(dport)
	s := &server{name: "berth-soak", base: "http://" + addr, dir: filepath.Join(tmp, "srv-soak"), done: make(chan struct{})}
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(s.dir, "berth.yaml")
	if err := os.WriteFile(cfg, []byte(berthSoakConfig(upstream, debugAddr)), 0o644); err != nil {
		return nil, "", err
	}
	s.log = filepath.Join(s.dir, "server.log")
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	s.cmd = exec.Command(o.berth, "serve", "--addr", addr, "--data", data, "--config", cfg)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := startTracked(s.cmd); err != nil {
		return nil, "", err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return nil, "", err
	}
	return s, "http://" + debugAddr, nil
}

// soakAccounts checks the admin password berth wrote on first start, then creates the robot the
// load runs as, with the grants it needs, through berth's own CLI (which works on the data
// directory of a running berth), and waits for the grants to take effect. It returns the
// robot's secret.
func soakAccounts(ctx context.Context, o options, s *server) (string, error) {
	data := filepath.Join(s.dir, "data")
	if _, err := berthToken(ctx, s.base, data); err != nil {
		return "", fmt.Errorf("admin login: %w", err)
	}
	cli := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, o.berth, append(args, "--data", data)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("berth %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	secret, err := cli("robot", "add", "soak", "--description", "bench soak load")
	if err != nil {
		return "", err
	}
	for _, g := range [][]string{{"robot:soak", "soak/*", "pull,push,delete"}, {"robot:soak", proxyPrefix + "/*", "pull,fetch"}} {
		if _, err := cli(append([]string{"grant"}, g...)...); err != nil {
			return "", err
		}
	}
	// The grants reach the running berth within 2 s: until then tokens carry none of them.
	l := &soakLoad{base: s.base, robot: "soak", secret: secret, pace: newPacer(1000)}
	c := newClient(1)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, sc := range []struct{ repo, want string }{{"soak/app-0", "push"}, {proxyPrefix + "/library/x", "pull"}} {
			auth, err := l.login(ctx, c, "repository:"+sc.repo+":pull,push")
			if err != nil {
				return "", err
			}
			if !tokenGrants(auth, sc.repo, sc.want) {
				ok = false
			}
		}
		if ok {
			return secret, nil
		}
		if time.Now().After(deadline) {
			return "", errors.New("the robot's grants did not take effect within 15 s")
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tokenGrants reports whether the Bearer token in auth carries action on repo (its access claim).
func tokenGrants(auth, repo, action string) bool {
	parts := strings.Split(strings.TrimPrefix(auth, "Bearer "), ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var claims struct {
		Access []struct {
			Type, Name string
			Actions    []string
		} `json:"access"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return false
	}
	for _, a := range claims.Access {
		if a.Type == "repository" && a.Name == repo && slices.Contains(a.Actions, action) {
			return true
		}
	}
	return false
}

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// procStatus reads the kB fields of /proc/PID/status, in bytes.
func procStatus(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err == nil {
			out[k] = kb << 10
		}
	}
	if out["VmRSS"] == 0 {
		return nil, errors.New("no VmRSS in /proc/PID/status")
	}
	return out, nil
}

func getJSON(ctx context.Context, u string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// fetchTo saves what GET u answers in the file path.
func fetchTo(ctx context.Context, u, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// soakResult is the soak's tables and verdict.
type soakResult struct {
	tables []table
	err    error // not passed
}

func (r soakResult) text() string {
	var b strings.Builder
	for _, t := range r.tables {
		t.text(&b)
		b.WriteString("\n")
	}
	return b.String()
}

func (r soakResult) markdown() string {
	var b strings.Builder
	for _, t := range r.tables {
		t.markdown(&b)
		b.WriteString("\n")
	}
	return b.String()
}

// soakReport makes the per-minute table, the workflow counts and the verdict.
func soakReport(sp soakPlan, l *soakLoad, samples []soakSample, profiles []string) soakResult {
	// Each minute's figures are the means of its samples (at the end of each 10 s), so that the
	// GC's sawtooth within a minute does not decide the verdict; RSS max is the highest sample.
	type minute struct {
		n, count                                         int
		rss, rssMax, hwm, anon, other, goInUse, heapLive float64 // MiB
		sqlWriter, sqlReaders, db, wal                   float64 // MiB
		reqs, errs, stored                               int64
		cpu                                              float64 // CPU seconds
	}
	var mins []*minute
	last := int((sp.duration + time.Minute - 1) / time.Minute)
	for i := 1; i < len(samples); i++ {
		smp, prev := samples[i], samples[i-1]
		// The sample at (n-1, n] minutes belongs to minute n; the last one, taken just after
		// the load stopped, to the last minute.
		n := min(int((smp.at-time.Millisecond)/time.Minute)+1, last)
		for len(mins) < n {
			mins = append(mins, &minute{n: len(mins) + 1})
		}
		m := mins[n-1]
		m.count++
		m.rss += mib(smp.rss)
		m.rssMax = max(m.rssMax, mib(smp.rss))
		m.hwm = mib(smp.hwm)
		m.anon += mib(smp.anon)
		m.other += mib(smp.rss - smp.anon)
		m.goInUse += mib(smp.goInUse)
		m.heapLive += mib(smp.heapLive)
		m.sqlWriter += mib(smp.sqlWriter)
		m.sqlReaders += mib(smp.sqlReader * smp.openReaders)
		m.db, m.wal = mib(smp.db), mib(smp.wal)
		m.reqs += smp.requests - prev.requests
		m.errs += smp.errs - prev.errs
		m.stored = smp.stored
		m.cpu += smp.cpu - prev.cpu
	}
	t := table{
		title: fmt.Sprintf("Soak: berth's memory per minute (%d requests/s target, %d workers, samples every %s)", sp.rate, sp.conc, sp.sample),
		head: []string{"min", "req/s", "failed", "RSS MiB", "RSS max", "peak (HWM)", "anon", "file+shmem", "Go in use", "Go heap live",
			"SQLite writer", "SQLite readers", "db MiB", "wal MiB", "stored", "CPU cores"},
		left: 1,
		notes: []string{
			"RSS = mean VmRSS of the minute's samples, RSS max = the highest; anon = RssAnon, file+shmem = the rest (the binary's pages, SQLite's -shm map)",
			"Go in use = what the Go runtime has mapped less what it released (its share of anon at most); Go heap live = marked by the last GC",
			"SQLite writer, readers = page cache of the writer, and of one reader x open readers (outside the Go heap, as SQLite counts it); db, wal = file sizes; stored = pushed manifests stored",
		},
	}
	for _, m := range mins {
		if m.count == 0 {
			continue
		}
		k := float64(m.count)
		secs := k * sp.sample.Seconds()
		f := func(v float64) string { return fmt.Sprintf("%.1f", v) }
		t.rows = append(t.rows, []string{
			strconv.Itoa(m.n), fmt.Sprintf("%.0f", float64(m.reqs)/secs), strconv.FormatInt(m.errs, 10),
			f(m.rss / k), f(m.rssMax), f(m.hwm), f(m.anon / k), f(m.other / k), f(m.goInUse / k), f(m.heapLive / k),
			f(m.sqlWriter / k), f(m.sqlReaders / k), f(m.db), f(m.wal), strconv.FormatInt(m.stored, 10), fmt.Sprintf("%.2f", m.cpu/secs),
		})
	}
	end := samples[len(samples)-1]
	elapsed := end.at.Seconds()
	counts := table{title: "Soak: workflows", head: []string{"workflow", "done", "failed", "per s"}, left: 1}
	for k := range wfKinds {
		counts.rows = append(counts.rows, []string{wfNames[k], strconv.FormatInt(l.runs[k].Load(), 10),
			strconv.FormatInt(l.fails[k].Load(), 10), fmt.Sprintf("%.1f", float64(l.runs[k].Load())/elapsed)})
	}
	counts.notes = append(counts.notes, fmt.Sprintf("%d requests to berth in %.0f s: %.0f/s (target %d/s); every workflow starts with GET /v2/ (401) and a token request",
		end.requests, elapsed, float64(end.requests)/elapsed, sp.rate))
	for _, p := range profiles {
		counts.notes = append(counts.notes, "heap profile: "+p)
	}
	l.errMu.Lock()
	for _, e := range l.errFirst {
		counts.notes = append(counts.notes, "failure: "+e)
	}
	l.errMu.Unlock()

	verdict := table{title: "Soak: verdict", head: []string{"check", "value", "verdict"}, left: 2}
	var fails []string
	check := func(name, value string, ok bool) {
		v := "met"
		if !ok {
			v = "MISSED"
			fails = append(fails, name)
		}
		verdict.rows = append(verdict.rows, []string{name, value, v})
	}
	check("no failed workflow", strconv.FormatInt(end.errs, 10), end.errs == 0)
	rate := float64(end.requests) / elapsed
	check(fmt.Sprintf("load at least 90%% of %d requests/s", sp.rate), fmt.Sprintf("%.0f/s", rate), rate >= 0.9*float64(sp.rate))
	full := func(n int) bool { return n <= len(mins) && mins[n-1].count > 0 }
	if n := len(mins); n >= 10 && full(5) && full(n) {
		// span compares a per-minute mean over the last 5 minutes with minute 5's.
		span := func(of func(m *minute) float64) (base, lo, hi float64, shown string) {
			base = of(mins[4]) / float64(mins[4].count)
			lo, hi = base, base
			for _, m := range mins[n-5:] {
				if m.count > 0 {
					v := of(m) / float64(m.count)
					lo, hi = min(lo, v), max(hi, v)
				}
			}
			return base, lo, hi, fmt.Sprintf("%.1f to %.1f MiB (%+.1f%%, %+.1f%%)", lo, hi, 100*(lo/base-1), 100*(hi/base-1))
		}
		base, lo, hi, shown := span(func(m *minute) float64 { return m.rss })
		check(fmt.Sprintf("flat RSS: minutes %d-%d within 10%% of minute 5 (%.1f MiB)", n-4, n, base), shown,
			lo >= 0.9*base && hi <= 1.1*base)
		// Not judged: where a change comes from, the Go runtime or the rest (SQLite, the binary).
		base, _, _, shown = span(func(m *minute) float64 { return m.goInUse })
		verdict.rows = append(verdict.rows, []string{fmt.Sprintf("  of it Go in use (minute 5: %.1f MiB)", base), shown, "info"})
		base, _, _, shown = span(func(m *minute) float64 { return m.rss - m.goInUse })
		verdict.rows = append(verdict.rows, []string{fmt.Sprintf("  of it the rest: SQLite, the binary (minute 5: %.1f MiB)", base), shown, "info"})
	} else {
		verdict.rows = append(verdict.rows, []string{"flat RSS (needs a run of 10 minutes or more)", "-", "n/a"})
	}
	res := soakResult{tables: []table{t, counts, verdict}}
	if len(fails) > 0 {
		res.err = fmt.Errorf("soak: %s", strings.Join(fails, "; "))
	}
	return res
}
