package e2e

// Authentication end to end, against berth serving with authentication on (startSecureBerth):
// every real client logs in with a robot account, pushes and pulls what it was granted and is
// refused the rest; docker login's refresh-token flow and the ECS agent's Basic credentials,
// emulated over raw HTTP; grant changes, robot removal and key rotation reaching a running
// server; the audit log; failed-login throttling. Each client runs with its own configuration
// directory (HOME, DOCKER_CONFIG, REGCTL_CONFIG, XDG_*), never the user's.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// --- helpers ---------------------------------------------------------------------------------

var authHTTP = &http.Client{Timeout: 15 * time.Second}

// authResp is a response, read whole.
type authResp struct {
	Status int
	Header http.Header
	Body   []byte
}

// errorCode is the first OCI error code of the body, or "".
func (r authResp) errorCode() string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.Body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (r authResp) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// basicAuth is an Authorization header value with Basic credentials.
func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func bearerAuth(token string) string { return "Bearer " + token }

// authDo sends one request to berth; authz is the Authorization header ("" for none); extra
// holds header name/value pairs.
func authDo(t testing.TB, method, u, authz string, body []byte, extra ...string) authResp {
	t.Helper()
	resp, b, err := authSend(t, authHTTP, method, u, authz, body, extra...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return authResp{resp.StatusCode, resp.Header, b}
}

// authSend sends one request with c and returns the response and its body, with the error of
// reading the body (a cut body is an outcome some tests look at).
func authSend(t testing.TB, c *http.Client, method, u, authz string, body []byte, extra ...string) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// tokenReply is what GET or POST /token answers.
type tokenReply struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
}

// authTokenResp asks GET /token for scopes with Basic credentials (none when user is "").
func authTokenResp(t testing.TB, b *berth, user, pass string, scopes ...string) (authResp, tokenReply) {
	t.Helper()
	q := url.Values{"service": {"berth"}}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	authz := ""
	if user != "" {
		authz = basicAuth(user, pass)
	}
	r := authDo(t, http.MethodGet, b.URL()+"/token?"+q.Encode(), authz, nil)
	var tr tokenReply
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &tr); err != nil {
			t.Fatalf("GET /token: %v: %s", err, r.Body)
		}
		if tr.Token == "" {
			tr.Token = tr.AccessToken
		}
	}
	return r, tr
}

// authToken is a token for scopes; the request must succeed.
func authToken(t testing.TB, b *berth, user, pass string, scopes ...string) string {
	t.Helper()
	r, tr := authTokenResp(t, b, user, pass, scopes...)
	if r.Status != http.StatusOK || tr.Token == "" {
		t.Fatalf("GET /token as %q for %q: %s", user, scopes, r)
	}
	return tr.Token
}

// jwtAccess is the access claim of a token (repository name -> actions); kid its key ID.
func jwtAccess(t testing.TB, token string) (access map[string][]string, kid, sub string) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", token)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	var claims struct {
		Sub    string `json:"sub"`
		Access []struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	for i, v := range []any{&hdr, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("token part %d: %v: %s", i, err, raw)
		}
	}
	access = map[string][]string{}
	for _, a := range claims.Access {
		access[a.Type+":"+a.Name] = a.Actions
	}
	return access, hdr.Kid, claims.Sub
}

// authImage is an image pushed by authPushImage.
type authImage struct {
	Manifest string // digest
	Body     []byte
	Config   string
	Layer    string
}

// authUploadBlob uploads data to repo (POST then PUT with the digest) and checks the 201.
func authUploadBlob(t testing.TB, b *berth, authz, repo string, data []byte) string {
	t.Helper()
	d := clDigest(data)
	r := authDo(t, http.MethodPost, b.URL()+"/v2/"+repo+"/blobs/uploads/", authz, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload to %s: %s", repo, r)
	}
	loc, err := url.Parse(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	if loc, err = loc.Parse(r.Header.Get("Location")); err != nil {
		t.Fatalf("upload Location %q: %v", r.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d)
	loc.RawQuery = q.Encode()
	r = authDo(t, http.MethodPut, loc.String(), authz, data, "Content-Type", "application/octet-stream")
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT blob %s to %s: %s", d, repo, r)
	}
	return d
}

// authPutManifest puts an OCI manifest under ref and returns the response.
func authPutManifest(t testing.TB, b *berth, authz, repo, ref string, body []byte) authResp {
	t.Helper()
	return authDo(t, http.MethodPut, b.URL()+"/v2/"+repo+"/manifests/"+ref, authz, body, "Content-Type", clOCIManifest)
}

// authManifestJSON is an OCI image manifest of config and one layer, with annotations.
func authManifestJSON(t testing.TB, cfg, layer []byte, annotations map[string]string) []byte {
	t.Helper()
	m := map[string]any{
		"schemaVersion": 2, "mediaType": clOCIManifest,
		"config": clDesc{MediaType: clOCIConfig, Digest: clDigest(cfg), Size: int64(len(cfg))},
		"layers": []clDesc{{MediaType: clOCILayerGzip, Digest: clDigest(layer), Size: int64(len(layer))}},
	}
	if len(annotations) > 0 {
		m["annotations"] = annotations
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// authPushImage pushes a one-layer image holding hello.txt = content to repo:tag over HTTP.
func authPushImage(t *testing.T, b *berth, authz, repo, tag, content string) authImage {
	t.Helper()
	tarball := clTar(t, map[string]string{"hello.txt": content})
	layer := clGzip(t, tarball)
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%q]}}`, clDigest(tarball)))
	img := authImage{Config: authUploadBlob(t, b, authz, repo, cfg), Layer: authUploadBlob(t, b, authz, repo, layer)}
	img.Body = authManifestJSON(t, cfg, layer, nil)
	img.Manifest = clDigest(img.Body)
	if r := authPutManifest(t, b, authz, repo, tag, img.Body); r.Status != http.StatusCreated {
		t.Fatalf("PUT manifest %s:%s: %s", repo, tag, r)
	}
	return img
}

// authGetManifest fetches repo:ref with authz and returns the response.
func authGetManifest(t testing.TB, b *berth, authz, repo, ref string) authResp {
	t.Helper()
	return authDo(t, http.MethodGet, b.URL()+"/v2/"+repo+"/manifests/"+ref, authz, nil, "Accept", clAcceptAll)
}

// authWantManifest checks that repo:ref is the manifest digest want, read with authz.
func authWantManifest(t testing.TB, b *berth, authz, repo, ref, want string) {
	t.Helper()
	r := authGetManifest(t, b, authz, repo, ref)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s:%s: %s", repo, ref, r)
	}
	if got := clDigest(r.Body); got != want || r.Header.Get("Docker-Content-Digest") != want {
		t.Fatalf("GET %s:%s: body digest %s, header %s, want %s", repo, ref, got, r.Header.Get("Docker-Content-Digest"), want)
	}
}

// authRobot adds a robot with grants (pattern, actions pairs) and returns its secret.
func authRobot(b *berth, name string, grants ...string) string {
	b.t.Helper()
	secret := strings.TrimSpace(b.Admin("robot", "add", name))
	if !strings.HasPrefix(secret, "berth_rbt_") {
		b.t.Fatalf("robot add %s printed %q, want a secret", name, secret)
	}
	for i := 0; i+1 < len(grants); i += 2 {
		b.Admin("grant", "robot:"+name, grants[i], grants[i+1])
	}
	return secret
}

// authEventually retries check every 200 ms until it reports true, for at most within, and
// returns how long that took.
func authEventually(t testing.TB, within time.Duration, what string, check func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if check() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// authClientEnv is the environment of a client: every place a client may read or write its
// configuration or credentials points into dir.
func authClientEnv(dir string) []string {
	for _, d := range []string{".docker", ".config", "run", "data", "cache"} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
	}
	return []string{
		"HOME=" + dir,
		"DOCKER_CONFIG=" + filepath.Join(dir, ".docker"),
		"REGCTL_CONFIG=" + filepath.Join(dir, "regctl.json"),
		"REGISTRY_AUTH_FILE=" + filepath.Join(dir, "containers-auth.json"),
		"XDG_CONFIG_HOME=" + filepath.Join(dir, ".config"),
		"XDG_RUNTIME_DIR=" + filepath.Join(dir, "run"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"),
	}
}

// authExec runs a client in dir with authClientEnv and a timeout.
func authExec(dir, bin string, args ...string) (stdout, stderr string, err error) {
	return clExecEnv(dir, authClientEnv(dir), bin, args...)
}

func authRun(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	return mustRun(t, authExec, dir, bin, args...)
}

func authRunFails(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	return mustFail(t, authExec, dir, bin, args...)
}

// authMentions fails unless out mentions one of words (case-insensitive).
func authMentions(t *testing.T, what, out string, words ...string) {
	t.Helper()
	lo := strings.ToLower(out)
	for _, w := range words {
		if strings.Contains(lo, strings.ToLower(w)) {
			return
		}
	}
	t.Errorf("%s: output mentions none of %q:\n%s", what, words, out)
}

// --- tests -----------------------------------------------------------------------------------

// TestAuthClients: crane, oras, regctl and skopeo each log in with a robot allowed pull,push on
// team/* and pull on readonly/*, push an image to team/<client>, pull it back (digests and
// content compared), and are refused a pull from secret/thing (no grant: NAME_UNKNOWN) and a push
// to readonly/lib (pull only: DENIED), which must stay as the admin left them.
func TestAuthClients(t *testing.T) {
	t.Parallel()
	authClients(t, startSecureBerth(t))
}

// authClients is TestAuthClients on b, a berth with authentication on (or the replicas behind a
// load balancer: TestReplicas).
func authClients(t *testing.T, b *berth) {
	admin := basicAuth("admin", b.AdminPassword())
	secret := authRobot(b, "ci", "team/*", "pull,push", "readonly/*", "pull")
	host := b.Addr
	secretImg := authPushImage(t, b, admin, "secret/thing", "v1", "top secret\n")
	roImg := authPushImage(t, b, admin, "readonly/lib", "v1", "read only\n")

	// untouched checks that the refused pushes left readonly/lib as it was.
	untouched := func(t *testing.T, tag string) {
		t.Helper()
		if r := authGetManifest(t, b, admin, "readonly/lib", tag); r.Status != http.StatusNotFound {
			t.Errorf("readonly/lib:%s after a refused push: %s", tag, r)
		}
		if r := authDo(t, http.MethodGet, b.URL()+"/v2/readonly/lib/tags/list", admin, nil); !bytes.Equal(bytes.TrimSpace(r.Body), []byte(`{"name":"readonly/lib","tags":["v1"]}`)) {
			t.Errorf("readonly/lib tags after a refused push: %s", r)
		}
	}
	content := "pushed by a robot\n"

	t.Run("crane", func(t *testing.T) {
		crane := tool(t, "crane")
		dir := t.TempDir()
		clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))
		authRun(t, dir, crane, "auth", "login", host, "-u", "ci", "-p", secret)
		if cfg := string(clReadFile(t, filepath.Join(dir, ".docker", "config.json"))); !strings.Contains(cfg, host) {
			t.Fatalf("crane auth login wrote no entry for %s: %s", host, cfg)
		}
		d := clLastDigest(t, "crane append", authRun(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", host+"/team/crane:v1"))
		authWantManifest(t, b, admin, "team/crane", "v1", d)
		if got := strings.TrimSpace(authRun(t, dir, crane, "digest", host+"/team/crane:v1")); got != d {
			t.Errorf("crane digest = %s, pushed %s", got, d)
		}
		fsTar := authRun(t, dir, crane, "export", host+"/team/crane:v1", "-")
		if got := clTarFile(t, []byte(fsTar), "hello.txt"); got != content {
			t.Errorf("crane export hello.txt = %q, want %q", got, content)
		}
		if got := strings.TrimSpace(authRun(t, dir, crane, "digest", host+"/readonly/lib:v1")); got != roImg.Manifest {
			t.Errorf("crane digest readonly/lib:v1 = %s, want %s", got, roImg.Manifest)
		}
		out := authRunFails(t, dir, crane, "manifest", host+"/secret/thing:v1")
		authMentions(t, "crane manifest secret/thing", out, "NAME_UNKNOWN")
		out = authRunFails(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", host+"/readonly/lib:crane")
		authMentions(t, "crane push to readonly/lib", out, "DENIED")
		untouched(t, "crane")
		// Logged out, the same pull is refused for want of credentials.
		authRun(t, dir, crane, "auth", "logout", host)
		out = authRunFails(t, dir, crane, "digest", host+"/team/crane:v1")
		authMentions(t, "crane digest after logout", out, "UNAUTHORIZED")
		t.Logf("crane: pushed and pulled team/crane:v1 %s; secret/thing refused (NAME_UNKNOWN), readonly/lib push refused (DENIED)", d)
	})

	t.Run("oras", func(t *testing.T) {
		oras := tool(t, "oras")
		dir := t.TempDir()
		clWriteFile(t, filepath.Join(dir, "a.txt"), []byte(content))
		authRun(t, dir, oras, "login", "--plain-http", "-u", "ci", "-p", secret, host)
		if cfg := string(clReadFile(t, filepath.Join(dir, ".docker", "config.json"))); !strings.Contains(cfg, host) {
			t.Fatalf("oras login wrote no entry for %s: %s", host, cfg)
		}
		out := authRun(t, dir, oras, "push", "--plain-http", "--format", "json", host+"/team/oras:v1", "a.txt:text/plain")
		var p struct {
			Digest string `json:"digest"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil || p.Digest == "" {
			t.Fatalf("oras push output: %v\n%s", err, out)
		}
		authWantManifest(t, b, admin, "team/oras", "v1", p.Digest)
		if got := strings.TrimSpace(authRun(t, dir, oras, "resolve", "--plain-http", host+"/team/oras:v1")); got != p.Digest {
			t.Errorf("oras resolve = %s, pushed %s", got, p.Digest)
		}
		authRun(t, dir, oras, "pull", "--plain-http", "-o", "out", host+"/team/oras:v1")
		if got := string(clReadFile(t, filepath.Join(dir, "out", "a.txt"))); got != content {
			t.Errorf("oras pull a.txt = %q, want %q", got, content)
		}
		out = authRunFails(t, dir, oras, "manifest", "fetch", "--plain-http", host+"/secret/thing:v1")
		authMentions(t, "oras manifest fetch secret/thing", out, "not found")
		out = authRunFails(t, dir, oras, "push", "--plain-http", host+"/readonly/lib:oras", "a.txt:text/plain")
		authMentions(t, "oras push to readonly/lib", out, "denied")
		untouched(t, "oras")
		t.Logf("oras: pushed and pulled team/oras:v1 %s; secret/thing and the readonly/lib push refused", p.Digest)
	})

	t.Run("regctl", func(t *testing.T) {
		regctl := tool(t, "regctl")
		dir := t.TempDir()
		layout := "ocidir://" + filepath.Join(dir, "layout")
		clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))
		// set pings the registry and fails on its 401: the login comes next.
		authRun(t, dir, regctl, "registry", "set", host, "--tls", "disabled", "--skip-check")
		authRun(t, dir, regctl, "registry", "login", host, "-u", "ci", "-p", secret)
		if cfg := string(clReadFile(t, filepath.Join(dir, "regctl.json"))); !strings.Contains(cfg, host) {
			t.Fatalf("regctl registry login wrote no entry for %s in REGCTL_CONFIG: %s", host, cfg)
		}
		authRun(t, dir, regctl, "image", "create", layout+":base", "--platform", "linux/amd64")
		authRun(t, dir, regctl, "image", "mod", layout+":base", "--layer-add", "tar=layer.tar", "--create", "img")
		local := strings.TrimSpace(authRun(t, dir, regctl, "image", "digest", layout+":img"))
		authRun(t, dir, regctl, "image", "copy", layout+":img", host+"/team/regctl:v1")
		authWantManifest(t, b, admin, "team/regctl", "v1", local)
		if got := strings.TrimSpace(authRun(t, dir, regctl, "image", "digest", host+"/team/regctl:v1")); got != local {
			t.Errorf("regctl image digest = %s, pushed %s", got, local)
		}
		pulled := "ocidir://" + filepath.Join(dir, "pulled")
		authRun(t, dir, regctl, "image", "copy", host+"/team/regctl:v1", pulled+":v1")
		raw := authRun(t, dir, regctl, "manifest", "get", "--format", "raw-body", pulled+":v1")
		if got := clDigest([]byte(raw)); got != local {
			t.Fatalf("pulled manifest %s, want %s", got, local)
		}
		m := clParse(t, []byte(raw))
		layer := clReadFile(t, filepath.Join(dir, "pulled", "blobs", "sha256", strings.TrimPrefix(m.Layers[0].Digest, "sha256:")))
		if got := clTarFile(t, layer, "hello.txt"); got != content {
			t.Errorf("pulled hello.txt = %q, want %q", got, content)
		}
		out := authRunFails(t, dir, regctl, "manifest", "get", host+"/secret/thing:v1")
		authMentions(t, "regctl manifest get secret/thing", out, "NAME_UNKNOWN")
		out = authRunFails(t, dir, regctl, "image", "copy", layout+":img", host+"/readonly/lib:regctl")
		authMentions(t, "regctl push to readonly/lib", out, "DENIED")
		untouched(t, "regctl")
		t.Logf("regctl: pushed and pulled team/regctl:v1 %s; secret/thing and the readonly/lib push refused", local)
	})

	t.Run("skopeo", func(t *testing.T) {
		skopeo := tool(t, "skopeo")
		dir := t.TempDir()
		src := filepath.Join(dir, "src")
		l := &clLayout{t: t, dir: src}
		img := l.image("linux/amd64", content)
		l.tag("single", img.desc)
		l.finish()
		creds := "ci:" + secret
		sk := func(args ...string) string {
			t.Helper()
			return authRun(t, dir, skopeo, append([]string{"--insecure-policy"}, args...)...)
		}
		df := filepath.Join(dir, "digest")
		sk("copy", "--dest-creds", creds, "--dest-tls-verify=false", "--digestfile", df, "oci:"+src+":single", "docker://"+host+"/team/skopeo:v1")
		if got := strings.TrimSpace(string(clReadFile(t, df))); got != img.desc.Digest {
			t.Fatalf("skopeo pushed %s, the layout has %s", got, img.desc.Digest)
		}
		authWantManifest(t, b, admin, "team/skopeo", "v1", img.desc.Digest)
		raw := sk("inspect", "--raw", "--creds", creds, "--tls-verify=false", "docker://"+host+"/team/skopeo:v1")
		if got := clDigest([]byte(raw)); got != img.desc.Digest {
			t.Errorf("skopeo inspect --raw: digest %s, want %s", got, img.desc.Digest)
		}
		dst := filepath.Join(dir, "dst")
		sk("copy", "--src-creds", creds, "--src-tls-verify=false", "docker://"+host+"/team/skopeo:v1", "oci:"+dst+":v1")
		layer := clReadFile(t, filepath.Join(dst, "blobs", "sha256", strings.TrimPrefix(img.layer, "sha256:")))
		if got := clTarFile(t, layer, "hello.txt"); got != content {
			t.Errorf("pulled hello.txt = %q, want %q", got, content)
		}
		var idx clManifestJSON
		if err := json.Unmarshal(clReadFile(t, filepath.Join(dst, "index.json")), &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != img.desc.Digest {
			t.Errorf("pulled index.json %+v (%v), want %s", idx.Manifests, err, img.desc.Digest)
		}
		out := authRunFails(t, dir, skopeo, "--insecure-policy", "inspect", "--raw", "--creds", creds, "--tls-verify=false", "docker://"+host+"/secret/thing:v1")
		authMentions(t, "skopeo inspect secret/thing", out, "name unknown")
		out = authRunFails(t, dir, skopeo, "--insecure-policy", "copy", "--dest-creds", creds, "--dest-tls-verify=false", "oci:"+src+":single", "docker://"+host+"/readonly/lib:skopeo")
		authMentions(t, "skopeo push to readonly/lib", out, "denied")
		untouched(t, "skopeo")
		t.Logf("skopeo: pushed and pulled team/skopeo:v1 %s; secret/thing and the readonly/lib push refused", img.desc.Digest)
	})

	// Nothing the refused clients did changed secret/thing.
	authWantManifest(t, b, admin, "secret/thing", "v1", secretImg.Manifest)
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/_catalog", basicAuth("ci", secret), nil); !bytes.Contains(r.Body, []byte("team/crane")) || bytes.Contains(r.Body, []byte("secret/thing")) {
		t.Errorf("catalog as robot ci: %s", r)
	}
}

// authChallenge parses a Bearer challenge into its parameters.
func authChallenge(t testing.TB, h string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(h, "Bearer ") {
		t.Fatalf("WWW-Authenticate %q: want a Bearer challenge", h)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(\w+)="([^"]*)"`).FindAllStringSubmatch(h, -1) {
		out[m[1]] = m[2]
	}
	return out
}

// TestAuthDockerLogin emulates docker login and a later docker pull over raw HTTP: GET /v2/ →
// 401 Bearer challenge; GET realm with Basic and offline_token=true → token and refresh token;
// GET /v2/ with the token → 200 (login verified); the pull's 401 names the scope; POST realm
// grant_type=refresh_token → access token → the manifest GET succeeds. A wrong refresh token is
// refused.
func TestAuthDockerLogin(t *testing.T) {
	b := startSecureBerth(t)
	secret := authRobot(b, "dock", "team/*", "pull")
	img := authPushImage(t, b, basicAuth("admin", b.AdminPassword()), "team/app", "v1", "docker login\n")

	r := authDo(t, http.MethodGet, b.URL()+"/v2/", "", nil)
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ without credentials: %s", r)
	}
	ch := authChallenge(t, r.Header.Get("WWW-Authenticate"))
	if ch["realm"] != b.URL()+"/token" || ch["service"] != "berth" {
		t.Fatalf("challenge %v", ch)
	}
	q := url.Values{"service": {ch["service"]}, "client_id": {"docker"}, "offline_token": {"true"}}
	r = authDo(t, http.MethodGet, ch["realm"]+"?"+q.Encode(), basicAuth("dock", secret), nil)
	var login tokenReply
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &login) != nil || login.Token == "" || login.RefreshToken == "" {
		t.Fatalf("GET /token with offline_token=true: %s", r)
	}
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/", bearerAuth(login.Token), nil); r.Status != http.StatusOK {
		t.Fatalf("GET /v2/ with the login token: %s", r)
	}

	// docker pull team/app:v1, with the refresh token docker login stored.
	r = authGetManifest(t, b, "", "team/app", "v1")
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("GET manifest without credentials: %s", r)
	}
	ch = authChallenge(t, r.Header.Get("WWW-Authenticate"))
	if ch["scope"] != "repository:team/app:pull" {
		t.Errorf("challenge scope %q, want repository:team/app:pull", ch["scope"])
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken}, "service": {ch["service"]},
		"scope": {ch["scope"]}, "client_id": {"docker"}}
	r = authDo(t, http.MethodPost, ch["realm"], "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	var tr tokenReply
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tr) != nil || tr.AccessToken == "" {
		t.Fatalf("POST /token grant_type=refresh_token: %s", r)
	}
	if access, _, sub := jwtAccess(t, tr.AccessToken); sub != "robot:dock" || strings.Join(access["repository:team/app"], ",") != "pull" {
		t.Errorf("refreshed token: sub %q access %v, want robot:dock with pull on team/app", sub, access)
	}
	authWantManifest(t, b, bearerAuth(tr.AccessToken), "team/app", "v1", img.Manifest)
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/team/app/blobs/"+img.Layer, bearerAuth(tr.AccessToken), nil); r.Status != http.StatusOK || clDigest(r.Body) != img.Layer {
		t.Errorf("GET layer with the refreshed token: %d", r.Status)
	}

	form.Set("refresh_token", "berth_rft_not-a-real-one")
	if r := authDo(t, http.MethodPost, ch["realm"], "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded"); r.Status != http.StatusUnauthorized {
		t.Errorf("POST /token with a wrong refresh token: %s, want 401", r)
	}
	t.Logf("docker login flow: challenge, login with refresh token, refresh for %s, pull %s", ch["scope"], img.Manifest)
}

// TestAuthECS emulates the ECS agent's repositoryCredentials: a robot with pull on team/* whose
// credentials are only Basic (a DOCKER_CONFIG auths entry, as the agent hands them to its pull
// library), and plain Basic on /v2/ requests as a simple HTTP client sends.
func TestAuthECS(t *testing.T) {
	crane := tool(t, "crane")
	b := startSecureBerth(t)
	secret := authRobot(b, "ecs-prod", "team/*", "pull")
	admin := basicAuth("admin", b.AdminPassword())
	img := authPushImage(t, b, admin, "team/app", "v1", "ecs task image\n")
	authPushImage(t, b, admin, "secret/thing", "v1", "not for ecs\n")

	dir := t.TempDir()
	authClientEnv(dir)
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, b.Addr, base64.StdEncoding.EncodeToString([]byte("ecs-prod:"+secret)))
	clWriteFile(t, filepath.Join(dir, ".docker", "config.json"), []byte(cfg))
	if got := strings.TrimSpace(authRun(t, dir, crane, "digest", b.Addr+"/team/app:v1")); got != img.Manifest {
		t.Errorf("crane digest with Basic auths entry = %s, want %s", got, img.Manifest)
	}
	authRun(t, dir, crane, "pull", b.Addr+"/team/app:v1", "img.tar")
	if fi, err := os.Stat(filepath.Join(dir, "img.tar")); err != nil || fi.Size() == 0 {
		t.Errorf("crane pull wrote no image: %v", err)
	}
	authMentions(t, "crane digest secret/thing", authRunFails(t, dir, crane, "digest", b.Addr+"/secret/thing:v1"), "NAME_UNKNOWN")
	authMentions(t, "crane push as ecs robot", authRunFails(t, dir, crane, "copy", b.Addr+"/team/app:v1", b.Addr+"/team/app:copy"), "DENIED")

	basic := basicAuth("ecs-prod", secret)
	authWantManifest(t, b, basic, "team/app", "v1", img.Manifest)
	if r := authDo(t, http.MethodHead, b.URL()+"/v2/team/app/manifests/v1", basic, nil, "Accept", clAcceptAll); r.Status != http.StatusOK || r.Header.Get("Docker-Content-Digest") != img.Manifest {
		t.Errorf("HEAD manifest with Basic: %d %s", r.Status, r.Header.Get("Docker-Content-Digest"))
	}
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/team/app/blobs/"+img.Layer, basic, nil); r.Status != http.StatusOK || clDigest(r.Body) != img.Layer {
		t.Errorf("GET layer with Basic: %d", r.Status)
	}
	if r := authGetManifest(t, b, basic, "secret/thing", "v1"); r.Status != http.StatusNotFound || r.errorCode() != "NAME_UNKNOWN" {
		t.Errorf("GET secret/thing with Basic: %s, want 404 NAME_UNKNOWN", r)
	}
	wrong := authGetManifest(t, b, basicAuth("ecs-prod", secret+"x"), "team/app", "v1")
	if wrong.Status != http.StatusUnauthorized || wrong.errorCode() != "UNAUTHORIZED" {
		t.Errorf("GET with a wrong secret: %s, want 401 UNAUTHORIZED", wrong)
	}
	// A wrong secret for an existing robot reads as one for an account that does not exist.
	unknown := authGetManifest(t, b, basicAuth("ecs-staging", secret), "team/app", "v1")
	if unknown.Status != wrong.Status || string(unknown.Body) != string(wrong.Body) ||
		unknown.Header.Get("WWW-Authenticate") != wrong.Header.Get("WWW-Authenticate") {
		t.Errorf("unknown account: %s %q; wrong secret: %s %q", unknown, unknown.Header.Get("WWW-Authenticate"), wrong, wrong.Header.Get("WWW-Authenticate"))
	}
}

// TestAuthGrantChanges: a revoked grant stops being granted in new tokens within seconds; a
// removed robot can no longer log in (once its cached login expires) and its refresh tokens die
// at once; rotating the signing keys while berth serves keeps old tokens valid (overlap) and new
// ones working, also across a restart, after which new tokens carry the new key's ID.
func TestAuthGrantChanges(t *testing.T) {
	t.Parallel()
	b := startSecureBerth(t)
	admin := basicAuth("admin", b.AdminPassword())
	revSecret := authRobot(b, "rev", "team/*", "pull")
	goneSecret := authRobot(b, "gone", "team/*", "pull")
	img := authPushImage(t, b, admin, "team/app", "v1", "grant changes\n")
	scope := "repository:team/app:pull"

	t.Run("revoke", func(t *testing.T) {
		tok := authToken(t, b, "rev", revSecret, scope)
		authWantManifest(t, b, bearerAuth(tok), "team/app", "v1", img.Manifest)
		b.Admin("revoke", "robot:rev", "team/*")
		took := authEventually(t, 15*time.Second, "revoked grant leaves new tokens", func() bool {
			access, _, _ := jwtAccess(t, authToken(t, b, "rev", revSecret, scope))
			return len(access["repository:team/app"]) == 0
		})
		newTok := authToken(t, b, "rev", revSecret, scope)
		if r := authGetManifest(t, b, bearerAuth(newTok), "team/app", "v1"); r.Status != http.StatusNotFound || r.errorCode() != "NAME_UNKNOWN" {
			t.Errorf("GET with a token issued after the revoke: %s, want 404 NAME_UNKNOWN", r)
		}
		if r := authGetManifest(t, b, basicAuth("rev", revSecret), "team/app", "v1"); r.Status != http.StatusNotFound {
			t.Errorf("GET with Basic after the revoke: %s, want 404", r)
		}
		// A token handed out before the revoke is judged against the grants of now too
		// (TestRevocationRealClock times it).
		if old := authGetManifest(t, b, bearerAuth(tok), "team/app", "v1"); old.Status != http.StatusNotFound {
			t.Errorf("GET with a token issued before the revoke, after it reached new tokens: %s, want 404", old)
		}
		t.Logf("revoke reached new tokens after %v", took.Round(100*time.Millisecond))
	})

	t.Run("robot-rm", func(t *testing.T) {
		q := url.Values{"service": {"berth"}, "offline_token": {"true"}}
		r := authDo(t, http.MethodGet, b.URL()+"/token?"+q.Encode(), basicAuth("gone", goneSecret), nil)
		var login tokenReply
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &login) != nil || login.RefreshToken == "" {
			t.Fatalf("login of robot gone: %s", r)
		}
		b.Admin("robot", "rm", "gone")
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken}, "service": {"berth"}, "scope": {scope}}
		if r := authDo(t, http.MethodPost, b.URL()+"/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded"); r.Status != http.StatusUnauthorized {
			t.Errorf("refresh token of a removed robot: %s, want 401", r)
		}
		took := authEventually(t, 15*time.Second, "removed robot cannot log in", func() bool {
			r, _ := authTokenResp(t, b, "gone", goneSecret, scope)
			return r.Status == http.StatusUnauthorized
		})
		if r := authGetManifest(t, b, basicAuth("gone", goneSecret), "team/app", "v1"); r.Status != http.StatusUnauthorized {
			t.Errorf("Basic GET as a removed robot: %s, want 401", r)
		}
		t.Logf("robot rm: refresh token refused at once, logins refused after %v (the login cache)", took.Round(100*time.Millisecond))
	})

	t.Run("keys-rotate", func(t *testing.T) {
		kimPass := strings.TrimSpace(b.Admin("user", "add", "kim"))
		b.Admin("grant", "user:kim", "team/*", "pull")
		var before string
		authEventually(t, 10*time.Second, "grant for kim", func() bool {
			before = authToken(t, b, "kim", kimPass, scope)
			access, _, _ := jwtAccess(t, before)
			return len(access["repository:team/app"]) > 0
		})
		_, oldKid, _ := jwtAccess(t, before)
		newKid := strings.TrimSpace(b.Admin("keys", "rotate"))
		if newKid == "" || newKid == oldKid {
			t.Fatalf("keys rotate printed %q (old key %s)", newKid, oldKid)
		}
		if list := b.Admin("keys", "list"); !strings.Contains(list, newKid) || !strings.Contains(list, oldKid) || !strings.Contains(list, "verifies until") {
			t.Errorf("keys list after rotate:\n%s", list)
		}
		authWantManifest(t, b, bearerAuth(before), "team/app", "v1", img.Manifest)
		authWantManifest(t, b, bearerAuth(authToken(t, b, "kim", kimPass, scope)), "team/app", "v1", img.Manifest)
		b.Restart()
		after := authToken(t, b, "kim", kimPass, scope)
		if _, kid, _ := jwtAccess(t, after); kid != newKid {
			t.Errorf("token after restart signed by %s, want the rotated key %s", kid, newKid)
		}
		authWantManifest(t, b, bearerAuth(after), "team/app", "v1", img.Manifest)
		authWantManifest(t, b, bearerAuth(before), "team/app", "v1", img.Manifest)
		t.Logf("rotated %s -> %s: the older token still works, new tokens are signed by %s", oldKid, newKid, newKid)
	})
}

// TestAuthAudit: with auth.audit_log set, the server and the CLI (given the same --config) append
// JSON lines for a push, a delete, a login failure, a token issue and grant changes, in a file
// only the owner can read, with no password, secret or token in it.
func TestAuthAudit(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "audit.jsonl")
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte("auth:\n  audit_log: "+logFile+"\n"))
	b := startSecureBerth(t, "--config", cfg)
	adminPass := b.AdminPassword()
	secret := strings.TrimSpace(b.Admin("robot", "add", "auditor", "--config", cfg))
	b.Admin("grant", "robot:auditor", "team/*", "pull,push,delete", "--config", cfg)
	basic := basicAuth("auditor", secret)

	img := authPushImage(t, b, basic, "team/app", "v1", "audited\n")
	if r := authDo(t, http.MethodDelete, b.URL()+"/v2/team/app/manifests/"+img.Manifest, basic, nil); r.Status != http.StatusAccepted {
		t.Fatalf("DELETE manifest: %s", r)
	}
	const wrong = "wrong-password-for-audit"
	if r, _ := authTokenResp(t, b, "auditor", wrong); r.Status != http.StatusUnauthorized {
		t.Fatalf("GET /token with a wrong secret: %s", r)
	}
	tok := authToken(t, b, "auditor", secret, "repository:team/app:pull")
	q := url.Values{"service": {"berth"}, "offline_token": {"true"}}
	var login tokenReply
	r := authDo(t, http.MethodGet, b.URL()+"/token?"+q.Encode(), basicAuth("admin", adminPass), nil)
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &login) != nil || login.RefreshToken == "" {
		t.Fatalf("admin login with offline_token: %s", r)
	}
	b.Admin("revoke", "robot:auditor", "team/*", "delete", "--config", cfg)

	type line struct {
		Msg        string `json:"msg"`
		Repository string `json:"repository"`
		Digest     string `json:"digest"`
		Subject    string `json:"subject"`
		User       string `json:"user"`
		Pattern    string `json:"pattern"`
		Actions    string `json:"actions"`
		By         string `json:"by"`
	}
	var lines []line
	var raw []byte
	authEventually(t, 5*time.Second, "audit lines", func() bool {
		raw = clReadFile(t, logFile)
		lines = lines[:0]
		for _, l := range clLines(string(raw)) {
			var x line
			if err := json.Unmarshal([]byte(l), &x); err != nil {
				t.Fatalf("audit line is not JSON: %v: %s", err, l)
			}
			lines = append(lines, x)
		}
		return strings.Contains(string(raw), `"grant revoked"`)
	})
	find := func(what string, match func(line) bool) {
		t.Helper()
		for _, l := range lines {
			if match(l) {
				return
			}
		}
		t.Errorf("no audit line for %s in:\n%s", what, raw)
	}
	find("the push", func(l line) bool {
		return l.Msg == "push" && l.Repository == "team/app" && l.Digest == img.Manifest && l.Subject == "robot:auditor"
	})
	find("the delete", func(l line) bool {
		return strings.HasPrefix(l.Msg, "delete") && l.Repository == "team/app" && l.Digest == img.Manifest
	})
	find("the login failure", func(l line) bool { return l.Msg == "login failed" && l.User == "auditor" })
	find("the token issue", func(l line) bool { return l.Msg == "token issued" && l.Subject == "robot:auditor" })
	find("the CLI's grant", func(l line) bool {
		return l.Msg == "grant added" && l.Subject == "robot:auditor" && l.Pattern == "team/*" && l.Actions == "pull,push,delete" && strings.HasPrefix(l.By, "cli")
	})
	find("the CLI's revoke", func(l line) bool {
		return l.Msg == "grant revoked" && l.Subject == "robot:auditor" && l.Actions == "delete"
	})
	find("the CLI's robot add", func(l line) bool { return l.Msg == "account created" })
	for what, s := range map[string]string{"admin password": adminPass, "robot secret": secret, "wrong password": wrong,
		"token": tok, "refresh token": login.RefreshToken, "login token": login.Token} {
		if strings.Contains(string(raw), s) {
			t.Errorf("the audit log contains the %s", what)
		}
	}
	for _, part := range []string{strings.Split(tok, ".")[2], strings.TrimPrefix(secret, "berth_rbt_")} {
		if strings.Contains(string(raw), part) {
			t.Errorf("the audit log contains part of a secret: %s", part)
		}
	}
	if fi, err := os.Stat(logFile); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("audit log mode: %v %v, want readable by the owner only", fi.Mode(), err)
	}
	t.Logf("%d audit lines, with push, delete, login failure, token issue and CLI grant changes, no secrets", len(lines))
}

// TestAuthThrottleRefresh: wrong refresh tokens count against the address they come from, not
// against every refresh token: after six wrong ones (below the address's 20), a valid refresh
// token still works, so that nobody can lock every docker login session out by sending garbage.
func TestAuthThrottleRefresh(t *testing.T) {
	b := startSecureBerth(t)
	secret := authRobot(b, "refresher", "team/*", "pull")
	q := url.Values{"service": {"berth"}, "offline_token": {"true"}}
	var login tokenReply
	if r := authDo(t, http.MethodGet, b.URL()+"/token?"+q.Encode(), basicAuth("refresher", secret), nil); r.Status != http.StatusOK ||
		json.Unmarshal(r.Body, &login) != nil || login.RefreshToken == "" {
		t.Fatalf("login with offline_token: %s", r)
	}
	refresh := func(tok string) authResp {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "service": {"berth"}}
		return authDo(t, http.MethodPost, b.URL()+"/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 1; i <= 6; i++ {
		if r := refresh(fmt.Sprintf("berth_rft_wrong-%d", i)); r.Status != http.StatusUnauthorized {
			t.Fatalf("wrong refresh token %d: %s, want 401", i, r)
		}
	}
	if r := refresh(login.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("valid refresh token after 6 wrong ones (of anyone): %s, want 200", r)
	}
}
