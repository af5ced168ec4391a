// Command bench measures berth side by side with CNCF Distribution 2.8 and v3, in one run on one
// machine, and prints each number with the ratios berth/v3 and berth/2.8: manifest GET and HEAD
// requests/s (wrk; also against a trivial Go server answering from a map, the ceiling), blob download MB/s and server CPU per GB (also against a plain Go file server,
// the physical ceiling), push MB/s, and peak RSS; and each as a pull-through cache of an emulated
// Docker Hub (upstream requests, wall time of cold and warm pulls by N concurrent clients). See
// bench/README.md.
//
//	go run ./bench [-quick] [-only manifest,download,push,proxy] [-servers berth,v3,2.8,fileserver,memory]
package main

import (
	"context"
	"debug/buildinfo"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth/berth/internal/enginetest"
)

// Names of the measurements (-only) and of the servers (-servers), in the order they run. The
// soak (berth alone, 30 minutes by default) and gc (online garbage collection: bench/gc.go) run
// only when -only names them, and the servers on
// PostgreSQL and versitygw only when -servers names them.
var (
	allMeasures = []string{"manifest", "download", "push", "proxy", "logins"}
	optMeasures = []string{"gc", "soak"}
	allServers  = []string{"berth", "berth-nometrics", "berth-auth", "berth-enc", "berth-s3pg", "berth-s3pg-redir", "berth-s3pg-1", "berth-s3pg-3", "v3", "v3-s3", "2.8", "fileserver", "memory"}
)

// isStandard says whether a measurement runs on one start of each server (all but proxy, which
// starts each server afresh for every point, and logins and soak, which run berth alone).
func isStandard(m string) bool { return m != "proxy" && m != "logins" && m != "soak" && m != "gc" }

// options are the command line.
type options struct {
	quick      bool
	only       []string
	servers    []string
	berth      string // prebuilt berth binary; empty: build from the repository
	berthBuilt string // the repository the harness built berth from
	v3         string
	v28        string
	haproxy    string
	wrk        string
	wrkThreads int
	repeat     int
	quietWait  time.Duration
	out        string // directory of the markdown copy
	soak       soakPlan
	// berthExtra is more of berth's configuration file (the gc measurement's gc section).
	berthExtra string
}

// plan is how long and how much each measurement runs; -quick shrinks it.
type plan struct {
	manWarm, manDur int // wrk seconds per point: warm-up, then measured
	manConc         []int
	dlDur           time.Duration // measured window per point
	dlConc          []int
	dlSize          int64
	pushSize        int64
	pushConc        []int
	pushCount       map[int]int // concurrency -> blobs pushed at it

	proxyLayers   int   // layers of the image on the emulated Docker Hub
	proxyLayer    int64 // bytes per layer
	proxyConc     []int // concurrent clients
	proxyRate     int64 // bytes/s of the throttled upstream link
	proxyDeadline time.Duration
	// proxyScale is the clients of the scale-out point, 3 x the last of proxyConc: HAProxy
	// spreads them over three replicas (berth-s3pg-3), one replica (berth-s3pg) takes them all.
	proxyScale int
}

func defaultPlan(quick bool) plan {
	p := plan{
		manWarm: 2, manDur: 8, manConc: []int{1, 16, 64},
		dlDur: 8 * time.Second, dlConc: []int{1, 8}, dlSize: 256 << 20,
		pushSize: 64 << 20, pushConc: []int{1, 4}, pushCount: map[int]int{1: 8, 4: 16},
		proxyLayers: 3, proxyLayer: 64 << 20, proxyConc: []int{1, 10, 50}, proxyRate: 50e6,
		proxyDeadline: 90 * time.Second, proxyScale: 150,
	}
	if quick {
		p.manWarm, p.manDur = 1, 1
		p.dlDur = 2 * time.Second
		p.pushCount = map[int]int{1: 2, 4: 4}
		p.proxyLayer, p.proxyConc, p.proxyScale = 16<<20, []int{1, 10}, 30
	}
	return p
}

// proxyNs are the client counts of the proxy waves of a server: proxyConc, and proxyScale for
// berth on the engines.
func (p plan) proxyNs(server string) []int {
	if strings.HasPrefix(server, "berth-s3pg") {
		return append(slices.Clone(p.proxyConc), p.proxyScale)
	}
	return p.proxyConc
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == fileServerCmd {
		runFileServer(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == memoryServerCmd {
		runMemoryServer(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == headLoadCmd {
		runHeadLoad(os.Args[2:])
		return
	}
	// Ctrl-C, SIGTERM, a closed terminal or a closed output pipe (| head): kill every child now,
	// whatever the measurement is doing.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping every server\n", s)
		cleanup()
		os.Exit(130)
	}()
	err := run()
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var only, servers string
	root := repoRoot()
	flag.BoolVar(&o.quick, "quick", false, "short durations: a smoke run of about 2 minutes")
	flag.StringVar(&only, "only", strings.Join(allMeasures, ","), "measurements to run: "+strings.Join(allMeasures, ","))
	flag.StringVar(&servers, "servers", strings.Join(slices.DeleteFunc(slices.Clone(allServers), onEngines), ","), "servers to measure: "+strings.Join(allServers, ","))
	flag.StringVar(&o.berth, "berth", "", "berth binary (default: go build ./cmd/berth into a temp dir)")
	flag.StringVar(&o.v3, "registry-v3", filepath.Join(root, ".tools", "bin", "registry"), "CNCF Distribution v3 binary")
	flag.StringVar(&o.v28, "registry-2.8", "/usr/bin/docker-registry", "CNCF Distribution 2.8 binary")
	flag.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	flag.IntVar(&o.repeat, "repeat", 3, "rounds: every server is measured this many times, in turn; each number reported and graded is the median")
	flag.IntVar(&o.wrkThreads, "wrk-threads", 1, "wrk threads (at most the connections)")
	flag.DurationVar(&o.quietWait, "quiet-wait", 0, "before each point, wait up to this long for other processes to leave the CPU idle (0: do not wait)")
	flag.StringVar(&o.out, "out", filepath.Join(root, "bench", "results"), "directory of the markdown copy of the results")
	flag.DurationVar(&o.soak.duration, "duration", 30*time.Minute, "soak: how long the load runs (the verdict needs 10m or more)")
	flag.IntVar(&o.soak.rate, "soak-rate", 500, "soak: HTTP requests/s to berth, token requests included")
	flag.IntVar(&o.soak.conc, "soak-conc", 16, "soak: concurrent clients")
	flag.IntVar(&o.soak.keep, "soak-keep", 300, "soak: pushed manifests kept stored (each push beyond deletes the oldest)")
	flag.Parse()
	o.soak.sample = 10 * time.Second
	o.soak.profiles = []time.Duration{2 * time.Minute, 10 * time.Minute}
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if o.repeat < 1 {
		return fmt.Errorf("-repeat must be at least 1")
	}
	var err error
	if o.only, err = pickList("-only", only, append(slices.Clone(allMeasures), optMeasures...)); err != nil {
		return err
	}
	if o.soak.duration <= 0 || o.soak.rate <= 0 || o.soak.conc <= 0 || o.soak.keep <= 0 {
		return fmt.Errorf("-duration, -soak-rate, -soak-conc and -soak-keep must be positive")
	}
	soak := slices.Contains(o.only, "soak")
	o.only = slices.DeleteFunc(o.only, func(m string) bool { return m == "soak" })
	if len(o.only) == 0 {
		return runSoakOnly(o, root)
	}
	if o.servers, err = pickList("-servers", servers, allServers); err != nil {
		return err
	}
	if !slices.Contains(o.only, "download") {
		o.servers = slices.DeleteFunc(o.servers, func(s string) bool { return s == "fileserver" || s == "berth-enc" || s == "berth-s3pg-redir" })
	}
	if !slices.Contains(o.only, "manifest") {
		o.servers = slices.DeleteFunc(o.servers, func(s string) bool { return s == "memory" })
	}
	if len(o.servers) == 0 {
		return fmt.Errorf("no server to measure")
	}
	p := defaultPlan(o.quick)
	begin := time.Now()

	tmp, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	addCleanup(func() {
		// The measurement may still be writing into tmp when a signal stops the run: retry.
		for range 20 {
			if os.RemoveAll(tmp) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	if err := checkTools(&o, root, tmp); err != nil {
		return err
	}
	env := environment(o)
	fmt.Print(env)
	// PostgreSQL and versitygw start when a server first needs them.
	addCleanup(enginetest.Program())

	ctx := context.Background()
	res := newResults(o, p)
	w, err := prepareWorkload(o, p, tmp)
	if err != nil {
		return err
	}
	var pb *proxyBench
	if slices.Contains(o.only, "proxy") {
		if pb, err = prepareProxy(o, p, res); err != nil {
			return err
		}
	}
	for round := 1; round <= o.repeat; round++ {
		for _, name := range o.servers {
			if !slices.ContainsFunc(o.only, isStandard) {
				break
			}
			title := name
			if o.repeat > 1 {
				title = fmt.Sprintf("%s (round %d of %d)", name, round, o.repeat)
			}
			// A server that fails keeps its numbers so far; the others are still measured.
			if err := measureServer(ctx, o, p, w, tmp, name, title, res); err != nil {
				fmt.Printf("   ERROR: %v\n", err)
				res.errors = append(res.errors, fmt.Sprintf("%s: %v", title, err))
			}
		}
		if pb != nil {
			pb.run(ctx, o, p, tmp, round, res)
		}
	}
	var logins string
	if slices.Contains(o.only, "logins") {
		if logins, err = benchLogins(ctx, o, tmp); err != nil {
			fmt.Printf("   ERROR: %v\n", err)
			res.errors = append(res.errors, fmt.Sprintf("logins: %v", err))
		}
	}
	if slices.Contains(o.only, "gc") {
		gcText, err := benchGC(ctx, o, tmp)
		if err != nil {
			fmt.Printf("   ERROR: %v\n", err)
			res.errors = append(res.errors, fmt.Sprintf("gc: %v", err))
		}
		logins += gcText
	}
	report := res.render() + logins
	fmt.Print("\n" + report)
	fmt.Printf("\ntotal time %s\n", time.Since(begin).Round(time.Second))
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	md := filepath.Join(o.out, begin.Format("20060102-150405")+".md")
	if logins != "" {
		logins = "\n```\n" + logins + "```\n"
	}
	content := "# berth benchmark " + begin.Format(time.RFC3339) + "\n\n```\n" + env + "```\n\n" + res.markdown() + logins +
		fmt.Sprintf("\ntotal time %s\n", time.Since(begin).Round(time.Second))
	if err := os.WriteFile(md, []byte(content), 0o644); err != nil {
		return err
	}
	fmt.Println("markdown copy:", md)
	if len(res.errors) > 0 {
		return fmt.Errorf("%d server(s) could not be measured in full: see ERRORS above", len(res.errors))
	}
	if soak {
		o.only = []string{"soak"}
		return runSoakOnly(o, root)
	}
	return nil
}

// runSoakOnly builds berth (unless -berth names a binary), runs the soak and writes its report,
// with a markdown copy in -out.
func runSoakOnly(o options, root string) error {
	begin := time.Now()
	tmp, err := os.MkdirTemp("", "berth-soak-")
	if err != nil {
		return err
	}
	addCleanup(func() { os.RemoveAll(tmp) })
	o.servers, o.only = []string{"berth"}, nil
	if err := checkTools(&o, root, tmp); err != nil {
		return err
	}
	o.only = []string{"soak"}
	env := environment(o)
	fmt.Print(env)
	text, md, soakErr := runSoak(context.Background(), o, o.soak, tmp)
	if text == "" {
		return soakErr
	}
	fmt.Print("\n" + text)
	fmt.Printf("total time %s\n", time.Since(begin).Round(time.Second))
	path := filepath.Join(o.out, begin.Format("20060102-150405")+"-soak.md")
	content := "# berth soak " + begin.Format(time.RFC3339) + "\n\n```\n" + env + "command   " + strings.Join(os.Args, " ") +
		"\n```\n\n" + md + fmt.Sprintf("total time %s\n", time.Since(begin).Round(time.Second))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return err
	}
	fmt.Println("markdown copy:", path)
	return soakErr
}

// measureServer starts one server, runs every selected measurement on it, reads its peak RSS and
// stops it. Its data directory goes with it.
func measureServer(ctx context.Context, o options, p plan, w *workload, tmp, name, title string, res *results) error {
	fmt.Printf("\n== %s\n", title)
	s, err := startServer(ctx, o, tmp, name, w.dlFile, nil)
	if err != nil {
		return err
	}
	defer s.stop()
	fmt.Printf("   started pid %v on %s\n", s.pids(), s.base)
	// Encryption at rest costs on blob reads, and redirects change only blob reads: downloads only.
	if s.name == "berth-enc" || s.name == "berth-s3pg-redir" {
		o.only = slices.DeleteFunc(slices.Clone(o.only), func(m string) bool { return m != "download" })
	}
	if s.name == "berth-auth" {
		// Authentication's cost shows on the smallest, most frequent request: only manifests.
		if slices.Contains(o.only, "manifest") {
			if err := benchManifests(ctx, o, p, w, s, res); err != nil {
				return err
			}
		}
	} else if (s.isRegistry() || s.name == "memory") && slices.Contains(o.only, "manifest") {
		if err := benchManifests(ctx, o, p, w, s, res); err != nil {
			return err
		}
	}
	if slices.Contains(o.only, "download") && s.name != "berth-auth" && s.name != "memory" {
		if err := benchDownload(ctx, o, p, w, s, res); err != nil {
			return err
		}
	}
	if s.isRegistry() && s.name != "berth-auth" && slices.Contains(o.only, "push") {
		if err := benchPush(ctx, o, p, w, s, res); err != nil {
			return err
		}
	}
	hwm, err := s.peakRSS()
	if err != nil {
		return err
	}
	mib := float64(hwm) / (1 << 20)
	res.rss[name] = res.rss[name].merge(value(mib))
	fmt.Printf("   peak RSS %.1f MiB\n", mib)
	return nil
}

// pickList parses a comma-separated subset of all, keeping the order of all.
func pickList(flagName, list string, all []string) ([]string, error) {
	var got []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(all, f) {
			return nil, fmt.Errorf("%s: unknown %q (want some of %s)", flagName, f, strings.Join(all, ","))
		}
		got = append(got, f)
	}
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return !slices.Contains(got, s) }), nil
}

// repoRoot is the directory holding go.mod, from the working directory up.
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// checkTools finds every binary the run needs, building berth when no binary was given.
func checkTools(o *options, root, tmp string) error {
	need := func(path, what string) (string, error) {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("%s not found at %q (scripts/install-tools.sh --bench installs it): %w", what, path, err)
		}
		return p, nil
	}
	var err error
	if slices.Contains(o.only, "manifest") {
		if o.wrk, err = need(o.wrk, "wrk"); err != nil {
			return err
		}
	}
	if slices.Contains(o.servers, "v3") || slices.Contains(o.servers, "v3-s3") {
		if o.v3, err = need(o.v3, "Distribution v3 (registry)"); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(o.servers, func(s string) bool { return replicasOf(s) > 1 }) {
		if o.haproxy, err = need("haproxy", "HAProxy (apt-get install haproxy)"); err != nil {
			return err
		}
	}
	if slices.Contains(o.servers, "2.8") {
		if o.v28, err = need(o.v28, "Distribution 2.8 (docker-registry)"); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(o.servers, func(s string) bool { return strings.HasPrefix(s, "berth") }) {
		if o.berth == "" {
			o.berth, o.berthBuilt = filepath.Join(tmp, "berth"), root
			fmt.Println("building berth ...")
			cmd := exec.Command("go", "build", "-o", o.berth, "./cmd/berth")
			cmd.Dir = root
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("building berth: %w", err)
			}
		} else if o.berth, err = need(o.berth, "berth"); err != nil {
			return err
		}
	}
	return nil
}

// environment describes the machine and the tools, printed at the top of the output.
func environment(o options) string {
	var b strings.Builder
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "date      %s\n", time.Now().Format(time.RFC3339))
	fmt.Fprintf(&b, "cpu       %s, %d cores\n", cpu, runtime.NumCPU())
	fmt.Fprintf(&b, "memory    %s\n", memTotal())
	fmt.Fprintf(&b, "kernel    %s\n", strings.TrimSpace(string(kernel)))
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "loadavg   %s at start (other processes' CPU is measured at every point too)\n", strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "go        %s (bench and berth build)\n", runtime.Version())
	fmt.Fprintf(&b, "mode      %s, %d round(s); measurements %s; servers %s\n", mode, o.repeat, strings.Join(o.only, ","), strings.Join(o.servers, ","))
	version := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if err != nil && line == "" {
			return err.Error()
		}
		return line
	}
	if slices.ContainsFunc(o.servers, func(s string) bool { return strings.HasPrefix(s, "berth") }) {
		fmt.Fprintf(&b, "berth     %s\n", berthVersion(o.berth, o.berthBuilt))
	}
	// The Go each server was built with: its runtime (GC, scheduler, net/http) is part of what is
	// measured.
	if slices.Contains(o.servers, "v3") || slices.Contains(o.servers, "v3-s3") {
		fmt.Fprintf(&b, "v3        %s, built with %s\n", version(o.v3, "--version"), goVersion(o.v3))
	}
	if slices.Contains(o.servers, "2.8") {
		fmt.Fprintf(&b, "2.8       %s, built with %s\n", version(o.v28, "--version"), goVersion(o.v28))
	}
	if slices.Contains(o.only, "manifest") {
		fmt.Fprintf(&b, "wrk       %s: %s, %d thread(s)\n", o.wrk, version(o.wrk, "--version"), o.wrkThreads)
	}
	return b.String()
}

// berthVersion is the commit a berth binary was built from: from its build info, else (when the
// harness built it, and GOFLAGS has -buildvcs=false) the repository's HEAD.
func berthVersion(bin, builtFrom string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return bin + ": " + err.Error()
	}
	rev, dirty := "unknown commit", ""
	if builtFrom != "" {
		if out, err := exec.Command("git", "-C", builtFrom, "rev-parse", "--short", "HEAD").Output(); err == nil {
			rev = "built from the working tree at HEAD " + strings.TrimSpace(string(out))
		}
	}
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = "commit " + s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = " with uncommitted changes"
		}
	}
	return fmt.Sprintf("%s (%s%s), built with %s", bin, rev, dirty, info.GoVersion)
}

// goVersion is the Go release a binary was built with, from its build info (as go version -m
// reads it).
func goVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown Go (" + err.Error() + ")"
	}
	return info.GoVersion
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(v, &kb)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}
