package config

import (
	"strings"
	"testing"
	"time"
)

func TestEffectiveRules(t *testing.T) {
	off := false
	c, err := Load(writeFile(t, `
proxy:
  rules:
    - prefix: docker-hub
      upstream: http://127.0.0.1:9999
      revalidate: always
      quota_reserve: 3
    - prefix: internal/mirror
      upstream: https://registry.example.com
      revalidate: ttl:24h
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	rules := c.Proxy.EffectiveRules()
	byPrefix := map[string]Rule{}
	for _, r := range rules {
		byPrefix[r.Prefix] = r
	}
	hub := byPrefix["docker-hub"]
	if hub.Upstream != "http://127.0.0.1:9999" || !hub.DockerHub || hub.Revalidate != "always" || hub.QuotaReserve != 3 ||
		hub.MaxStaleness != 30*24*time.Hour || len(hub.Hosts) == 0 {
		t.Errorf("docker-hub override = %+v", hub)
	}
	if m := byPrefix["internal/mirror"]; m.Upstream != "https://registry.example.com" || m.Revalidate != "ttl:24h" {
		t.Errorf("added rule = %+v", m)
	}
	for _, p := range []string{"ghcr", "quay", "k8s", "ecr-public"} {
		if byPrefix[p].Upstream == "" {
			t.Errorf("default rule %s missing", p)
		}
	}
	if got := (Proxy{Defaults: &off}).EffectiveRules(); len(got) != 0 {
		t.Errorf("defaults: false still gives %d rules", len(got))
	}
}

func TestProxyValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		rule Rule
		want string
	}{
		{"bad upstream", Rule{Prefix: "x", Upstream: "ftp://x"}, "upstream"},
		{"bad policy", Rule{Prefix: "x", Upstream: "https://x", Revalidate: "sometimes"}, "revalidate"},
		{"zero interval", Rule{Prefix: "x", Upstream: "https://x", Revalidate: "interval:0s"}, "revalidate"},
		{"bad prefix", Rule{Prefix: "/x/", Upstream: "https://x"}, "prefix"},
		{"two secrets", Rule{Prefix: "x", Upstream: "https://x", Password: "a", PasswordEnv: "B"}, "only one"},
		{"warm without a tag", Rule{Prefix: "x", Upstream: "https://x", Warm: []string{"library/nginx"}}, `warm "library/nginx"`},
		{"warm bad name", Rule{Prefix: "x", Upstream: "https://x", Warm: []string{"Nginx:1"}}, `warm "Nginx:1"`},
		{"pin without a tag", Rule{Prefix: "x", Upstream: "https://x", Pin: []string{"nginx"}}, `pin "nginx"`},
		{"negative bound", Rule{Prefix: "x", Upstream: "https://x", MaxBytes: -1}, "max_bytes and unused_for"},
		{"warm too often", Rule{Prefix: "x", Upstream: "https://x", Warm: []string{"nginx:1"}, WarmEvery: time.Second}, "warm_every 1s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Default()
			cfg.Proxy.Rules = []Rule{c.rule}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error about %q", err, c.want)
			}
		})
	}
}

func TestParseRevalidate(t *testing.T) {
	for s, want := range map[string]time.Duration{"always": 0, "interval:5m": 5 * time.Minute, "ttl:24h": 24 * time.Hour} {
		if got, err := ParseRevalidate(s); err != nil || got != want {
			t.Errorf("ParseRevalidate(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}

func TestRuleSecret(t *testing.T) {
	t.Setenv("BERTH_TEST_SECRET", "from-env")
	file := writeFile(t, "from-file\n")
	for _, c := range []struct {
		rule Rule
		want string
	}{
		{Rule{Password: "inline"}, "inline"},
		{Rule{PasswordFile: file}, "from-file"},
		{Rule{PasswordEnv: "BERTH_TEST_SECRET"}, "from-env"},
	} {
		if got, err := c.rule.Secret(); err != nil || got != c.want {
			t.Errorf("Secret(%+v) = %q, %v; want %q", c.rule, got, err, c.want)
		}
	}
	if _, err := (Rule{PasswordEnv: "BERTH_TEST_UNSET_VARIABLE"}).Secret(); err == nil {
		t.Error("Secret with an unset variable: no error")
	}
}

func TestTLSValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		tls  TLS
		want string
	}{
		{"cert without key", TLS{Cert: "a.pem"}, "go together"},
		{"key without cert", TLS{Key: "a.key"}, "go together"},
		{"both ways", TLS{Cert: "a.pem", Key: "a.key", SelfSigned: true}, "exclude"},
	} {
		cfg := Default()
		cfg.TLS = c.tls
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want an error about %q", c.name, err, c.want)
		}
	}
	for _, ok := range []TLS{{}, {SelfSigned: true}, {Cert: "a.pem", Key: "a.key"}} {
		cfg := Default()
		cfg.TLS = ok
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
}
