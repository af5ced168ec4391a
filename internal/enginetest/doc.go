// Package enginetest runs the outside engines that backends' tests need (a PostgreSQL server, an
// S3-compatible server): each is started once per test binary, when a test first asks for
// it, and each test gets a fresh, empty place of its own on it (a database, say), removed when the
// test ends. An engine that is not installed makes the tests that need it skip, naming the command
// that installs it; scripts/install-tools.sh installs every engine, so that CI runs every test.
//
// A package whose tests use enginetest calls Main from its TestMain, so that the engines are
// stopped and their files removed when the tests end:
//
//	func TestMain(m *testing.M) { enginetest.Main(m) }
//
// Engines run as child processes that the kernel stops when the test binary dies (Pdeathsig), so
// that not even a test binary killed by a timeout leaves a server behind.
package enginetest

import (
	"os"
	"slices"
	"sync"
	"testing"
)

var engines struct {
	sync.Mutex
	running bool
	stops   []func() // run in reverse order when Main ends
}

// Main runs the tests of m, stops every engine they started and exits with m's status. Call it
// from TestMain; the functions that start engines fail a test of a binary that does not.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that has more to do after the tests: it returns m's status instead
// of exiting.
func Run(m *testing.M) int {
	stop := Program()
	defer stop()
	return m.Run()
}

// Program lets a program that is not a test binary (the benchmark) start engines as tests do,
// through Database and Bucket. It returns the function that stops every engine started since,
// which the program calls before it exits (the engines die with it anyway: Pdeathsig).
func Program() (stop func()) {
	engines.Lock()
	engines.running = true
	engines.Unlock()
	return func() {
		engines.Lock()
		stops := engines.stops
		engines.stops, engines.running = nil, false
		engines.Unlock()
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}
}

// inMain reports whether Main is running the tests.
func inMain() bool {
	engines.Lock()
	defer engines.Unlock()
	return engines.running
}

// atExit registers stop to be run when Main ends.
func atExit(stop func()) {
	engines.Lock()
	defer engines.Unlock()
	engines.stops = append(engines.stops, stop)
}

// Pids are the process IDs of the engines running: PostgreSQL's postmaster (its backends are its
// children) and versitygw, for a program that measures the CPU they use.
func Pids() []int {
	var pids []int
	if pg.pid != 0 {
		pids = append(pids, pg.pid)
	}
	if versity.cmd != nil && versity.cmd.Process != nil {
		pids = append(pids, versity.cmd.Process.Pid)
	}
	return pids
}
