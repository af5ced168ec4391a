package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"time"
)

// TLS configures HTTPS. With neither a certificate, SelfSigned nor ACME, berth serves plain HTTP.
type TLS struct {
	// Cert and Key are PEM files of the server certificate (chain) and its private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// SelfSigned makes berth generate a self-signed certificate on first start (kept in the data
	// directory, so clients can trust it once) for quick starts.
	SelfSigned bool `yaml:"self_signed"`
	// Hosts are the names and addresses the self-signed certificate is for, besides localhost
	// and the loopback addresses.
	Hosts []string `yaml:"hosts"`
	// ACME obtains and renews the certificate from an ACME directory (Let's Encrypt by default).
	ACME *ACME `yaml:"acme"`
}

// LetsEncrypt is the directory of Let's Encrypt's production CA, tls.acme's default.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// MaxRenewBefore is the longest renew_before that counts: the ACME library renews at most 30
// days before expiry whatever it is told.
const MaxRenewBefore = 30 * 24 * time.Hour

// ACME is automatic TLS: certificates for Domains from the ACME CA at Directory, kept in the
// metadata store (so that every replica serves the same ones) and renewed before they expire.
type ACME struct {
	// Domains are the host names berth obtains certificates for (one certificate each); a
	// client asking for any other name gets a handshake error.
	Domains []string `yaml:"domains"`
	// Email is the contact the CA writes to about expiring or revoked certificates; optional.
	Email string `yaml:"email"`
	// Directory is the ACME directory URL; LetsEncrypt when empty.
	Directory string `yaml:"directory"`
	// CARoots is a PEM file of the roots trusted for HTTPS to the directory (a private CA's);
	// empty: the system's roots.
	CARoots string `yaml:"ca_roots"`
	// HTTPAddr, when set, is where berth listens for plain HTTP (":80"): it answers the CA's
	// HTTP-01 challenges and redirects everything else to HTTPS. Without it, only TLS-ALPN-01
	// (on addr, which the CA must reach on port 443) validates the domains.
	HTTPAddr string `yaml:"http_addr"`
	// RenewBefore is how long before expiry a certificate is renewed; 0: a third of its
	// lifetime, at most 30 days.
	RenewBefore time.Duration `yaml:"renew_before"`
}

// Enabled reports whether berth serves HTTPS.
func (t TLS) Enabled() bool { return t.Cert != "" || t.SelfSigned || t.ACME != nil }

// DirectoryURL is the directory berth talks to.
func (a ACME) DirectoryURL() string {
	if a.Directory == "" {
		return LetsEncrypt
	}
	return a.Directory
}

// Roots reads CARoots; nil when it is empty (the system's roots).
func (a ACME) Roots() (*x509.CertPool, error) {
	if a.CARoots == "" {
		return nil, nil
	}
	b, err := os.ReadFile(a.CARoots)
	if err != nil {
		return nil, fmt.Errorf("tls.acme.ca_roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls.acme.ca_roots %s: no PEM certificate in it", a.CARoots)
	}
	return pool, nil
}

func (t TLS) validate() error {
	var errs []error
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, errors.New("tls: cert and key go together"))
	}
	if t.Cert != "" && t.SelfSigned {
		errs = append(errs, fmt.Errorf("tls: self_signed and cert %q exclude each other", t.Cert))
	}
	if t.ACME != nil {
		if t.Cert != "" || t.SelfSigned {
			errs = append(errs, errors.New("tls: acme excludes cert/key and self_signed (berth obtains the certificate itself)"))
		}
		errs = append(errs, t.ACME.validate())
	}
	return errors.Join(errs...)
}

func (a ACME) validate() error {
	var errs []error
	if len(a.Domains) == 0 {
		errs = append(errs, errors.New("tls.acme.domains: name at least one host name to obtain a certificate for"))
	}
	seen := map[string]bool{}
	for i, d := range a.Domains {
		if err := validDomain(d); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme.domains[%d] %q: %w", i, d, err))
		} else if seen[strings.ToLower(d)] {
			errs = append(errs, fmt.Errorf("tls.acme.domains[%d] %q: listed twice", i, d))
		}
		seen[strings.ToLower(d)] = true
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			errs = append(errs, fmt.Errorf("tls.acme.email %q: want an address like ops@example.com", a.Email))
		}
	}
	if u, err := url.Parse(a.DirectoryURL()); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("tls.acme.directory %q: want the https:// URL of an ACME directory", a.Directory))
	}
	if _, err := a.Roots(); err != nil {
		errs = append(errs, err)
	}
	if a.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(a.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("tls.acme.http_addr %q: %v (want host:port, such as :80)", a.HTTPAddr, err))
		}
	}
	if a.RenewBefore < 0 || a.RenewBefore > MaxRenewBefore {
		errs = append(errs, fmt.Errorf("tls.acme.renew_before %s: want between 0 (a third of the certificate's lifetime) and 720h (the ACME library renews at most 30 days ahead)", a.RenewBefore))
	}
	return errors.Join(errs...)
}

// validDomain accepts what a CA issues a certificate for by TLS-ALPN-01 or HTTP-01: a host
// name of at least two labels (the ACME library refuses single-label names), no wildcard (that
// needs DNS-01), no IP address.
func validDomain(d string) error {
	switch {
	case net.ParseIP(d) != nil:
		return errors.New("an IP address; want a host name")
	case strings.Contains(d, "*"):
		return errors.New("wildcards need the DNS-01 challenge, which berth does not answer; list each name")
	case len(d) > 253:
		return errors.New("longer than 253 characters")
	case strings.HasSuffix(d, "."):
		return errors.New("drop the trailing dot")
	case !strings.Contains(d, "."):
		return errors.New("want a fully qualified name with a dot (such as registry.example.com)")
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("label %q: want 1 to 63 letters, digits and inner hyphens", label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q: want letters, digits and hyphens (write international names in their xn-- form)", label)
			}
		}
	}
	return nil
}
