// Package e2e tests the berth binary over real HTTP with real clients that nobody here wrote
// (crane, oras, regctl, skopeo, the OCI conformance suite). scripts/install-tools.sh installs them
// into .tools/bin; a test whose tool is missing fails, unless BERTH_E2E_SKIP_MISSING=1 is set
// (which scripts/test.sh refuses). With -race, the berth binary is built with -race too.
package e2e

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
)

var (
	// berthBin is built once by TestMain, with -race when the tests run with -race: the server
	// is raced under every test that starts it, and a race it reports fails the test.
	berthBin string
	binDir   string
	repoRoot string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	var err error
	if binDir, err = os.MkdirTemp("", "berth-e2e-bin"); err != nil {
		panic(err)
	}
	berthBin = filepath.Join(binDir, "berth")
	var flags []string
	if raceEnabled {
		flags = []string{"-race"}
	}
	if err := buildBerth(berthBin, flags...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := enginetest.Run(m) // stops the PostgreSQL and S3 servers that TestReplicas started
	os.RemoveAll(binDir)
	os.Exit(code)
}

func buildBerth(out string, flags ...string) error {
	build := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, "./cmd/berth")...)
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building berth %s: %w", strings.Join(flags, " "), err)
	}
	return nil
}

var plainBin struct {
	once sync.Once
	path string
	err  error
}

// plainBerthBin is the berth binary as shipped, without the race detector (which multiplies
// memory and CPU), for the tests that measure the server's resources (peak RSS, say). It is
// built on first use, and only when the tests run with -race: otherwise it is berthBin.
func plainBerthBin(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return berthBin
	}
	plainBin.once.Do(func() {
		p := filepath.Join(binDir, "berth-plain")
		if plainBin.err = buildBerth(p); plainBin.err == nil {
			plainBin.path = p
		}
	})
	if plainBin.err != nil {
		t.Fatal(plainBin.err)
	}
	return plainBin.path
}

// tool returns the path of an outside tool, from .tools/bin or PATH. A missing tool fails the
// test: CI installs them all, and a test that silently skips its client proves nothing.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot, ".tools", "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("BERTH_E2E_SKIP_MISSING") == "1" {
		t.Skipf("%s is not installed (run scripts/install-tools.sh)", name)
	}
	t.Fatalf("%s is not installed: run scripts/install-tools.sh", name)
	return ""
}

// berth is a berth process serving a data directory on a loopback port.
type berth struct {
	t    testing.TB
	Addr string // host:port
	Data string
	cmd  *exec.Cmd
	log  *syncBuffer
	// secure: authentication on (no --dev); ready means /v2/ answers 401.
	secure bool
	// bin is the binary to run; empty: berthBin. A test that measures the server's resources
	// sets plainBerthBin(t) before the first start.
	bin string
	// tee, when set, gets a copy of the process's output (the replicas' logs, together).
	tee io.Writer
	// config, when set, is a configuration file that serve and the account commands are given
	// (the replicas' backends: TestReplicas).
	config string
}

// startBerth starts berth in open mode (--dev) on a free loopback port with a fresh data
// directory.
func startBerth(t testing.TB, args ...string) *berth {
	t.Helper()
	b := &berth{t: t, Data: t.TempDir()}
	b.start(args...)
	t.Cleanup(b.Stop)
	return b
}

// startSecureBerth starts berth as it runs by default: authentication on, an admin created on
// first start.
func startSecureBerth(t testing.TB, args ...string) *berth {
	t.Helper()
	b := &berth{t: t, Data: t.TempDir(), secure: true}
	b.start(args...)
	t.Cleanup(b.Stop)
	return b
}

// AdminPassword is the password berth generated for admin on first start.
func (b *berth) AdminPassword() string {
	b.t.Helper()
	p, err := os.ReadFile(filepath.Join(b.Data, "admin-password"))
	if err != nil {
		b.t.Fatal(err)
	}
	return strings.TrimSpace(string(p))
}

// Admin runs a berth account command (user, robot, grant, revoke, keys) on b's data directory
// and returns its standard output.
func (b *berth) Admin(args ...string) string {
	b.t.Helper()
	var stdout, stderr bytes.Buffer
	args = append(args, "--data", b.Data)
	if b.config != "" {
		args = append(args, "--config", b.config)
	}
	cmd := exec.Command(berthBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func (b *berth) start(args ...string) {
	b.t.Helper()
	if b.Addr == "" {
		b.Addr = freeAddr(b.t)
	}
	b.log = &syncBuffer{}
	base := []string{"serve", "--addr", b.Addr, "--data", b.Data}
	if b.config != "" {
		base = append(base, "--config", b.config)
	}
	if !b.secure {
		base = append(base, "--dev")
	}
	bin := b.bin
	if bin == "" {
		bin = berthBin
	}
	b.cmd = exec.Command(bin, append(base, args...)...)
	var out io.Writer = b.log
	if b.tee != nil {
		out = io.MultiWriter(b.log, b.tee)
	}
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start berth: %v", err)
	}
	// Generous: a race-built berth starting beside a whole suite of others (replicas migrating a
	// fresh database, hashing the first admin's password) has taken more than 15 s.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + b.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || b.secure && resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.t.Fatalf("berth did not become ready; log:\n%s", b.log.String())
}

// Restart stops berth gracefully and starts it again on the same address and data.
func (b *berth) Restart(args ...string) {
	b.t.Helper()
	b.Stop()
	b.start(args...)
}

// Kill stops berth with SIGKILL, as a crash would.
func (b *berth) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	b.cmd.Wait()
	b.cmd = nil
	b.checkRaces()
}

// Stop stops berth with SIGTERM and waits for it.
func (b *berth) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
	b.checkRaces()
}

// raceReport is how the race detector starts each report on the server's standard error.
const raceReport = "WARNING: DATA RACE"

// checkRaces fails the test when the process that just ended reported a data race.
func (b *berth) checkRaces() { failOnRace(b.t, b.log.String()) }

// failOnRace fails the test when output, what a race-built berth printed, holds a data race
// report: such a server goes on running after a race, so only its output tells. Tests that run
// berthBin themselves pass its output here.
func failOnRace(t testing.TB, output string) {
	t.Helper()
	i := strings.Index(output, raceReport)
	if i < 0 {
		return
	}
	report := output[i:]
	if len(report) > 16<<10 {
		report = report[:16<<10] + "\n[...]"
	}
	t.Errorf("berth (built with -race) reported %d data race(s); the first:\n%s", strings.Count(output, raceReport), report)
}

// URL is the registry's base URL.
func (b *berth) URL() string { return "http://" + b.Addr }

// Log is what berth has printed so far.
func (b *berth) Log() string { return b.log.String() }

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runEnv runs a command in dir (also its HOME, so that no client reads the user's configuration)
// with extra environment variables, and returns its combined output.
func runEnv(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+filepath.Join(dir, ".docker"))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBerthBinaries: under -race the server is raced too (berthBin is built with -race), and
// plainBerthBin is the binary as shipped; without -race both are the plain build.
func TestBerthBinaries(t *testing.T) {
	race := func(bin string) bool {
		t.Helper()
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range info.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
		return false
	}
	if got := race(berthBin); got != raceEnabled {
		t.Errorf("berthBin built with -race: %v; the tests run with -race: %v", got, raceEnabled)
	}
	plain := plainBerthBin(t)
	if race(plain) {
		t.Errorf("plainBerthBin %s is built with -race", plain)
	}
	if raceEnabled == (plain == berthBin) {
		t.Errorf("plainBerthBin %s, berthBin %s: want the same binary exactly when the tests run without -race", plain, berthBin)
	}
}
