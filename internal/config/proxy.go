package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/berth/berth/internal/oci"
)

// Proxy configures the pull-through cache: which repository prefixes mirror which upstream.
type Proxy struct {
	// Defaults keeps the built-in rules (docker-hub, ghcr, quay, k8s, ecr-public); a rule in
	// Rules with the same prefix overrides the fields it sets. Default true.
	Defaults *bool `yaml:"defaults"`
	// Rules are added to (or override) the built-in rules.
	Rules []Rule `yaml:"rules"`
	// Mirror names the rule (e.g. "docker-hub") that serves Docker Engine "registry-mirrors"
	// requests: pulls at the root (/v2/library/nginx/...) of repositories that do not exist in
	// berth. Empty: off.
	Mirror string `yaml:"mirror"`
	// MaxFillSize bounds, in bytes, a blob download that neither a manifest's descriptor nor the
	// upstream's Content-Length sizes (a blob asked for by digest only, sent chunked). Default
	// 16 GiB.
	MaxFillSize int64 `yaml:"max_fill_size"`
}

// Defaults of the sizes that bound pull-through fills.
const (
	DefaultMaxFillSize  = 16 << 30 // proxy.max_fill_size
	DefaultMinFreeSpace = 1 << 30  // min_free_space
)

// Rule maps the repositories under Prefix to an upstream registry: <prefix>/<name> in berth is
// <name> on the upstream (ECR's pull-through cache naming).
type Rule struct {
	// Prefix is the first path component(s) of the cached repositories, e.g. "docker-hub".
	Prefix string `yaml:"prefix"`
	// Upstream is the registry's base URL, e.g. https://registry-1.docker.io.
	Upstream string `yaml:"upstream"`
	// Hosts are the registry host names that containerd mirror requests (?ns=HOST) and Docker's
	// registry-mirrors mean by this rule, e.g. docker.io.
	Hosts []string `yaml:"hosts"`
	// DockerHub makes one-component names official images: docker-hub/nginx is library/nginx.
	DockerHub bool `yaml:"docker_hub"`
	// Credentials for the upstream; the password may come from the file, a file or the environment.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// Revalidate is how cached tags are checked upstream: "always" (a manifest HEAD on every pull),
	// "interval:<duration>" (a HEAD at most every duration) or "ttl:<duration>" (trusted for the
	// duration after the last check, ECR's behaviour with 24h). Default "interval:5m".
	Revalidate string `yaml:"revalidate"`
	// MaxStaleness is how long after its last successful check a cached tag may still be served
	// while the upstream fails. Default 720h (30 days).
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// Warm are images (NAME:TAG, NAME as below the prefix) that berth keeps cached whole and
	// checks upstream every WarmEvery (default 1h) with a manifest HEAD, so that a deployment
	// never meets a cold miss or a stale tag.
	Warm      []string      `yaml:"warm"`
	WarmEvery time.Duration `yaml:"warm_every"`
	// MaxBytes bounds the bytes the rule's cached repositories hold: the least recently pulled
	// images are evicted, whole, until they fit. UnusedFor evicts images not pulled for that
	// long. Pin are images (NAME:TAG) never evicted; warm images are never evicted either.
	MaxBytes  int64         `yaml:"max_bytes"`
	UnusedFor time.Duration `yaml:"unused_for"`
	Pin       []string      `yaml:"pin"`
	// QuotaReserve: when the upstream reports this many pulls or fewer remaining, berth stops
	// revalidating tags and serves what it has, keeping the rest of the quota for true misses.
	QuotaReserve int `yaml:"quota_reserve"`
}

// DefaultRules are the public registries berth caches out of the box.
func DefaultRules() []Rule {
	return []Rule{
		{Prefix: "docker-hub", Upstream: "https://registry-1.docker.io", Hosts: []string{"docker.io", "registry-1.docker.io", "index.docker.io"}, DockerHub: true, QuotaReserve: 10},
		{Prefix: "ghcr", Upstream: "https://ghcr.io", Hosts: []string{"ghcr.io"}},
		{Prefix: "quay", Upstream: "https://quay.io", Hosts: []string{"quay.io"}},
		{Prefix: "k8s", Upstream: "https://registry.k8s.io", Hosts: []string{"registry.k8s.io"}},
		{Prefix: "ecr-public", Upstream: "https://public.ecr.aws", Hosts: []string{"public.ecr.aws"}},
	}
}

// EffectiveRules is the built-in rules (unless disabled) overridden and extended by p.Rules,
// with defaults filled in.
func (p Proxy) EffectiveRules() []Rule {
	var rules []Rule
	if p.Defaults == nil || *p.Defaults {
		rules = DefaultRules()
	}
	for _, r := range p.Rules {
		i := indexOfPrefix(rules, r.Prefix)
		if i < 0 {
			rules = append(rules, r)
			continue
		}
		base := rules[i]
		if r.Upstream != "" {
			base.Upstream = r.Upstream
		}
		if r.Hosts != nil {
			base.Hosts = r.Hosts
		}
		base.DockerHub = base.DockerHub || r.DockerHub
		if r.Username != "" {
			base.Username = r.Username
		}
		if r.Password != "" || r.PasswordFile != "" || r.PasswordEnv != "" {
			base.Password, base.PasswordFile, base.PasswordEnv = r.Password, r.PasswordFile, r.PasswordEnv
		}
		if r.Revalidate != "" {
			base.Revalidate = r.Revalidate
		}
		if r.MaxStaleness != 0 {
			base.MaxStaleness = r.MaxStaleness
		}
		if r.QuotaReserve != 0 {
			base.QuotaReserve = r.QuotaReserve
		}
		rules[i] = base
	}
	for i := range rules {
		if rules[i].Revalidate == "" {
			rules[i].Revalidate = "interval:5m"
		}
		if rules[i].MaxStaleness == 0 {
			rules[i].MaxStaleness = 30 * 24 * time.Hour
		}
	}
	return rules
}

func indexOfPrefix(rules []Rule, prefix string) int {
	for i, r := range rules {
		if r.Prefix == prefix {
			return i
		}
	}
	return -1
}

// Secret returns the rule's upstream password from wherever it is configured.
func (r Rule) Secret() (string, error) {
	switch {
	case r.PasswordFile != "":
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("rule %s: password_file: %w", r.Prefix, err)
		}
		return strings.TrimSpace(string(b)), nil
	case r.PasswordEnv != "":
		v, ok := os.LookupEnv(r.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("rule %s: password_env: $%s is not set", r.Prefix, r.PasswordEnv)
		}
		return v, nil
	}
	return r.Password, nil
}

// ParseRevalidate parses a revalidation policy. every is 0 for "always".
func ParseRevalidate(s string) (every time.Duration, err error) {
	if s == "always" {
		return 0, nil
	}
	kind, d, ok := strings.Cut(s, ":")
	if !ok || (kind != "interval" && kind != "ttl") {
		return 0, fmt.Errorf("revalidate %q: want always, interval:<duration> or ttl:<duration>", s)
	}
	every, err = time.ParseDuration(d)
	if err != nil || every <= 0 {
		return 0, fmt.Errorf("revalidate %q: want a positive duration after %q", s, kind+":")
	}
	return every, nil
}

func (p Proxy) validate() error {
	var errs []error
	seen := map[string]bool{}
	if p.MaxFillSize <= 0 {
		errs = append(errs, fmt.Errorf("proxy.max_fill_size %d: must be positive", p.MaxFillSize))
	}
	if p.Mirror != "" && indexOfPrefix(p.EffectiveRules(), p.Mirror) < 0 {
		errs = append(errs, fmt.Errorf("proxy.mirror %q: no rule has that prefix", p.Mirror))
	}
	for _, r := range p.EffectiveRules() {
		where := "proxy rule " + r.Prefix
		if r.Prefix == "" || strings.HasPrefix(r.Prefix, "/") || strings.HasSuffix(r.Prefix, "/") || strings.Contains(r.Prefix, "//") {
			errs = append(errs, fmt.Errorf("proxy rule prefix %q: want one or more path components", r.Prefix))
		}
		if seen[r.Prefix] {
			errs = append(errs, fmt.Errorf("%s: prefix appears twice", where))
		}
		seen[r.Prefix] = true
		if u, err := url.Parse(r.Upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: upstream %q: want an http(s) URL", where, r.Upstream))
		}
		if _, err := ParseRevalidate(r.Revalidate); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if r.MaxStaleness < 0 || r.QuotaReserve < 0 {
			errs = append(errs, fmt.Errorf("%s: max_staleness and quota_reserve must not be negative", where))
		}
		for key, refs := range map[string][]string{"warm": r.Warm, "pin": r.Pin} {
			for _, ref := range refs {
				if name, tag, ok := strings.Cut(ref, ":"); !ok || !oci.ValidName(name) || !oci.ValidTag(tag) {
					errs = append(errs, fmt.Errorf("%s: %s %q: want NAME:TAG, NAME as below the prefix (library/nginx:1.27)", where, key, ref))
				}
			}
		}
		if r.MaxBytes < 0 || r.UnusedFor < 0 {
			errs = append(errs, fmt.Errorf("%s: max_bytes and unused_for must not be negative (0: no bound)", where))
		}
		if r.WarmEvery != 0 && r.WarmEvery < time.Minute {
			errs = append(errs, fmt.Errorf("%s: warm_every %s: at least 1m", where, r.WarmEvery))
		}
		n := 0
		for _, set := range []bool{r.Password != "", r.PasswordFile != "", r.PasswordEnv != ""} {
			if set {
				n++
			}
		}
		if n > 1 {
			errs = append(errs, fmt.Errorf("%s: set only one of password, password_file, password_env", where))
		}
	}
	return errors.Join(errs...)
}
