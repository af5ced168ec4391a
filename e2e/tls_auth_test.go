package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSecureTLSBerth starts berth with authentication on and --tls-self-signed, and returns it
// (for Admin and AdminPassword; its URL method does not apply) with the path of its certificate.
func startSecureTLSBerth(t *testing.T) (*berth, string) {
	t.Helper()
	b := &berth{t: t, Addr: freeAddr(t), Data: t.TempDir(), secure: true, log: &syncBuffer{}}
	cmd := exec.Command(berthBin, "serve", "--addr", b.Addr, "--data", b.Data, "--tls-self-signed")
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	// Readiness only: the certificate is checked by every request after this.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := insecure.Get("https://" + b.Addr + "/v2/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			return b, filepath.Join(b.Data, "tls", "self-signed.crt")
		}
	}
	t.Fatalf("berth did not answer HTTPS; log:\n%s", b.log.String())
	return nil, ""
}

// tlsReq sends one request over c and checks that it went over HTTP/2 and TLS; it returns the
// response with its body read.
func tlsReq(t *testing.T, c *http.Client, method, u, authz string, body []byte, hdr ...string) authResp {
	t.Helper()
	resp, b, err := authSend(t, c, method, u, authz, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	if resp.ProtoMajor != 2 || resp.TLS == nil || !resp.TLS.HandshakeComplete {
		t.Fatalf("%s %s went over %s (TLS: %v), want HTTP/2 over TLS", method, u, resp.Proto, resp.TLS != nil)
	}
	return authResp{resp.StatusCode, resp.Header, b}
}

var realmRE = regexp.MustCompile(`^Bearer realm="([^"]+)",service="([^"]+)"`)

// TestTLSAuth: berth serving HTTPS (--tls-self-signed) with authentication on. Its challenge names
// an https realm on the host the client asked for; a Go client that trusts only the generated
// certificate gets a token from that realm and pushes a blob in chunks, then a manifest, and pulls
// both back, every request over HTTP/2 (checked per response); plain HTTP on the port hands out no
// token; crane (SSL_CERT_FILE) and oras (--ca-file) log in, push and pull over it, and crane
// without the certificate refuses to talk to it.
func TestTLSAuth(t *testing.T) {
	t.Parallel()
	b, certFile := startSecureTLSBerth(t)
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the self-signed certificate does not parse")
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	base := "https://" + b.Addr
	secret := authRobot(b, "tlsbot", "team/*", "pull,push")

	// The challenge: an https realm on the host asked for.
	r := tlsReq(t, c, http.MethodGet, base+"/v2/", "", nil)
	m := realmRE.FindStringSubmatch(r.Header.Get("WWW-Authenticate"))
	if r.Status != http.StatusUnauthorized || m == nil {
		t.Fatalf("GET /v2/ without credentials: %s, WWW-Authenticate %q", r, r.Header.Get("WWW-Authenticate"))
	}
	if realm := m[1]; realm != base+"/token" {
		t.Fatalf("realm %q over TLS, want %q", realm, base+"/token")
	}

	// A token from the realm, over TLS.
	scope := "repository:team/tls:pull,push"
	q := url.Values{"service": {m[2]}, "scope": {scope}}
	r = tlsReq(t, c, http.MethodGet, m[1]+"?"+q.Encode(), basicAuth("tlsbot", secret), nil)
	var tr tokenReply
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tr) != nil || tr.Token == "" {
		t.Fatalf("GET %s over TLS: %s", m[1], r)
	}
	if access, _, sub := jwtAccess(t, tr.Token); sub != "robot:tlsbot" || strings.Join(access["repository:team/tls"], ",") != "pull,push" {
		t.Fatalf("token over TLS: subject %q, access %v", sub, access)
	}
	bearer := bearerAuth(tr.Token)

	// Plain HTTP on the TLS port gets no token, whatever it sends.
	plain, err := http.NewRequest(http.MethodGet, "http://"+b.Addr+"/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	plain.SetBasicAuth("tlsbot", secret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(plain)
	if err != nil {
		t.Fatalf("plain HTTP /token on the TLS port: %v, want net/http's 400", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || bytes.Contains(body, []byte(`"token"`)) {
		t.Fatalf("plain HTTP /token on the TLS port: %d %s, want 400 and no token", resp.StatusCode, body)
	}

	// A chunked upload, every request over HTTP/2: POST, two PATCHes with Content-Range, and
	// the PUT that commits with the last chunk.
	layer := encPattern(3<<20 + 12345)
	d := clDigest(layer)
	r = tlsReq(t, c, http.MethodPost, base+"/v2/team/tls/blobs/uploads/", bearer, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %s", r)
	}
	loc := r.Header.Get("Location")
	cuts := []int{0, 1 << 20, 2<<20 + 7, len(layer)}
	for i := 0; i+1 < len(cuts); i++ {
		from, to := cuts[i], cuts[i+1]
		method, u := http.MethodPatch, base+loc
		if i == len(cuts)-2 {
			method, u = http.MethodPut, base+loc+encSep(loc)+"digest="+d
		}
		r = tlsReq(t, c, method, u, bearer, layer[from:to],
			"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", from, to-1))
		want := http.StatusAccepted
		if method == http.MethodPut {
			want = http.StatusCreated
		}
		if r.Status != want {
			t.Fatalf("%s bytes %d-%d: %s, want %d", method, from, to-1, r, want)
		}
		if method == http.MethodPatch {
			if got := r.Header.Get("Range"); got != fmt.Sprintf("0-%d", to-1) {
				t.Fatalf("PATCH bytes %d-%d: Range %q", from, to-1, got)
			}
			loc = r.Header.Get("Location")
		}
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDigest := clDigest(cfg)
	if r = tlsReq(t, c, http.MethodPost, base+"/v2/team/tls/blobs/uploads/?digest="+cfgDigest, bearer, cfg,
		"Content-Type", "application/octet-stream"); r.Status != http.StatusCreated {
		t.Fatalf("monolithic POST of the config: %s", r)
	}
	manifest := authManifestJSON(t, cfg, layer, nil)
	if r = tlsReq(t, c, http.MethodPut, base+"/v2/team/tls/manifests/v1", bearer, manifest, "Content-Type", clOCIManifest); r.Status != http.StatusCreated {
		t.Fatalf("PUT manifest: %s", r)
	}
	r = tlsReq(t, c, http.MethodGet, base+"/v2/team/tls/manifests/v1", bearer, nil, "Accept", clOCIManifest)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, manifest) {
		t.Fatalf("GET manifest back: %s", r)
	}
	r = tlsReq(t, c, http.MethodGet, base+"/v2/team/tls/blobs/"+d, bearer, nil)
	if r.Status != http.StatusOK || clDigest(r.Body) != d {
		t.Fatalf("GET the layer back: %d, %d bytes hashing to %s, want %s", r.Status, len(r.Body), clDigest(r.Body), d)
	}

	// Real clients: the same host by name, trusting the certificate and nothing else.
	host := strings.Replace(b.Addr, "127.0.0.1", "localhost", 1)
	withCA := func(dir, bin string, args ...string) (string, string, error) {
		return clExecEnv(dir, append(authClientEnv(dir), "SSL_CERT_FILE="+certFile), bin, args...)
	}
	content := "pushed over TLS with a token\n"

	t.Run("crane", func(t *testing.T) {
		crane := tool(t, "crane")
		dir := t.TempDir()
		clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))
		// Without the certificate, crane does not trust berth: the one below is really verified.
		out := mustFail(t, authExec, dir, crane, "catalog", host)
		authMentions(t, "crane without the certificate", out, "x509", "certificate")
		mustRun(t, withCA, dir, crane, "auth", "login", host, "-u", "tlsbot", "-p", secret)
		dg := clLastDigest(t, "crane append", mustRun(t, withCA, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", host+"/team/crane:v1"))
		if got := strings.TrimSpace(mustRun(t, withCA, dir, crane, "digest", host+"/team/crane:v1")); got != dg {
			t.Errorf("crane digest = %s, pushed %s", got, dg)
		}
		fsTar := mustRun(t, withCA, dir, crane, "export", host+"/team/crane:v1", "-")
		if got := clTarFile(t, []byte(fsTar), "hello.txt"); got != content {
			t.Errorf("crane export hello.txt = %q, want %q", got, content)
		}
		// What crane pushed, read with the Go client's token over HTTP/2.
		tok := tlsReq(t, c, http.MethodGet, m[1]+"?"+url.Values{"service": {"berth"}, "scope": {"repository:team/crane:pull"}}.Encode(),
			basicAuth("tlsbot", secret), nil)
		var ctr tokenReply
		if err := json.Unmarshal(tok.Body, &ctr); err != nil || tok.Status != http.StatusOK {
			t.Fatalf("token for team/crane: %s", tok)
		}
		if r := tlsReq(t, c, http.MethodGet, base+"/v2/team/crane/manifests/v1", bearerAuth(ctr.Token), nil, "Accept", clAcceptAll); r.Status != http.StatusOK || clDigest(r.Body) != dg {
			t.Errorf("GET team/crane:v1 over HTTP/2: %s", r)
		}
	})

	t.Run("oras", func(t *testing.T) {
		oras := tool(t, "oras")
		dir := t.TempDir()
		clWriteFile(t, filepath.Join(dir, "a.txt"), []byte(content))
		mustRun(t, authExec, dir, oras, "login", "--plain-http=false", "--ca-file", certFile, "-u", "tlsbot", "-p", secret, host)
		out := mustRun(t, authExec, dir, oras, "push", "--plain-http=false", "--ca-file", certFile, "--format", "json", host+"/team/oras:v1", "a.txt:text/plain")
		var p struct {
			Digest string `json:"digest"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil || p.Digest == "" {
			t.Fatalf("oras push output: %v\n%s", err, out)
		}
		mustRun(t, authExec, dir, oras, "pull", "--plain-http=false", "--ca-file", certFile, "-o", "out", host+"/team/oras:v1")
		if got := string(clReadFile(t, filepath.Join(dir, "out", "a.txt"))); got != content {
			t.Errorf("oras pull a.txt = %q, want %q", got, content)
		}
		if got := strings.TrimSpace(mustRun(t, authExec, dir, oras, "resolve", "--plain-http=false", "--ca-file", certFile, host+"/team/oras:v1")); got != p.Digest {
			t.Errorf("oras resolve = %s, pushed %s", got, p.Digest)
		}
	})
}
