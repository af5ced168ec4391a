package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// benchLogins measures logins on berth with authentication on (berth only: what it shows is
// whether berth holds its own promises, README "Abuse resistance"):
//
//   - the time a wrong secret takes, for a user, a robot and a name nobody has, with a
//     password-shaped and a robot-shaped secret: each shape must cost the same whatever the name
//     is (target: medians within 15% of each other), or timing tells robots, users and unknown
//     names apart;
//   - a flood of 500 wrong logins at once from 50 addresses, with a user and a robot logging in
//     from elsewhere during it: berth's peak RSS (target under 150 MiB) and how long their logins
//     took (target under 5 s).
//
// Every attempt comes from an address of its own in 127.0.0.0/8, so that no guessing budget is
// spent by the measurement itself.
func benchLogins(ctx context.Context, o options, tmp string) (string, error) {
	fmt.Printf("\n== logins (berth with authentication on)\n")
	data := filepath.Join(tmp, "srv-logins", "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	s := &server{name: "berth-auth", base: fmt.Sprintf("http://127.0.0.1:%d", port), dir: filepath.Dir(data), done: make(chan struct{})}
	s.log = filepath.Join(s.dir, "server.log")
	logf, err := os.Create(s.log)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	s.cmd = exec.Command(o.berth, "serve", "--addr", strings.TrimPrefix(s.base, "http://"), "--data", data, "--log-level", "error")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := startTracked(s.cmd); err != nil {
		return "", err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	defer s.stop()
	if err := s.waitReady(ctx); err != nil {
		return "", err
	}
	admin := func(args ...string) (string, error) {
		out, err := exec.Command(o.berth, append(args, "--data", data)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	userPass, err := admin("user", "add", "alice")
	if err != nil {
		return "", fmt.Errorf("user add: %w", err)
	}
	robotSecret, err := admin("robot", "add", "ci")
	if err != nil {
		return "", fmt.Errorf("robot add: %w", err)
	}
	// Accounts that log in only during the flood (a login verified before is remembered).
	floodPass, err := admin("user", "add", "bob")
	if err != nil {
		return "", fmt.Errorf("user add: %w", err)
	}
	floodSecret, err := admin("robot", "add", "cd")
	if err != nil {
		return "", fmt.Errorf("robot add: %w", err)
	}
	wrongRobot := "berth_rbt_" + strings.Repeat("A", 43)

	next := 0
	addr := func() string { // a fresh loopback address for each attempt
		next++
		return fmt.Sprintf("127.%d.%d.%d", 100+next>>16, next>>8&255, next&255)
	}
	login := func(from, user, pass string) (int, time.Duration, error) {
		c := loopbackClient(from, time.Minute)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/token?service=berth", nil)
		req.SetBasicAuth(user, pass)
		start := time.Now()
		resp, err := c.Do(req)
		took := time.Since(start)
		if err != nil {
			return 0, took, err
		}
		resp.Body.Close()
		return resp.StatusCode, took, nil
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Logins (berth with authentication on; %d attempts each, every one from a fresh address)\n\n", loginSamples)
	fmt.Fprintf(&b, "%-28s %10s %10s %10s\n", "wrong secret", "user", "robot", "unknown")
	verdict := "PASS"
	for _, shape := range []struct{ name, secret string }{{"password-shaped", "not the password"}, {"robot-shaped", wrongRobot}} {
		med := map[string]time.Duration{}
		samples := map[string][]time.Duration{}
		// In turns, so that a drift of the machine's speed is shared by all three.
		for range loginSamples {
			for _, who := range []string{"alice", "ci", "nobody"} {
				code, took, err := login(addr(), who, shape.secret)
				if err != nil || code != http.StatusUnauthorized {
					return "", fmt.Errorf("wrong secret for %s: %d %v", who, code, err)
				}
				samples[who] = append(samples[who], took)
			}
		}
		for who, ts := range samples {
			slices.Sort(ts)
			med[who] = ts[len(ts)/2]
		}
		lo := min(med["alice"], med["ci"], med["nobody"])
		hi := max(med["alice"], med["ci"], med["nobody"])
		ok := float64(hi) <= 1.15*float64(lo)
		if !ok {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%-28s %10s %10s %10s   spread %.0f%% %s\n", shape.name+" (median)", round(med["alice"]), round(med["ci"]), round(med["nobody"]),
			100*(float64(hi)/float64(lo)-1), passFail(ok))
	}
	for _, right := range []struct{ who, pass string }{{"alice", userPass}, {"ci", robotSecret}} {
		_, took, _ := login(addr(), right.who, right.pass)
		fmt.Fprintf(&b, "%-28s %10s\n", "right secret, "+right.who, round(took))
	}

	// The flood.
	before, _ := s.peakRSS()
	const addrs, each = 50, 10
	var wg sync.WaitGroup
	start := make(chan struct{})
	for a := range addrs {
		c := loopbackClient(addr(), 5*time.Minute)
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/token?service=berth", nil)
				req.SetBasicAuth(fmt.Sprintf("flood-%d-%d", a, i), "wrong password")
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
		}
	}
	floodStart := time.Now()
	close(start)
	time.Sleep(300 * time.Millisecond)
	_, userTook, _ := login(addr(), "bob", floodPass)
	_, robotTook, _ := login(addr(), "cd", floodSecret)
	wg.Wait()
	floodTook := time.Since(floodStart)
	peak, err := s.peakRSS()
	if err != nil {
		return "", err
	}
	okRSS := peak < 150<<20
	okLogin := userTook < 5*time.Second && robotTook < 5*time.Second
	if !okRSS || !okLogin {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "\nflood of %d wrong logins from %d addresses: done in %s\n", addrs*each, addrs, round(floodTook))
	fmt.Fprintf(&b, "  peak RSS %.0f MiB (%.0f MiB before the flood)   target < 150 MiB %s\n", float64(peak)/(1<<20), float64(before)/(1<<20), passFail(okRSS))
	fmt.Fprintf(&b, "  during it: user login %s, robot login %s   target < 5s %s\n", round(userTook), round(robotTook), passFail(okLogin))
	fmt.Fprintf(&b, "logins: %s\n", verdict)
	fmt.Print(b.String())
	return b.String(), nil
}

const loginSamples = 30

func round(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// loopbackClient is an HTTP client whose connections come from ip (any address of 127.0.0.0/8
// is the loopback interface).
func loopbackClient(ip string, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}
