package enginetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBin is where Debian's postgresql-15 package puts initdb and postgres.
const PostgresBin = "/usr/lib/postgresql/15/bin"

var pg struct {
	once  sync.Once
	skip  string // why tests that need PostgreSQL skip; "" when it is installed
	err   error  // why the server did not start
	base  url.URL
	admin struct {
		sync.Mutex
		conn *pgx.Conn
	}
	dbs atomic.Int64
	dir string // the cluster's directory
	pid int    // the server's process
}

// Postgres returns the DSN (a postgres:// URL) of a new, empty database on a PostgreSQL 15 server
// that the test binary starts the first time it is asked, and drops the database when t ends.
// Without PostgreSQL installed, t skips. The server listens on 127.0.0.1 with a password, runs
// without fsync, and its databases' default collation is ICU's en-US, as on many production
// servers, so that a query that needs byte order and does not say so fails in the tests.
func Postgres(t testing.TB) string {
	t.Helper()
	dsn, drop, skip, err := newDatabase()
	if skip != "" {
		t.Skip(skip)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("enginetest: %v", err)
		}
	})
	return dsn
}

// Database is Postgres for a program (see Program): the DSN of a new, empty database, and the
// function that drops it. PostgreSQL not installed is an error, naming how to install it.
func Database() (dsn string, drop func() error, err error) {
	dsn, drop, skip, err := newDatabase()
	if skip != "" {
		err = errors.New(skip)
	}
	return dsn, drop, err
}

func newDatabase() (dsn string, drop func() error, skip string, err error) {
	if !inMain() {
		return "", nil, "", errors.New("enginetest: call enginetest.Main(m) from TestMain (or Program from a program), so that the PostgreSQL server is stopped when the tests end")
	}
	pg.once.Do(func() { pg.skip, pg.err = startPostgres() })
	if pg.skip != "" {
		return "", nil, pg.skip, nil
	}
	if pg.err != nil {
		return "", nil, "", fmt.Errorf("enginetest: PostgreSQL: %v", pg.err)
	}
	name := fmt.Sprintf("berth_test_%d", pg.dbs.Add(1))
	if err := adminExec("CREATE DATABASE " + name + " TEMPLATE template0"); err != nil {
		return "", nil, "", fmt.Errorf("enginetest: %v", err)
	}
	// FORCE: connections a test left open do not keep its database.
	drop = func() error { return adminExec("DROP DATABASE " + name + " WITH (FORCE)") }
	u := pg.base
	u.Path = "/" + name
	return u.String(), drop, "", nil
}

func adminExec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg.admin.Lock()
	defer pg.admin.Unlock()
	if _, err := pg.admin.conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// startPostgres creates a cluster in a new temporary directory and starts a server on it. It
// returns a reason to skip when PostgreSQL is not installed, an error when it does not start.
func startPostgres() (skip string, err error) {
	if _, err := os.Stat(filepath.Join(PostgresBin, "postgres")); err != nil {
		return "PostgreSQL 15 is not installed (" + err.Error() + "): apt-get install postgresql-15, " +
			"or run scripts/install-tools.sh as root", nil
	}
	cred, err := postgresUser()
	if err != nil {
		return "", err
	}
	root, err := tempRoot(cred != nil)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(root, "berth-enginetest-pg-")
	if err != nil {
		return "", err
	}
	pg.dir = dir
	atExit(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
	}
	password := make([]byte, 16)
	rand.Read(password)
	pw := hex.EncodeToString(password)
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
	}
	data := filepath.Join(dir, "data")
	var out bytes.Buffer
	initdb := command(cred, "initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "-A", "scram-sha-256",
		"-E", "UTF8", "--locale", "C", "--locale-provider", "icu", "--icu-locale", "en-US", "--no-sync", "--no-instructions")
	initdb.Stdout, initdb.Stderr = &out, &out
	p, err := startLocked(initdb)
	if err == nil {
		<-p.done
		err = p.err
	}
	if err != nil {
		return "", fmt.Errorf("initdb: %v\n%s", err, out.Bytes())
	}
	os.Remove(pwfile)

	// A free port may be taken between asking for it and postgres binding it: try a few.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		pg.base = url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pw),
			Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), RawQuery: "sslmode=disable"}
		err = startServer(cred, dir, data, port)
		if err == nil || attempt == 2 {
			return "", err
		}
	}
}

// startServer starts postgres on port and waits until it takes connections.
func startServer(cred *syscall.Credential, dir, data string, port int) error {
	logPath := filepath.Join(dir, fmt.Sprintf("postgres-%d.log", port))
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := command(cred, "postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = log, log
	p, err := startLocked(cmd)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	logTail := func() string {
		b, _ := os.ReadFile(logPath)
		if len(b) > 4096 {
			b = b[len(b)-4096:]
		}
		return string(b)
	}
	stop := func() {
		// SIGQUIT: immediate shutdown; the databases are thrown away anyway.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		u := pg.base
		u.Path = "/postgres"
		conn, err := pgx.Connect(ctx, u.String())
		cancel()
		if err == nil {
			pg.admin.conn, pg.pid = conn, cmd.Process.Pid
			atExit(func() {
				conn.Close(context.Background())
				stop()
			})
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited (%v):\n%s", p.err, logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("postgres did not take connections within 30s (%v):\n%s", err, logTail())
		}
	}
}

// postgresUser returns the credential of the postgres OS user when the tests run as root, because
// initdb and postgres refuse to run as root; nil otherwise (they run as the test's user).
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the user postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// tempRoot returns the directory to make the cluster's directory in: the temporary directory,
// unless the server runs as another user who could not reach it (TMPDIR under /root, say); then
// /tmp.
func tempRoot(otherUser bool) (string, error) {
	dir := os.TempDir()
	if !otherUser || traversable(dir) {
		return dir, nil
	}
	if traversable("/tmp") {
		return "/tmp", nil
	}
	return "", fmt.Errorf("neither %s nor /tmp can be reached by the user postgres", dir)
}

// traversable reports whether every directory from / down to dir lets others through.
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// command prepares one of PostgreSQL's programs, run as cred's user when cred is set. It is
// started directly, not through su or runuser, so that the death signal reaches it.
func command(cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(PostgresBin, name), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	cmd.Dir = "/"
	// Pdeathsig: the kernel sends SIGQUIT (PostgreSQL's immediate shutdown) if the test binary
	// dies before it stops the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	return cmd
}

// proc is a child process started by startLocked.
type proc struct {
	done chan struct{} // closed when the process has exited
	err  error         // Wait's error, once done is closed
}

// startLocked starts cmd from a goroutine that keeps its OS thread until cmd has exited: the
// kernel sends the death signal when the thread that started the child ends, not the process, and
// Go may end a thread that a goroutine had locked (go.dev/issue/27505).
func startLocked(cmd *exec.Cmd) (*proc, error) {
	p := &proc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, once the child is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return p, nil
}
