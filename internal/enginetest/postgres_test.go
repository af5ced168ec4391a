package enginetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Each test gets a database of its own, empty, which is dropped when the test ends.
func TestPostgres(t *testing.T) {
	ctx := context.Background()
	var first string
	t.Run("a", func(t *testing.T) {
		first = Postgres(t)
		conn := connect(t, first)
		if _, err := conn.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("b", func(t *testing.T) {
		dsn := Postgres(t)
		if dsn == first {
			t.Fatalf("the same DSN twice: %s", dsn)
		}
		conn := connect(t, dsn)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("a new database has %d tables (%v), want none", n, err)
		}
		// The first test's database was dropped when it ended.
		var name string
		if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		gone := strings.TrimPrefix(first[strings.LastIndex(first, "/"):], "/")
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, gone).Scan(&exists); err != nil || exists {
			t.Errorf("database %s of an ended test exists: %v, %v", gone, exists, err)
		}
		// What the suites rely on: PostgreSQL 15, UTF-8, and a default collation that is not
		// byte order.
		var version, encoding string
		if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num'), pg_encoding_to_char(encoding)
			FROM pg_database WHERE datname = $1`, name).Scan(&version, &encoding); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(version, "15") || encoding != "UTF8" {
			t.Errorf("server version %s, encoding %s; want 15xxxx, UTF8", version, encoding)
		}
		var sorted bool
		if err := conn.QueryRow(ctx, `SELECT 'a' < 'B'`).Scan(&sorted); err != nil || !sorted {
			t.Errorf("the default collation sorts bytes ('a' < 'B': %v, %v): want a linguistic one", sorted, err)
		}
	})
}

// The server does not outlive a test binary that is killed (SIGKILL: no deferred function runs).
func TestServerDiesWithTestBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(exe, "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=postgres")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the child said %q: %v", line, err)
	}
	var (
		pid int
		dir string
	)
	if _, err := fmt.Sscanf(line, "started %d %s", &pid, &dir); err != nil {
		t.Fatalf("the child said %q: %v", line, err)
	}
	// Killed, the child removes nothing: this test does.
	defer os.RemoveAll(dir)
	if !alive(pid) {
		t.Fatalf("the server (%d) is not running while the child runs", pid)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the server (%d) still runs 20s after its test binary was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether process pid runs (a zombie, which a container's init may leave unreaped,
// does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
