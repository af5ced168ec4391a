package main

import (
	"strings"
	"testing"
	"time"
)

// TestSoakVerdict: the soak's verdict follows the per-minute means of RSS: level memory passes,
// memory that climbs by more than 10% after minute 5 fails, and so does a failed workflow or a
// load short of its target, whatever the memory did.
func TestSoakVerdict(t *testing.T) {
	sp := soakPlan{duration: 12 * time.Minute, rate: 100, conc: 1, keep: 1, sample: 10 * time.Second}
	// samples makes 10 s samples for 12 minutes: RSS at a time, 100 requests/s, errs failures.
	samples := func(rss func(at time.Duration) float64, errs int64) []soakSample {
		var out []soakSample
		for at := time.Duration(0); at <= sp.duration; at += sp.sample {
			out = append(out, soakSample{at: at, rss: int64(rss(at) * (1 << 20)), goInUse: 20 << 20,
				requests: int64(at.Seconds() * 100), errs: errs})
		}
		return out
	}
	flat := func(time.Duration) float64 { return 40 }
	sawtooth := func(at time.Duration) float64 { // +-1 MiB every 2 minutes
		if int(at/time.Minute)%2 == 0 {
			return 39
		}
		return 41
	}
	climb := func(at time.Duration) float64 { return 40 + 1.5*at.Minutes() } // +1.5 MiB a minute
	for _, c := range []struct {
		name    string
		samples []soakSample
		rate    int
		pass    bool
		missed  string
	}{
		{"flat", samples(flat, 0), 100, true, ""},
		{"within 10%", samples(sawtooth, 0), 100, true, ""},
		{"climbing", samples(climb, 0), 100, false, "flat RSS"},
		{"failed workflows", samples(flat, 3), 100, false, "no failed workflow"},
		{"load short", samples(flat, 0), 200, false, "load at least 90%"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp := sp
			sp.rate = c.rate
			res := soakReport(sp, &soakLoad{}, c.samples, nil)
			if (res.err == nil) != c.pass {
				t.Fatalf("verdict error %v, want pass %v\n%s", res.err, c.pass, res.text())
			}
			if c.missed != "" && !strings.Contains(res.err.Error(), c.missed) {
				t.Errorf("verdict error %q does not name %q", res.err, c.missed)
			}
			if !strings.Contains(res.text(), "\n12 ") {
				t.Errorf("no row for minute 12:\n%s", res.text())
			}
		})
	}
}
