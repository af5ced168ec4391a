package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/berth/berth/internal/auth/oidc"
)

// Auth configures authentication: the token service, OIDC federation and the audit log.
type Auth struct {
	// Service names the token service (challenges' service, tokens' audience). Default "berth".
	Service string `yaml:"service"`
	// Realm is the token endpoint's public URL; default /token on the host a request came to.
	Realm string `yaml:"realm"`
	// TokenTTL is how long a registry token lives (default 5m).
	TokenTTL time.Duration `yaml:"token_ttl"`
	// RefreshTTL is how long docker login's refresh tokens live (default 2160h, 90 days).
	RefreshTTL time.Duration `yaml:"refresh_ttl"`
	// OIDC lists the OIDC issuers (CI systems) whose tokens berth accepts, with their grants.
	OIDC []oidc.Trust `yaml:"oidc"`
	// AuditLog is a file to which audit lines are appended as JSON; default: the main log.
	AuditLog string `yaml:"audit_log"`
	// TrustedProxies are addresses or CIDR prefixes of load balancers in front of berth, whose
	// X-Forwarded-For berth believes for the client's address (login throttling, audit).
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Proxies parses TrustedProxies; a bare address is a prefix of one address.
func (a Auth) Proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range a.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("auth.trusted_proxies: %q is neither an address nor a CIDR prefix", s)
			}
			p = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (a Auth) validate() error {
	var errs []error
	if a.Realm != "" {
		if u, err := url.Parse(a.Realm); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("auth.realm %q: want an http(s) URL", a.Realm))
		}
	}
	if a.TokenTTL != 0 && (a.TokenTTL < 30*time.Second || a.TokenTTL > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("auth.token_ttl %s: want 30s to 24h", a.TokenTTL))
	}
	if _, err := a.Proxies(); err != nil {
		errs = append(errs, err)
	}
	if a.RefreshTTL < 0 {
		errs = append(errs, fmt.Errorf("auth.refresh_ttl %s: must not be negative", a.RefreshTTL))
	}
	names := map[string]bool{}
	for i, t := range a.OIDC {
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("auth.oidc[%d]: %w", i, err))
		}
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("auth.oidc[%d]: name %q is used twice", i, t.Name))
		}
		names[t.Name] = true
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether addr (host:port) listens only on a loopback interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
