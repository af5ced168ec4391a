//go:build race

package proxy_test

// raceEnabled: the race detector slows hashing and copying by an order of magnitude, so the
// tests skip their timing comparisons (the counts still hold).
const raceEnabled = true
