//go:build race

package e2e

// raceEnabled: the tests run with -race, so TestMain builds the berth binary with -race too, and
// the server itself is raced under the crash, concurrency and real-client tests.
const raceEnabled = true
