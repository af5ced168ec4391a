package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth/berth/internal/enginetest"
)

// The ACME tests run Pebble (Let's Encrypt's test CA: a real ACME server, validating for real)
// on loopback. Its validation authority resolves the test's domains with pebble-challtestsrv's
// DNS server, which answers every A query with 127.0.0.1 (and AAAA with nothing: Pebble dials
// the first address it gets, IPv6 first), and connects to them on the ports its configuration
// names: tlsPort (TLS-ALPN-01) is berth's HTTPS port, httpPort (HTTP-01) its tls.acme.http_addr.
// Clients reach the domains through dialers (and, for crane, an HTTPS proxy) that send every
// name to 127.0.0.1, and trust Pebble's root alone.

const acmeDomain = "registry.berth.test"

// pebble is a Pebble CA and its DNS server.
type pebble struct {
	Dir      string // the ACME directory URL
	CARoots  string // PEM file of the root that signs Pebble's own HTTPS certificate
	RootPEM  []byte // the root Pebble issues certificates under
	Root     *x509.Certificate
	mgmt     string
	log      *syncBuffer
	listenAt string
}

// startPebble starts Pebble listening at addr (host:port; "" a free port) whose VA validates
// TLS-ALPN-01 on tlsPort and HTTP-01 on httpPort, issuing certificates valid for validity.
//
// Its own HTTPS certificate is made in certDir by writeLoopbackCert (so that berth can be told to
// trust it before Pebble runs), or in a new directory when certDir is "".
func startPebble(t *testing.T, addr, certDir string, tlsPort, httpPort int, validity time.Duration) *pebble {
	t.Helper()
	bin, dnsBin := tool(t, "pebble"), tool(t, "pebble-challtestsrv")
	dir := t.TempDir()
	if addr == "" {
		addr = freeAddr(t)
	}
	if certDir == "" {
		certDir = t.TempDir()
		writeLoopbackCert(t, certDir)
	}
	caFile, certFile, keyFile := filepath.Join(certDir, "ca.pem"), filepath.Join(certDir, "cert.pem"), filepath.Join(certDir, "key.pem")
	dns := freeAddr(t)
	dnsCmd := exec.Command(dnsBin, "-dnsserver", dns, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", freeAddr(t))
	dnsLog := &syncBuffer{}
	dnsCmd.Stdout, dnsCmd.Stderr = dnsLog, dnsLog
	startChild(t, dnsCmd)

	p := &pebble{Dir: "https://" + addr + "/dir", CARoots: caFile, mgmt: freeAddr(t), log: &syncBuffer{}, listenAt: addr}
	config := filepath.Join(dir, "pebble.json")
	os.WriteFile(config, fmt.Appendf(nil, `{"pebble": {
  "listenAddress": %q, "managementListenAddress": %q,
  "certificate": %q, "privateKey": %q,
  "httpPort": %d, "tlsPort": %d,
  "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "retryAfter": {"authz": 1, "order": 1},
  "keyAlgorithm": "ecdsa",
  "profiles": {"default": {"description": "berth's tests", "validityPeriod": %d}}
}}`, addr, p.mgmt, certFile, keyFile, httpPort, tlsPort, int(validity.Seconds())), 0o644)
	cmd := exec.Command(bin, "-config", config, "-dnsserver", dns)
	// No random sleeps before validating, no nonces refused on purpose (the client retries them,
	// but the order counts would vary).
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	t.Cleanup(func() { // after the cleanup of startChild, which stops it
		if t.Failed() {
			t.Logf("pebble's log:\n%s\npebble-challtestsrv's log:\n%s", p.log.String(), dnsLog.String())
		}
	})
	startChild(t, cmd)
	caPEM, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get("https://" + p.mgmt + "/roots/0")
		if err == nil {
			p.RootPEM, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v\n%s", err, p.log.String())
		}
	}
	b, _ := pem.Decode(p.RootPEM)
	if b == nil {
		t.Fatalf("pebble's /roots/0 is not PEM: %q", p.RootPEM)
	}
	root, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p.Root = root
	return p
}

// Orders is how many orders Pebble has taken, Issued how many certificates it issued.
func (p *pebble) Orders() int { return strings.Count(p.log.String(), "Added order") }
func (p *pebble) Issued() int { return strings.Count(p.log.String(), "Issued certificate serial") }

// RootFile writes the root Pebble issues under, for clients to trust.
func (p *pebble) RootFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(f, p.RootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// Client is an HTTP client that trusts Pebble's root alone and dials every name at 127.0.0.1.
func (p *pebble) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(p.Root)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       loopbackDial,
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		// A handshake per request: what a connection shows is the certificate served now.
		DisableKeepAlives: true,
	}}
}

// loopbackDial dials addr's port on 127.0.0.1, whatever its host: the tests' domains resolve
// nowhere else.
func loopbackDial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

// writeLoopbackCert writes a CA and a certificate it signs for 127.0.0.1 and localhost: Pebble's
// own HTTPS (berth trusts the CA through tls.acme.ca_roots).
func writeLoopbackCert(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test: pebble's https"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return caFile, certFile, keyFile
}

// startACMEBerth starts berth (--dev) on addr with config and waits until it listens; it may
// have no certificate yet.
func startACMEBerth(t *testing.T, addr, data, config string) *berth {
	t.Helper()
	b := &berth{t: t, Addr: addr, Data: data, log: &syncBuffer{}, config: config}
	b.cmd = exec.Command(berthBin, "serve", "--addr", addr, "--data", data, "--config", config, "--dev")
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(b.log.String(), "berth listening"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth did not start; log:\n%s", b.log.String())
		}
	}
	return b
}

// waitCertificate waits until GET https://domain:port/v2/ succeeds with client and returns the
// response (its TLS state holds the chain the client verified).
func waitCertificate(t *testing.T, client *http.Client, domain, port string, b *berth, within time.Duration) *http.Response {
	t.Helper()
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var resp *http.Response
		if resp, err = client.Get("https://" + net.JoinHostPort(domain, port) + "/v2/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
	}
	t.Fatalf("no HTTPS for %s within %s: %v; berth's log:\n%s", domain, within, err, b.Log())
	return nil
}

func serial(resp *http.Response) string { return resp.TLS.PeerCertificates[0].SerialNumber.Text(16) }

// connectProxy is an HTTPS proxy (CONNECT) that tunnels to 127.0.0.1 at the requested port:
// how crane, which resolves names itself, reaches the tests' domains.
func connectProxy(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := loopbackDial(r.Context(), "tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(up, buf); up.(*net.TCPConn).CloseWrite() })
		io.Copy(conn, up)
		conn.Close()
		wg.Wait()
		up.Close()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// TestACME: berth with tls.acme against Pebble, started before Pebble: it logs that it has no
// certificate, keeps serving (handshakes fail) and tries again, and obtains the certificate
// once the directory is up, by TLS-ALPN-01 on its own HTTPS port. A client trusting Pebble's root
// alone verifies the chain to it, over HTTP/2; crane pushes and pulls over it; a name that is
// not configured gets a handshake error and no order; tls.acme.http_addr redirects to HTTPS.
// Restarted, berth serves the stored certificate without a new order. Against a CA that can
// validate by HTTP-01 only, berth obtains its certificate through http_addr.
func TestACME(t *testing.T) {
	t.Parallel()
	addr, httpAddr, pebbleAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	port := strconv.Itoa(portOf(t, addr))
	certDir := t.TempDir()
	writeLoopbackCert(t, certDir)
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeConfig := func(directory, caRoots string) {
		if err := os.WriteFile(config, fmt.Appendf(nil, `tls:
  acme:
    domains: [%s]
    email: ops@berth.test
    directory: %s
    ca_roots: %s
    http_addr: %s
`, acmeDomain, directory, caRoots, httpAddr), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("https://"+pebbleAddr+"/dir", filepath.Join(certDir, "ca.pem"))
	data := t.TempDir()
	b := startACMEBerth(t, addr, data, config)

	// The directory is down: berth says so, and goes on serving (handshakes fail meanwhile).
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(b.Log(), "tls.acme: no certificate yet"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("berth did not report the unreachable directory; log:\n%s", b.Log())
		}
	}
	if log := b.Log(); !strings.Contains(log, pebbleAddr) || !strings.Contains(log, "connection refused") || !strings.Contains(log, "trying again") {
		t.Fatalf("the error does not name the directory and the cause; log:\n%s", log)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the HTTPS port")
		}
	}
	p := startPebble(t, pebbleAddr, certDir, portOf(t, addr), portOf(t, httpAddr), 24*time.Hour)
	client := p.Client()
	if _, err := client.Get("https://" + net.JoinHostPort(acmeDomain, port) + "/v2/"); err == nil && p.Issued() == 0 {
		t.Fatal("a handshake succeeded before Pebble issued anything")
	}
	if b.cmd.ProcessState != nil {
		t.Fatalf("berth exited: %s", b.Log())
	}

	// Once Pebble is up, berth obtains the certificate (on its next try, or a client's handshake).
	resp := waitCertificate(t, client, acmeDomain, port, b, 3*time.Minute)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET /v2/: %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
	chain := resp.TLS.VerifiedChains[0]
	if !chain[len(chain)-1].Equal(p.Root) || !slices.Contains(chain[0].DNSNames, acmeDomain) {
		t.Fatalf("the chain does not go from %s to Pebble's root: %v ... %v", acmeDomain, chain[0].DNSNames, chain[len(chain)-1].Subject)
	}
	first := serial(resp)
	if o := p.Orders(); o != 1 {
		t.Fatalf("pebble took %d orders, want 1", o)
	}
	// The certificate's expiry is a metric (berth runs --dev here: /metrics is open).
	mresp, err := client.Get("https://" + net.JoinHostPort(acmeDomain, port) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	want := fmt.Sprintf("berth_tls_certificate_expiry_timestamp_seconds{domain=%q} %g", acmeDomain, float64(chain[0].NotAfter.Unix()))
	if !strings.Contains(string(mbody), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	// A name berth does not have: a handshake error, not a certificate, and no order.
	if _, err := client.Get("https://" + net.JoinHostPort("other.berth.test", port) + "/v2/"); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("a name not in tls.acme.domains: %v, want a TLS handshake error", err)
	}
	insecure := &http.Client{Transport: &http.Transport{DialContext: loopbackDial, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if _, err := insecure.Get("https://" + net.JoinHostPort("other.berth.test", port) + "/v2/"); err == nil {
		t.Fatal("a client that verifies nothing got a certificate for a name not in tls.acme.domains")
	}
	if o := p.Orders(); o != 1 {
		t.Fatalf("pebble took %d orders after a handshake for another name, want still 1", o)
	}

	// http_addr redirects to HTTPS.
	noRedirect := &http.Client{Transport: &http.Transport{DialContext: loopbackDial},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.Get("http://" + net.JoinHostPort(acmeDomain, strconv.Itoa(portOf(t, httpAddr))) + "/v2/_catalog?n=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://" + net.JoinHostPort(acmeDomain, port) + "/v2/_catalog?n=1"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Fatalf("http_addr: %s to %q, want 301 to %q", resp.Status, resp.Header.Get("Location"), want)
	}

	// crane, trusting Pebble's root alone (SSL_CERT_FILE), pushes and pulls over HTTPS to the
	// domain (through a proxy that takes every name to loopback).
	crane := tool(t, "crane")
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "hello.txt"), []byte("over acme\n"), 0o644)
	layer := filepath.Join(work, "layer.tar")
	if out, err := runEnv(work, nil, "tar", "-cf", layer, "-C", work, "hello.txt"); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	env := []string{"SSL_CERT_FILE=" + p.RootFile(t), "SSL_CERT_DIR=" + t.TempDir(), "HTTPS_PROXY=" + connectProxy(t), "NO_PROXY=", "no_proxy="}
	ref := net.JoinHostPort(acmeDomain, port) + "/acme/app:1"
	out, err := runEnv(work, env, crane, "append", "--oci-empty-base", "-f", layer, "-t", ref)
	if err != nil {
		t.Fatalf("crane append over ACME TLS: %v\n%s", err, out)
	}
	pushed := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	if out, err := runEnv(work, env, crane, "export", ref, filepath.Join(work, "out.tar")); err != nil {
		t.Fatalf("crane export: %v\n%s", err, out)
	}
	if got, err := exec.Command("tar", "-xOf", filepath.Join(work, "out.tar"), "hello.txt").Output(); err != nil || string(got) != "over acme\n" {
		t.Fatalf("pulled back %q, %v", got, err)
	}
	// Without Pebble's root, crane refuses the certificate.
	if out, err := runEnv(work, env[2:], crane, "digest", ref); err == nil {
		t.Fatalf("crane trusted the certificate without Pebble's root: %s", out)
	}

	// Restarted, berth serves the stored certificate: no new order.
	b.Stop()
	b = startACMEBerth(t, addr, data, config)
	resp = waitCertificate(t, client, acmeDomain, port, b, 30*time.Second)
	if serial(resp) != first || p.Orders() != 1 {
		t.Fatalf("after a restart: serial %s (was %s), %d orders; want the same certificate and 1 order", serial(resp), first, p.Orders())
	}
	if out, err := runEnv(work, env, crane, "digest", ref); err != nil || !strings.Contains(pushed, strings.TrimSpace(out)) {
		t.Fatalf("crane digest after restart: %v %q, pushed %q", err, out, pushed)
	}

	// HTTP-01: a CA that cannot reach the HTTPS port (its TLS-ALPN-01 port is closed) validates
	// through http_addr.
	b.Stop()
	p2 := startPebble(t, "", "", 1, portOf(t, httpAddr), 24*time.Hour)
	writeConfig(p2.Dir, p2.CARoots)
	b = startACMEBerth(t, addr, data, config)
	resp = waitCertificate(t, p2.Client(), acmeDomain, port, b, 3*time.Minute)
	if chain := resp.TLS.VerifiedChains[0]; !chain[len(chain)-1].Equal(p2.Root) {
		t.Fatal("after moving to the second CA, the chain does not end at its root")
	}
	if p2.Issued() != 1 {
		t.Fatalf("the second CA issued %d certificates, want 1", p2.Issued())
	}
}

// TestACMEReplicas: two replicas on S3 and PostgreSQL with encryption at rest start one right
// after the other with tls.acme: Pebble takes one order, and both serve the certificate it issued
// (the one that did not order waited for it and read it from the store). Pebble issues certificates for a minute, and berth renews
// them after 15 s: both replicas go on to serve the renewed certificate, without a restart.
func TestACMEReplicas(t *testing.T) {
	t.Parallel()
	addrA, addrB := freeAddr(t), freeAddr(t)
	validity := time.Minute
	p := startPebble(t, "", "", portOf(t, addrA), 1, validity)
	keyFile := filepath.Join(t.TempDir(), "kek")
	if out, err := exec.Command(berthBin, "encryption", "keygen", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("berth encryption keygen: %v\n%s", err, out)
	}
	dsn := enginetest.Postgres(t)
	s3 := enginetest.S3(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	config := write("berth.yaml", fmt.Sprintf(`storage:
  driver: s3
  s3:
    bucket: %s
    region: %s
    endpoint: %s
    path_style: true
    access_key_file: %s
    secret_key_file: %s
metadata:
  driver: postgres
  dsn_file: %s
encryption:
  key_file: %s
shutdown:
  drain: 0s
tls:
  acme:
    domains: [%s]
    directory: %s
    ca_roots: %s
    renew_before: 45s
`, s3.Bucket, s3.Region, s3.Endpoint, write("access-key", s3.AccessKey), write("secret-key", s3.SecretKey),
		write("dsn", dsn), keyFile, acmeDomain, p.Dir, p.CARoots))
	var a, b *berth
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica A's log:\n%s\nreplica B's log:\n%s", a.Log(), b.Log())
		}
	})
	// A first: it listens on the port where Pebble validates, and a validation that found nobody
	// there would fail an order of B's (autocert then orders again a minute later). B starts while
	// A orders.
	a = startACMEBerth(t, addrA, t.TempDir(), config)
	b = startACMEBerth(t, addrB, t.TempDir(), config)
	client := p.Client()
	ra := waitCertificate(t, client, acmeDomain, strconv.Itoa(portOf(t, addrA)), a, 90*time.Second)
	rb := waitCertificate(t, client, acmeDomain, strconv.Itoa(portOf(t, addrB)), b, 90*time.Second)
	first := serial(ra)
	if serial(rb) != first {
		t.Fatalf("the replicas serve different certificates: %s and %s", first, serial(rb))
	}
	if o, i := p.Orders(), p.Issued(); o != 1 || i != 1 {
		t.Fatalf("pebble took %d orders and issued %d certificates for two replicas, want 1 and 1", o, i)
	}
	if chain := ra.TLS.VerifiedChains[0]; !chain[len(chain)-1].Equal(p.Root) {
		t.Fatalf("the chain does not end at Pebble's root: %v", chain[len(chain)-1].Subject)
	}

	// Renewal: both replicas end up serving a newer certificate than the first.
	renewed := map[*berth]string{}
	for deadline := time.Now().Add(2 * validity); len(renewed) < 2 && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		for _, r := range []*berth{a, b} {
			resp, err := client.Get("https://" + net.JoinHostPort(acmeDomain, strconv.Itoa(portOf(t, r.Addr))) + "/v2/")
			if err != nil {
				t.Fatalf("during renewal: %v", err)
			}
			resp.Body.Close()
			if s := serial(resp); s != first {
				renewed[r] = s
			}
		}
	}
	if len(renewed) < 2 {
		t.Fatalf("after %s, %d of the 2 replicas serve a renewed certificate; pebble issued %d; logs:\n%s\n%s",
			2*validity, len(renewed), p.Issued(), a.Log(), b.Log())
	}
	// One order per renewal: a second replica renewing the same certificate would order within
	// seconds of the first (their timers are a few seconds apart), while a certificate falls
	// due 15 s after it is issued.
	var last time.Time
	for line := range strings.Lines(p.log.String()) {
		if !strings.Contains(line, "Issued certificate serial") {
			continue
		}
		f := strings.Fields(line) // Pebble 2026/12/04 20:19:10 Issued ...
		at, err := time.Parse("2006/01/02 15:04:05", f[1]+" "+f[2])
		if err != nil {
			t.Fatalf("pebble's log line %q: %v", line, err)
		}
		if !last.IsZero() && at.Sub(last) < 8*time.Second {
			t.Errorf("pebble issued certificates %s apart (%s, %s): two replicas renewed the same certificate", at.Sub(last), last.Format(time.TimeOnly), at.Format(time.TimeOnly))
		}
		last = at
	}
}
