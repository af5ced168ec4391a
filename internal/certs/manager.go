package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Options configure a Manager.
type Options struct {
	Domains     []string       // the names to obtain certificates for
	Email       string         // the account's contact; optional
	Directory   string         // the ACME directory URL
	Roots       *x509.CertPool // trusted for HTTPS to the directory; nil: the system's
	RenewBefore time.Duration  // 0: a third of the certificate's lifetime, at most 30 days
	Store       Store
	Sealer      Sealer // nil: entries are stored in the clear
	Holder      string // this process among the replicas (its leases)
	Log         *slog.Logger
}

// Manager serves the certificates of the configured domains, obtaining and renewing them.
type Manager struct {
	m         *autocert.Manager
	cache     *Cache
	domains   []string
	directory string
	log       *slog.Logger
}

// New returns a Manager. Configuring it accepts the CA's terms of service, as certbot's
// --agree-tos does: there is no one to ask at a handshake.
func New(o Options) *Manager {
	domains := make([]string, len(o.Domains))
	for i, d := range o.Domains {
		domains[i] = strings.ToLower(d)
	}
	client := &acme.Client{DirectoryURL: o.Directory, UserAgent: "berth"}
	if o.Roots != nil {
		client.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     &tls.Config{RootCAs: o.Roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	cache := NewCache(o.Store, o.Sealer, o.Directory, o.Holder, o.RenewBefore, o.Log)
	return &Manager{
		cache: cache,
		m: &autocert.Manager{
			Prompt:      autocert.AcceptTOS,
			Cache:       cache,
			HostPolicy:  autocert.HostWhitelist(domains...),
			RenewBefore: o.RenewBefore,
			Client:      client,
			Email:       o.Email,
		},
		domains:   domains,
		directory: o.Directory,
		log:       o.Log,
	}
}

// Expiry returns when each certificate this process serves expires (Cache.Expiry): a hook
// for a metric such as the seconds until expiry, to alert on when renewals keep failing.
func (m *Manager) Expiry() map[string]time.Time { return m.cache.Expiry() }

// TLSConfig is the configuration of the HTTPS listener: HTTP/2, and the TLS-ALPN-01 protocol
// so that the CA can validate a domain on the listener itself. A name that is not one of the
// domains gets a handshake error, never a certificate (nor an order).
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.m.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1", acme.ALPNProto},
	}
}

// HTTPHandler answers the CA's HTTP-01 challenges (the tokens are in the store, so whichever
// replica the CA reaches answers) and redirects every other request to HTTPS on httpsPort
// ("443": no port in the URL).
func (m *Manager) HTTPHandler(httpsPort string) http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use HTTPS", http.StatusBadRequest)
			return
		}
		host := hostOnly(r.Host)
		if httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
	h := m.m.HTTPHandler(redirect)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// autocert checks the Host against the domains as it is; the CA sends the port with it
		// when it validates on another port than 80 (a private CA, a test).
		r.Host = hostOnly(r.Host)
		h.ServeHTTP(w, r)
	})
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// Retry bounds: the first retry waits for autocert to forget the failed attempt (it answers
// with it for a minute); later ones back off, so that a domain whose validation keeps failing
// does not use up the CA's allowance of failed validations (Let's Encrypt: 5 an hour).
const (
	firstRetry = time.Minute
	lastRetry  = time.Hour
)

// Run obtains (or reads from the store) each domain's certificate now, rather than at the
// first client's handshake, and keeps trying while the directory is unreachable or refuses,
// logging each failure. autocert renews the certificates from then on. It returns when every
// domain has a certificate or ctx ends.
func (m *Manager) Run(ctx context.Context) {
	done := make(chan struct{}, len(m.domains))
	for _, d := range m.domains {
		go func() {
			defer func() { done <- struct{}{} }()
			m.obtain(ctx, d)
		}()
	}
	for range m.domains {
		<-done
	}
}

func (m *Manager) obtain(ctx context.Context, domain string) {
	wait := firstRetry
	for {
		// A hello as a current client sends it, so that the ECDSA certificate is the one made.
		cert, err := m.m.GetCertificate(&tls.ClientHelloInfo{
			ServerName:        domain,
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		})
		if err == nil {
			m.log.Info("tls.acme: serving a certificate", "domain", domain, "issuer", cert.Leaf.Issuer.String(),
				"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "serial", cert.Leaf.SerialNumber.Text(16))
			return
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Error("tls.acme: no certificate yet (HTTPS handshakes for the domain fail meanwhile); trying again",
			"domain", domain, "directory", m.directory, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, lastRetry)
	}
}
