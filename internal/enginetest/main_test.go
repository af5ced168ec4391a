package enginetest

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// childEnv makes the test binary a child of TestServerDiesWithTestBinary: it starts the server,
// prints its process ID and directory, and waits to be killed.
const childEnv = "BERTH_ENGINETEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "postgres" {
		engines.running = true
		skip, err := startPostgres()
		if skip != "" || err != nil {
			fmt.Println("error", skip, err)
			os.Exit(1)
		}
		fmt.Println("started", pg.pid, pg.dir)
		time.Sleep(time.Hour)
	}
	Main(m)
}
