package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTLSBerth starts berth with args (which turn TLS on) and waits until it answers HTTPS.
func startTLSBerth(t *testing.T, data string, args ...string) (addr string, stop func()) {
	t.Helper()
	addr = freeAddr(t)
	log := &syncBuffer{}
	cmd := exec.Command(berthBin, append([]string{"serve", "--addr", addr, "--data", data, "--dev"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		failOnRace(t, log.String())
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := insecure.Get("https://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return addr, stop
		}
	}
	stop()
	t.Fatalf("berth did not answer HTTPS; log:\n%s", log.String())
	return "", nil
}

// TestTLSSelfSigned: --tls-self-signed serves HTTPS (HTTP/2 by ALPN) with a certificate kept in
// the data directory, the same after a restart, which a client can trust as it is and which serves
// as --tls-cert/--tls-key too; crane pushes and pulls over it, verifying it.
func TestTLSSelfSigned(t *testing.T) {
	data := t.TempDir()
	addr, stop := startTLSBerth(t, data, "--tls-self-signed")
	certFile := filepath.Join(data, "tls", "self-signed.crt")
	keyFile := filepath.Join(data, "tls", "self-signed.key")
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the self-signed certificate does not parse")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := client.Get("https://" + addr + "/v2/")
	if err != nil {
		t.Fatalf("a client trusting the certificate: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET /v2/ over TLS: %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
	if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served on the TLS port")
		}
	}

	// crane verifies the certificate through SSL_CERT_FILE (no --insecure).
	crane := tool(t, "crane")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("over tls\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(dir, "layer.tar")
	if out, err := runEnv(dir, nil, "tar", "-cf", layer, "-C", dir, "hello.txt"); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	env := []string{"SSL_CERT_FILE=" + certFile}
	ref := strings.Replace(addr, "127.0.0.1", "localhost", 1) + "/tls/app:1"
	out, err := runEnv(dir, env, crane, "append", "--oci-empty-base", "-f", layer, "-t", ref)
	if err != nil {
		t.Fatalf("crane append over TLS: %v\n%s", err, out)
	}
	pushed := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	stop()

	// Restarted, berth keeps its certificate: the client still trusts it.
	again, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	addr2, stop2 := startTLSBerth(t, data, "--tls-self-signed")
	defer stop2()
	if string(again) != string(pemBytes) {
		t.Fatal("the self-signed certificate changed on restart")
	}
	ref2 := strings.Replace(addr2, "127.0.0.1", "localhost", 1) + "/tls/app:1"
	got, err := runEnv(dir, env, crane, "digest", ref2)
	if err != nil || !strings.Contains(pushed, strings.TrimSpace(got)) {
		t.Fatalf("crane digest after restart: %v %q, pushed %q", err, got, pushed)
	}
	stop2()

	// The same files as --tls-cert/--tls-key.
	addr3, stop3 := startTLSBerth(t, data, "--tls-cert", certFile, "--tls-key", keyFile)
	defer stop3()
	resp, err = client.Get("https://" + addr3 + "/v2/tls/app/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest over --tls-cert: %s", resp.Status)
	}
}
