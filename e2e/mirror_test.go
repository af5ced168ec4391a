package e2e

// The root mirror (proxy.mirror, Docker Engine's registry-mirrors) with authentication on
// (issue 8, items 5, 14, 15): refusals that do not tell private repositories from names nobody
// uses, pushes of new private repositories while the mirror's upstream is down, slow or rate
// limited, and the grants mirror requests are authorized against.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

const mirrorConfig = `proxy:
  defaults: false
  mirror: docker-hub
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      hosts: [docker.io, registry-1.docker.io, index.docker.io]
      revalidate: always
`

// mirrorStart starts a hub and a berth with authentication on, mirroring the hub at its root.
func mirrorStart(t *testing.T, secure bool) (*hubemu.Hub, *berth) {
	t.Helper()
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(mirrorConfig, hub.RegistryURL())))
	var b *berth
	if secure {
		b = startSecureBerth(t, "--config", cfg)
	} else {
		b = startBerth(t, "--config", cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth log:\n%s", b.Log())
		}
	})
	return hub, b
}

// mirrorSame checks that two responses for two repository names are the same refusal: status,
// error code, message and challenge, with the names swapped.
func mirrorSame(t *testing.T, what string, a, b authResp, nameA, nameB string) {
	t.Helper()
	norm := func(r authResp, name string) string {
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		json.Unmarshal(r.Body, &e)
		h := strings.ReplaceAll(r.Header.Get("WWW-Authenticate"), name, "NAME")
		return fmt.Sprintf("%d %v %q", r.Status, e.Errors, h)
	}
	na, nb := norm(a, nameA), strings.ReplaceAll(norm(b, nameB), nameB, nameA)
	na = strings.ReplaceAll(na, nameA, "NAME")
	nb = strings.ReplaceAll(nb, nameA, "NAME")
	if na != nb {
		t.Errorf("%s: the private repository and a name nobody uses are told apart:\n  %s: %s\n  %s: %s", what, nameA, na, nameB, nb)
	}
	if a.Status == http.StatusOK || a.Status/100 == 5 {
		t.Errorf("%s: %s, want a refusal", what, a)
	}
}

// TestMirrorPrivateNames (item 5): with the root mirror on and anonymous pull granted on its
// prefix, a private repository and a name nobody uses get the same answers at the root, for
// anonymous callers, for a robot with Basic credentials and for a robot with a token: manifest
// GET and HEAD, tag list, and a GET of the private repository's blob by digest. Before, the
// private repository answered 401 and the unused name 404 "not in the cache".
func TestMirrorPrivateNames(t *testing.T) {
	_, b := mirrorStart(t, true)
	admin := basicAuth("admin", b.AdminPassword())
	img := authPushImage(t, b, admin, "private/secret-project", "v1", "secret\n")
	b.Admin("grant", "anonymous", "docker-hub/*", "pull")
	viewer := authRobot(b, "viewer", "docker-hub/*", "pull")
	const private, unused = "private/secret-project", "private/does-not-exist"
	authEventually(t, 5*time.Second, "the grants", func() bool {
		return authDo(t, http.MethodGet, b.URL()+"/v2/library/x/tags/list", "", nil).Status != http.StatusUnauthorized
	})
	callers := []struct {
		name  string
		authz func(repo string) string
	}{
		{"anonymous", func(string) string { return "" }},
		{"robot with Basic", func(string) string { return basicAuth("viewer", viewer) }},
		{"robot with a token", func(repo string) string {
			return bearerAuth(authToken(t, b, "viewer", viewer, "repository:"+repo+":pull"))
		}},
	}
	requests := []struct{ method, path string }{
		{http.MethodGet, "/manifests/v1"},
		{http.MethodHead, "/manifests/v1"},
		{http.MethodGet, "/tags/list"},
		{http.MethodGet, "/blobs/" + img.Layer},
	}
	for _, c := range callers {
		for _, rq := range requests {
			a := authDo(t, rq.method, b.URL()+"/v2/"+private+rq.path, c.authz(private), nil, "Accept", clAcceptAll)
			u := authDo(t, rq.method, b.URL()+"/v2/"+unused+rq.path, c.authz(unused), nil, "Accept", clAcceptAll)
			mirrorSame(t, c.name+" "+rq.method+" "+rq.path, a, u, private, unused)
			t.Logf("%s %s %s: %s", c.name, rq.method, rq.path, a)
		}
	}
	// Who may pull it still gets berth's own repository at the root.
	authWantManifest(t, b, admin, private, "v1", img.Manifest)
}

// TestMirrorGrants (item 15): requests at the root mirror are authorized against the rule's
// repository (docker-hub/library/nginx for /v2/library/nginx/...): a grant on docker-hub/*
// covers them, one on library/* does not, and the refusal says which repository it was judged on.
// Anonymous callers and a robot, over raw HTTP and with crane.
func TestMirrorGrants(t *testing.T) {
	hub, b := mirrorStart(t, true)
	img := ptImage(t, hub, "library/nginx", "1.27")
	fleet := authRobot(b, "fleet", "docker-hub/*", "pull,fetch")
	wrong := authRobot(b, "wrong", "library/*", "pull,fetch")
	authEventually(t, 5*time.Second, "the grants", func() bool {
		return authGetManifest(t, b, basicAuth("fleet", fleet), "library/nginx", "1.27").Status == http.StatusOK
	})

	// Anonymous, no grant: a challenge for the name the client used, and a message naming the
	// repository grants apply to.
	r := authGetManifest(t, b, "", "library/nginx", "1.27")
	if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `scope="repository:library/nginx:pull"`) ||
		!strings.Contains(string(r.Body), "docker-hub/library/nginx") {
		t.Errorf("anonymous without a grant: %s %q, want 401 for library/nginx naming docker-hub/library/nginx", r, r.Header.Get("WWW-Authenticate"))
	}
	// The robot with a grant on library/*: refused, told where grants apply.
	tok := authToken(t, b, "wrong", wrong, "repository:library/nginx:pull")
	for what, authz := range map[string]string{"Basic": basicAuth("wrong", wrong), "token": bearerAuth(tok)} {
		r := authGetManifest(t, b, authz, "library/nginx", "1.27")
		if r.Status != http.StatusNotFound || !strings.Contains(string(r.Body), "docker-hub/library/nginx") {
			t.Errorf("robot with library/* (%s): %s, want 404 naming docker-hub/library/nginx", what, r)
		}
	}
	// The robot with docker-hub/*: a real client pulls through the root.
	crane := tool(t, "crane")
	dir := t.TempDir()
	authRun(t, dir, crane, "auth", "login", b.Addr, "-u", "fleet", "-p", fleet)
	if got := strings.TrimSpace(authRun(t, dir, crane, "digest", b.Addr+"/library/nginx:1.27")); got != img.Digest {
		t.Errorf("crane digest through the root mirror as fleet: %s, want %s", got, img.Digest)
	}
	authRun(t, dir, crane, "auth", "login", b.Addr, "-u", "wrong", "-p", wrong)
	out := authRunFails(t, dir, crane, "digest", b.Addr+"/library/nginx:1.27")
	authMentions(t, "crane digest as the robot with library/*", out, "docker-hub/library/nginx")

	// Anonymous pulls for a Docker Engine fleet: the grant is on the rule's prefix.
	b.Admin("grant", "anonymous", "docker-hub/*", "pull,fetch")
	authEventually(t, 5*time.Second, "the anonymous grant", func() bool {
		return authGetManifest(t, b, "", "library/nginx", "1.27").Status == http.StatusOK
	})
	atok := authToken(t, b, "", "", "repository:library/nginx:pull")
	authWantManifest(t, b, bearerAuth(atok), "library/nginx", "1.27", img.Digest)
	if out, _, err := authExec(t.TempDir(), crane, "digest", b.Addr+"/library/nginx:1.27"); err != nil || strings.TrimSpace(out) != img.Digest {
		t.Errorf("crane digest anonymously: %q %v, want %s", out, err, img.Digest)
	}
}

// TestMirrorPushWhileUpstreamDown (item 14): with the root mirror on and its upstream down, slow
// or rate limited, crane, oras, regctl and skopeo push new private repositories at the root (each
// asks for the manifest first, which the mirror must not answer), while pulls through the mirror
// keep their rule: a cached image is served, an uncached one gets 503 (429 when rate limited),
// never a 404. The same push in --dev mode, where clients send no token.
func TestMirrorPushWhileUpstreamDown(t *testing.T) {
	hub, b := mirrorStart(t, true)
	ptImage(t, hub, "library/cached", "1.0")
	ptImage(t, hub, "library/uncached", "1.0")
	ci := authRobot(b, "ci", "team/*", "pull,push", "docker-hub/*", "pull,fetch")
	authEventually(t, 5*time.Second, "the grants", func() bool {
		return authGetManifest(t, b, basicAuth("ci", ci), "library/cached", "1.0").Status == http.StatusOK
	})
	pull := func(what, repo string, want int, code string) {
		t.Helper()
		tok := authToken(t, b, "ci", ci, "repository:library/"+repo+":pull")
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r := authDo(t, method, b.URL()+"/v2/library/"+repo+"/manifests/1.0", bearerAuth(tok), nil, "Accept", clAcceptAll)
			if r.Status != want || (method == http.MethodGet && code != "" && r.errorCode() != code) {
				t.Errorf("%s: %s library/%s:1.0: %s, want %d %s", what, method, repo, r, want, code)
			}
		}
	}
	for _, phase := range []struct {
		name  string
		fault func()
		miss  int
		code  string
	}{
		{"down", func() { hub.SetFault(hubemu.Fault{Kind: hubemu.Down}) }, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"rate limited", func() { hub.SetFault(hubemu.Fault{Kind: hubemu.Status5xx, Status: 429}) }, http.StatusTooManyRequests, "TOOMANYREQUESTS"},
		{"slow", func() { hub.SetFault(hubemu.Fault{Kind: hubemu.Slow, Delay: time.Minute}) }, 0, ""},
	} {
		t.Run(phase.name, func(t *testing.T) {
			phase.fault()
			defer hub.SetFault()
			tag := strings.ReplaceAll(phase.name, " ", "-")
			for _, c := range []string{"crane", "oras", "regctl", "skopeo"} {
				start := time.Now()
				d := mirrorPush(t, b, c, "ci", ci, "team/"+c+"-"+tag+":v1")
				authWantManifest(t, b, basicAuth("ci", ci), "team/"+c+"-"+tag, "v1", d)
				t.Logf("%s pushed team/%s-%s:v1 with the upstream %s in %v", c, c, tag, phase.name, time.Since(start).Round(time.Millisecond))
			}
			if phase.miss != 0 {
				pull("a cached image with the upstream "+phase.name, "cached", http.StatusOK, "")
				pull("an uncached image with the upstream "+phase.name, "uncached", phase.miss, phase.code)
			}
		})
	}
	t.Run("dev", func(t *testing.T) {
		hub, b := mirrorStart(t, false)
		ptImage(t, hub, "library/cached", "1.0")
		hub.SetFault(hubemu.Fault{Kind: hubemu.Down})
		d := mirrorPush(t, b, "crane", "", "", "team/dev:v1")
		if r := authGetManifest(t, b, "", "team/dev", "v1"); r.Status != http.StatusOK || clDigest(r.Body) != d {
			t.Errorf("team/dev:v1 after the push: %s", r)
		}
		// Without a token the mirror's failure answers a HEAD as berth's own repository would
		// (the push asks it); a GET keeps the upstream's reason.
		if r := authDo(t, http.MethodGet, b.URL()+"/v2/library/uncached/manifests/1.0", "", nil); r.Status != http.StatusServiceUnavailable {
			t.Errorf("dev GET of an uncached image with the upstream down: %s, want 503", r)
		}
	})
}

// mirrorPush pushes a new one-layer image to host/ref with a real client logged in as user
// (none in --dev mode), and returns its manifest digest.
func mirrorPush(t *testing.T, b *berth, client, user, pass, ref string) string {
	t.Helper()
	dir := t.TempDir()
	bin := tool(t, client)
	content := "pushed by " + client + " to " + ref + "\n"
	dst := b.Addr + "/" + ref
	switch client {
	case "crane":
		if user != "" {
			authRun(t, dir, bin, "auth", "login", b.Addr, "-u", user, "-p", pass)
		}
		clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))
		return clLastDigest(t, "crane append", authRun(t, dir, bin, "append", "--oci-empty-base", "-f", "layer.tar", "-t", dst))
	case "oras":
		authRun(t, dir, bin, "login", "--plain-http", "-u", user, "-p", pass, b.Addr)
		clWriteFile(t, filepath.Join(dir, "a.txt"), []byte(content))
		out := authRun(t, dir, bin, "push", "--plain-http", "--format", "json", dst, "a.txt:text/plain")
		var p struct {
			Digest string `json:"digest"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil || p.Digest == "" {
			t.Fatalf("oras push output: %v\n%s", err, out)
		}
		return p.Digest
	case "regctl":
		authRun(t, dir, bin, "registry", "set", b.Addr, "--tls", "disabled", "--skip-check")
		authRun(t, dir, bin, "registry", "login", b.Addr, "-u", user, "-p", pass)
		layout := "ocidir://" + filepath.Join(dir, "layout")
		clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))
		authRun(t, dir, bin, "image", "create", layout+":base", "--platform", "linux/amd64")
		authRun(t, dir, bin, "image", "mod", layout+":base", "--layer-add", "tar=layer.tar", "--create", "img")
		d := strings.TrimSpace(authRun(t, dir, bin, "image", "digest", layout+":img"))
		authRun(t, dir, bin, "image", "copy", layout+":img", dst)
		return d
	case "skopeo":
		src := filepath.Join(dir, "src")
		l := &clLayout{t: t, dir: src}
		img := l.image("linux/amd64", content)
		l.tag("single", img.desc)
		l.finish()
		authRun(t, dir, bin, "--insecure-policy", "copy", "--dest-creds", user+":"+pass, "--dest-tls-verify=false",
			"oci:"+src+":single", "docker://"+dst)
		return img.desc.Digest
	}
	t.Fatalf("no client %s", client)
	return ""
}
