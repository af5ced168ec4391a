package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// runBerth runs the berth command line in-process with stdin, and returns what it printed.
func runBerth(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := rootCmd()
	var o, e bytes.Buffer
	root.SetOut(&o)
	root.SetErr(&e)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return o.String(), e.String(), err
}

func startHub(t *testing.T, opts hubemu.Options) *hubemu.Hub {
	t.Helper()
	hub, err := hubemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return hub
}

// field returns the value of a "name  value" line of the ratelimit output.
func field(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", name, out)
	}
	return m[1]
}

func TestRatelimit(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 100, AuthenticatedLimit: 200, Window: time.Hour,
		Users: map[string]string{"alice": "s3cret"}})
	hub.SetQuotaRemaining("127.0.0.1", 76)
	hub.SetQuotaRemaining("alice", 150)

	for _, c := range []struct {
		name, stdin, env string
		args             []string
		limit, remaining string
		source           string
	}{
		{name: "anonymous", limit: "100", remaining: "76", source: "127.0.0.1"},
		{name: "password on stdin", args: []string{"--username", "alice", "--password-stdin"}, stdin: "s3cret\n",
			limit: "200", remaining: "150", source: "alice"},
		{name: "password in the environment", args: []string{"--username", "alice"}, env: "s3cret",
			limit: "200", remaining: "150", source: "alice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(ratelimitPasswordEnv, c.env)
			hub.ResetCounts()
			out, errOut, err := runBerth(t, c.stdin, append([]string{"ratelimit", "--registry", hub.RegistryURL()}, c.args...)...)
			if err != nil {
				t.Fatalf("ratelimit: %v\n%s%s", err, out, errOut)
			}
			for name, want := range map[string]string{"limit": c.limit, "remaining": c.remaining, "window": "1h", "source": c.source} {
				if got := field(t, out, name); got != want {
					t.Errorf("%s = %q, want %q; output:\n%s", name, got, want, out)
				}
			}
			n := hub.Counts()
			if n.Pulls != 0 || n.ManifestGet != 0 {
				t.Errorf("the check spent quota: %d pulls, %d manifest GETs", n.Pulls, n.ManifestGet)
			}
			if n.ManifestHead != 1 || n.Repos["ratelimitpreview/test"].ManifestHead != 1 {
				t.Errorf("want one manifest HEAD of ratelimitpreview/test, got counts %+v", n)
			}
		})
	}
	if got := hub.QuotaRemaining("127.0.0.1"); got != 76 {
		t.Errorf("anonymous quota is %d after the checks, want 76", got)
	}
	if got := hub.QuotaRemaining("alice"); got != 150 {
		t.Errorf("alice's quota is %d after the checks, want 150", got)
	}

	t.Run("wrong password", func(t *testing.T) {
		out, _, err := runBerth(t, "nope\n", "ratelimit", "--registry", hub.RegistryURL(), "--username", "alice", "--password-stdin")
		if err == nil || !strings.Contains(err.Error(), "auth") {
			t.Fatalf("err = %v, want an auth error; output:\n%s", err, out)
		}
	})
}

func TestRatelimitNoLimit(t *testing.T) {
	hub := startHub(t, hubemu.Options{}) // unlimited: no rate-limit headers
	out, _, err := runBerth(t, "", "ratelimit", "--registry", hub.RegistryURL())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "no rate limit applies") {
		t.Errorf("output does not say that no limit applies:\n%s", out)
	}
	if n := hub.Counts(); n.Pulls != 0 || n.ManifestGet != 0 {
		t.Errorf("the check spent quota: %+v", n)
	}
}

// Once the quota is spent, Docker Hub has answered even the HEAD with 429: the numbers still show,
// and the command fails.
func TestRatelimitExhausted(t *testing.T) {
	hub := startHub(t, hubemu.Options{Limit: 100, HeadLimitedAtZero: true, RealmOnRegistry: true})
	hub.ExhaustQuota()
	out, _, err := runBerth(t, "", "ratelimit", "--registry", hub.RegistryURL())
	if err == nil || !strings.Contains(err.Error(), "rate_limited") {
		t.Fatalf("err = %v, want a rate_limited error", err)
	}
	if got := field(t, out, "remaining"); got != "0" {
		t.Errorf("remaining = %q, want 0; output:\n%s", got, out)
	}
	if got := field(t, out, "window"); got != "6h" {
		t.Errorf("window = %q, want 6h", got)
	}
	if n := hub.Counts(); n.ManifestGet != 0 {
		t.Errorf("the check sent %d manifest GETs", n.ManifestGet)
	}
}

func TestRatelimitPassword(t *testing.T) {
	t.Setenv(ratelimitPasswordEnv, "from-env")
	for _, c := range []struct {
		user, stdin string
		fromStdin   bool
		want, err   string
	}{
		{want: ""}, // anonymous ignores the environment
		{fromStdin: true, err: "needs --username"},
		{user: "u", want: "from-env"},
		{user: "u", fromStdin: true, stdin: "pw\r\nignored\n", want: "pw"},
		{user: "u", fromStdin: true, stdin: "\n", err: "empty"},
	} {
		got, err := ratelimitPassword(strings.NewReader(c.stdin), c.user, c.fromStdin)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: err = %v, want %q", c, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%+v: got %q, %v; want %q", c, got, err, c.want)
		}
	}
	t.Setenv(ratelimitPasswordEnv, "")
	if _, err := ratelimitPassword(strings.NewReader(""), "u", false); err == nil || !strings.Contains(err.Error(), ratelimitPasswordEnv) {
		t.Errorf("a username without a password: err = %v", err)
	}
}
