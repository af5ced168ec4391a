package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/certs"
	"github.com/berth/berth/internal/config"
)

// tlsConfig loads (or, for self_signed, creates) the server certificate. HTTP/2 is offered first:
// clients that speak it multiplex blob and manifest requests over one connection.
func tlsConfig(c config.TLS, data string, log *slog.Logger) (*tls.Config, error) {
	certFile, keyFile := c.Cert, c.Key
	if c.SelfSigned {
		dir := filepath.Join(data, "tls")
		certFile, keyFile = filepath.Join(dir, "self-signed.crt"), filepath.Join(dir, "self-signed.key")
		if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
			if err := writeSelfSigned(dir, certFile, keyFile, c.Hosts); err != nil {
				return nil, fmt.Errorf("tls: generating a self-signed certificate: %w", err)
			}
			log.Info("generated a self-signed TLS certificate: give it to clients to trust", "cert", certFile)
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// writeSelfSigned writes an ECDSA P-256 certificate, valid for ten years, for localhost, the
// loopback addresses, this machine's host name and hosts; the key is readable by the owner only.
func writeSelfSigned(dir, certFile, keyFile string, hosts []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "berth self-signed", Organization: []string{"berth"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that clients can add it as their CA as it is
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if name, err := os.Hostname(); err == nil && name != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a certificate without its key would make the next start fail.
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// newACME is the certificate manager of tls.acme, over the metadata store that the replicas
// share, sealing its secrets with sealer when encryption at rest is on.
func newACME(c config.ACME, store certs.Store, sealer auth.Sealer, holder string, log *slog.Logger) (*certs.Manager, error) {
	roots, err := c.Roots()
	if err != nil {
		return nil, err
	}
	var s certs.Sealer
	if sealer != nil {
		s = sealer
	}
	log.Info("tls.acme: certificates from an ACME directory", "directory", c.DirectoryURL(), "domains", c.Domains,
		"challenges", challenges(c))
	return certs.New(certs.Options{
		Domains: c.Domains, Email: c.Email, Directory: c.DirectoryURL(), Roots: roots, RenewBefore: c.RenewBefore,
		Store: store, Sealer: s, Holder: holder, Log: log,
	}), nil
}

func challenges(c config.ACME) string {
	if c.HTTPAddr != "" {
		return "tls-alpn-01 on addr, http-01 on " + c.HTTPAddr
	}
	return "tls-alpn-01 on addr"
}

// serveHTTPChallenges listens on addr for plain HTTP: the CA's HTTP-01 challenges, and
// redirects to the HTTPS listener at httpsAddr.
func serveHTTPChallenges(addr, httpsAddr string, m *certs.Manager, errorLog *log.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(httpsAddr)
	srv := &http.Server{
		Handler:           m.HTTPHandler(port),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          errorLog,
	}
	go srv.Serve(ln)
	return srv, nil
}
