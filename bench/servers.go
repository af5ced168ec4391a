package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth/berth/internal/enginetest"
)

// fileServerCmd is the hidden subcommand that makes the bench binary a plain Go file server: a
// process of its own, so that its CPU is measured exactly like a registry's.
const fileServerCmd = "__fileserver"

// runFileServer serves one file at every path with http.ServeFile: ADDR FILE.
func runFileServer(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench", fileServerCmd, "ADDR FILE")
		os.Exit(2)
	}
	file := args[1]
	err := http.ListenAndServe(args[0], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, file)
	}))
	fmt.Fprintln(os.Stderr, "fileserver:", err)
	os.Exit(1)
}

// Every child process and temp directory is registered here, so that one call ends them all: at
// the end of the run, on an error, or on a signal.
var (
	liveMu   sync.Mutex
	live     = map[*exec.Cmd]bool{}
	cleanups []func()
	stopping bool // cleanup has begun: start nothing more
)

func addCleanup(f func()) {
	liveMu.Lock()
	defer liveMu.Unlock()
	cleanups = append(cleanups, f)
}

// cleanup kills every child still running (its whole process group) and runs the cleanups.
func cleanup() {
	liveMu.Lock()
	defer liveMu.Unlock()
	stopping = true
	for cmd := range live {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Process.Kill()
		}
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

// startTracked starts cmd in a process group of its own (a terminal's Ctrl-C reaches only us, and
// we kill the group), with SIGKILL as its parent-death signal in case we die without cleaning up.
func startTracked(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	liveMu.Lock()
	defer liveMu.Unlock()
	if stopping {
		return errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	live[cmd] = true
	return nil
}

func untrack(cmd *exec.Cmd) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, cmd)
}

// server is one running server: one process, or (berth-s3pg-3) HAProxy in front of replicas.
type server struct {
	name string
	base string // http://127.0.0.1:PORT
	dir  string // its data directory and log
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  string
	// auth is the Authorization header every request sends (berth-auth: a Bearer token).
	auth string
	// replicas are the berth processes behind HAProxy (cmd) of a cluster: their CPU is the
	// server's, their largest peak RSS its peak RSS.
	replicas []*server
	space    *space                // its database and bucket on the engines (s3 servers)
	fwd      *enginetest.Forwarder // in front of it: counts what it sends (berth-s3pg-redir)
}

// client is newClient whose requests carry s.auth.
func (s *server) client(conns int) *http.Client {
	c := newClient(conns)
	if s.auth != "" {
		c.Transport = authTransport{c.Transport, s.auth}
	}
	return c
}

type authTransport struct {
	base http.RoundTripper
	auth string
}

func (t authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", t.auth)
	return t.base.RoundTrip(r)
}

// berthAuthConfig is berth with authentication on (as it runs by default), with tokens that
// outlive the run so that every request of the load carries one token, as a client would.
const berthAuthConfig = "auth:\n  token_ttl: 24h\n"

func (s *server) isRegistry() bool { return s.name != "fileserver" && s.name != "memory" }

// authOn says whether the server answers 401 to anonymous requests.
func (s *server) authOn() bool { return s.name == "berth-auth" || s.name == "berth-soak" }

// proxySetup makes a registry a pull-through cache of upstream.
type proxySetup struct {
	upstream   string // http://127.0.0.1:PORT
	revalidate string // berth's policy for cached tags: always, ttl:24h
}

// startServer starts the named server on a free loopback port with a fresh data directory (and,
// for the s3 servers, a fresh database and bucket on the engines) and waits until it answers.
// dlFile is the file the plain file server serves; px (nil for none) makes it a pull-through
// cache: berth ("berth", or "berth-ttl" for a second policy) with one rule, docker-hub, for the
// upstream; Distribution with proxy.remoteurl.
func startServer(ctx context.Context, o options, tmp, name, dlFile string, px *proxySetup) (s *server, err error) {
	var sp *space
	if onEngines(name) {
		if sp, err = newSpace(strings.HasPrefix(name, "berth")); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				sp.release()
			}
		}()
	}
	if behindLB(name) {
		s, err = startCluster(ctx, o, tmp, name, replicasOf(name), px, sp)
	} else {
		s, err = startProcess(ctx, o, tmp, name, name, dlFile, px, sp)
	}
	if err != nil {
		return nil, err
	}
	s.space = sp
	if name == "berth-s3pg-redir" {
		// Every byte berth sends passes this counter: blob bytes should not (they come from the
		// bucket, after the 307).
		if s.fwd, err = enginetest.Listen(strings.TrimPrefix(s.base, "http://")); err != nil {
			s.stop()
			return nil, err
		}
		s.base = "http://" + s.fwd.Addr()
	}
	return s, nil
}

// startProcess starts one process of the kind of server named kind (a replica of berth-s3pg-3 is
// a berth-s3pg), its directory named after name.
func startProcess(ctx context.Context, o options, tmp, name, kind, dlFile string, px *proxySetup, sp *space) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &server{name: name, base: "http://" + addr, dir: filepath.Join(tmp, "srv-"+name), done: make(chan struct{})}
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	s.log = filepath.Join(s.dir, "server.log")
	writeConfig := func(file, content string) (string, error) {
		p := filepath.Join(s.dir, file)
		return p, os.WriteFile(p, []byte(content), 0o644)
	}
	switch kind {
	case "berth", "berth-nometrics", "berth-ttl", "berth-enc", "berth-auth", "berth-s3pg", "berth-s3pg-redir":
		// Options go in a configuration file, one section per feature; addr, data and log level
		// are flags.
		args := []string{"serve", "--addr", addr, "--data", data, "--log-level", "warn"}
		var cfg string
		switch {
		case kind == "berth-ttl" && px == nil:
			return nil, fmt.Errorf("%s: only as a proxy", kind)
		case kind == "berth-auth":
			cfg += berthAuthConfig
		default:
			args = append(args, "--dev")
		}
		if kind == "berth-enc" {
			key := filepath.Join(s.dir, "kek") // beside the data directory, not in it
			if err := writeKeyFile(key); err != nil {
				return nil, err
			}
			args = append(args, "--encryption-key-file", key)
		}
		if kind == "berth-nometrics" {
			// What measuring every request costs: berth with its metrics off.
			cfg += "metrics:\n  off: true\n"
		}
		if px != nil {
			cfg += berthProxyConfig(px)
		}
		cfg += o.berthExtra
		s.cmd = exec.Command(o.berth)
		if sp != nil {
			cfg += sp.berthConfig(kind == "berth-s3pg-redir")
			s.cmd.Env = append(os.Environ(), sp.berthEnv()...)
		}
		if cfg != "" {
			path, err := writeConfig("berth.yaml", cfg)
			if err != nil {
				return nil, err
			}
			args = append(args, "--config", path)
		}
		s.cmd.Args = append(s.cmd.Args, args...)
	case "v3", "2.8", "v3-s3":
		storage := fsStorage(data)
		if sp != nil {
			storage = sp.distributionStorage()
		}
		cfg, err := writeConfig("config.yml", distributionConfig(addr, storage, px))
		if err != nil {
			return nil, err
		}
		bin := o.v3
		if kind == "2.8" {
			bin = o.v28
		}
		s.cmd = exec.Command(bin, "serve", cfg)
		// v3 exports OpenTelemetry traces to localhost:4318 unless told not to; its official
		// image sets this too (distribution/distribution#4671).
		s.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	case "fileserver":
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		s.cmd = exec.Command(self, fileServerCmd, addr, dlFile)
	case "memory":
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		s.cmd = exec.Command(self, memoryServerCmd, addr)
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	if kind == "berth-auth" {
		if s.auth, err = berthToken(ctx, s.base, data); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

// launch starts s.cmd, its output in s.log, and waits until it answers.
func (s *server) launch(ctx context.Context) error {
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := startTracked(s.cmd); err != nil {
		return err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return err
	}
	return nil
}

// distributionConfig is the same configuration for 2.8 and v3: storage (fsStorage, or an s3
// section), deletes on, warnings only, no access log; with px, a pull-through cache of
// px.upstream. It keeps what Distribution's own packages ship in their default config.yml (the
// Debian package's /etc/docker/registry/config.yml, the official image's
// /etc/distribution/config.yml): the in-memory cache of blob descriptors, without which every blob
// HEAD and GET stats the storage for the link and the blob's data.
func distributionConfig(addr, storage string, px *proxySetup) string {
	var proxy string
	if px != nil {
		proxy = fmt.Sprintf("proxy:\n  remoteurl: %s\n", px.upstream)
	}
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
%s  delete:
    enabled: true
http:
  addr: %s
%s`, storage, addr, proxy)
}

// fsStorage is Distribution's filesystem storage in data, indented under storage.
func fsStorage(data string) string {
	return fmt.Sprintf("  filesystem:\n    rootdirectory: %s\n", data)
}

// berthProxyConfig is berth's configuration file as a pull-through cache: only the docker-hub
// rule, pointed at the emulator (addr, data and log level are flags, as without a proxy).
func berthProxyConfig(px *proxySetup) string {
	return fmt.Sprintf(`proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: %s
`, px.upstream, px.revalidate)
}

func (s *server) waitReady(ctx context.Context) error {
	url, method := s.base+"/v2/", http.MethodGet
	if s.name == "fileserver" {
		url, method = s.base+"/blob", http.MethodHead
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited at start: %s", s.logTail())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, method, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || s.authOn() && resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			return fmt.Errorf("%s %s: status %d", method, url, resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering on %s after 30s: %s", s.base, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the server (SIGTERM, then SIGKILL after 5s), its replicas, and removes its data
// directory, database and bucket.
func (s *server) stop() {
	if s.fwd != nil {
		s.fwd.Cut()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	untrack(s.cmd)
	for _, r := range s.replicas {
		r.stop()
	}
	s.space.release()
	os.RemoveAll(s.dir)
}

// logTail is the end of the server's output, for error messages.
func (s *server) logTail() string {
	data, _ := os.ReadFile(s.log)
	data = bytes.TrimSpace(data)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	if len(data) == 0 {
		return "(no output)"
	}
	return string(data)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux ABI
// Go supports (the stdlib has no sysconf).
const clockTicks = 100

// cpuSeconds is the server's user+system CPU time so far, its replicas' included.
func (s *server) cpuSeconds() (float64, error) {
	sum, err := procCPU(strconv.Itoa(s.cmd.Process.Pid))
	for _, r := range s.replicas {
		v, rerr := r.cpuSeconds()
		sum, err = sum+v, errors.Join(err, rerr)
	}
	return sum, err
}

// frontCPU is the CPU seconds a cluster's HAProxy has used so far (0 for a single process).
func (s *server) frontCPU() (float64, error) {
	if len(s.replicas) == 0 {
		return 0, nil
	}
	return procCPU(strconv.Itoa(s.cmd.Process.Pid))
}

// peakRSS is the server's resident set high-water mark (VmHWM), in bytes; a cluster's is its
// largest replica's (HAProxy's is not counted).
func (s *server) peakRSS() (int64, error) {
	if len(s.replicas) > 0 {
		var most int64
		for _, r := range s.replicas {
			v, err := r.peakRSS()
			if err != nil {
				return 0, err
			}
			most = max(most, v)
		}
		return most, nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

// pids are the server's processes: HAProxy and the replicas of a cluster.
func (s *server) pids() []int {
	ps := []int{s.cmd.Process.Pid}
	for _, r := range s.replicas {
		ps = append(ps, r.pids()...)
	}
	return ps
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// newClient is an HTTP client for one measurement: keep-alive connections for every worker, no
// compression, large socket buffers in the transport.
func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        conns + 4,
		MaxIdleConnsPerHost: conns + 4,
		DisableCompression:  true,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     256 << 10,
		IdleConnTimeout:     time.Minute,
	}}
}

// meter measures one point: the server's CPU, and the CPU every other process on the machine used
// meanwhile (busy time from /proc/stat less the server's and the clients'), which should be about
// zero on a quiet machine. The harness is itself a client (downloads, pushes) and is counted as one.
type meter struct {
	s                        *server
	t0                       time.Time
	busy0, srv0, self0, eng0 float64
	// engines is the CPU seconds the engines (PostgreSQL, versitygw) used between start and
	// stop: not the server's, and not other processes' either.
	engines float64
	// front is the part of the server's CPU seconds that a cluster's HAProxy used.
	front, front0 float64
}

func startMeter(s *server) (*meter, error) {
	m := &meter{s: s, t0: time.Now()}
	var err error
	if m.busy0, err = machineBusy(); err != nil {
		return nil, err
	}
	if s != nil {
		if m.srv0, err = s.cpuSeconds(); err != nil {
			return nil, err
		}
		if m.front0, err = s.frontCPU(); err != nil {
			return nil, err
		}
	}
	if m.eng0, err = treeCPU(enginetest.Pids()); err != nil {
		return nil, err
	}
	m.self0, err = procCPU("self")
	return m, err
}

// stop returns the server's CPU seconds since the start, the CPU cores other processes used on
// average, and the wall time. clientCPU is what an outside load generator used.
func (m *meter) stop(clientCPU float64) (srv, others float64, elapsed time.Duration, err error) {
	busy, err1 := machineBusy()
	var srv1 float64
	var err2 error
	if m.s != nil {
		srv1, err2 = m.s.cpuSeconds()
		front, ferr := m.s.frontCPU()
		m.front, err2 = front-m.front0, errors.Join(err2, ferr)
	}
	self, err3 := procCPU("self")
	eng, err4 := treeCPU(enginetest.Pids())
	elapsed = time.Since(m.t0)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return 0, 0, 0, err
	}
	srv, m.engines = srv1-m.srv0, max(eng-m.eng0, 0)
	others = (busy - m.busy0 - srv - (self - m.self0) - clientCPU - m.engines) / elapsed.Seconds()
	return srv, max(others, 0), elapsed, nil
}

// machineBusy is the CPU time all cores have spent not idle since boot, in seconds.
func machineBusy() (float64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat format")
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// procCPU is the user+system CPU seconds of a process ("self" or a pid) so far.
func procCPU(pid string) (float64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields after it. utime and stime
	// are fields 14 and 15 of the line, so 12th and 13th after the name.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// treeCPU is the user+system CPU seconds so far of the processes roots and their descendants
// (PostgreSQL forks a backend per connection). A process that ended meanwhile takes its CPU with it.
func treeCPU(roots []int) (float64, error) {
	if len(roots) == 0 {
		return 0, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, ppid is the second field after it.
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	var sum float64
	for todo := slices.Clone(roots); len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		if v, err := procCPU(strconv.Itoa(pid)); err == nil {
			sum += v
		}
	}
	return sum, nil
}

// waitQuiet waits, at most limit, until other processes use less than noiseWarn CPU cores over
// half a second: on a shared machine, a point then starts at a quiet moment.
func waitQuiet(limit time.Duration) error {
	if limit <= 0 {
		return nil
	}
	start := time.Now()
	for {
		m, err := startMeter(nil)
		if err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		_, others, _, err := m.stop(0)
		if err != nil {
			return err
		}
		waited := time.Since(start)
		if others < noiseWarn || waited > limit {
			if waited > time.Second {
				fmt.Printf("   waited %s for other processes to quiet down (now %.2f cores)\n", waited.Round(100*time.Millisecond), others)
			}
			return nil
		}
		time.Sleep(time.Second)
	}
}

// berthToken logs in as the admin berth created on first start and returns a Bearer token for
// pull and push on the benchmark's repositories, as docker or crane would get one.
func berthToken(ctx context.Context, base, data string) (string, error) {
	pw, err := os.ReadFile(filepath.Join(data, "admin-password"))
	if err != nil {
		return "", err
	}
	q := url.Values{"service": {"berth"}}
	for _, repo := range []string{repoSmall, repoBig, repoPush} {
		q.Add("scope", "repository:"+repo+":pull,push")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/token?"+q.Encode(), nil)
	req.SetBasicAuth("admin", strings.TrimSpace(string(pw)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		return "", fmt.Errorf("token from %s: status %d, %v", base, resp.StatusCode, err)
	}
	return "Bearer " + tok.Token, nil
}
