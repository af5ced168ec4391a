package e2e

// Pull-through cache tests with real clients: crane, skopeo, oras and regctl pull THROUGH berth
// from the Docker Hub emulator (internal/hubemu), and the emulator's request counts prove the
// cache semantics of DESIGN.md §4. Every assertion is on digests (what came back is what was
// pushed upstream) and on what reached the upstream (manifest and blob GETs and HEADs), never
// only on a client's exit status.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
)

// ptClientTimeout bounds one client command here: everything is on 127.0.0.1 and small, so a
// pull that takes longer is stuck (or retrying), and the test must say so quickly.
const ptClientTimeout = 20 * time.Second

// ptEnv is a hub emulator and a berth process pulling through from it with two rules on the same
// upstream: docker-hub (revalidate: always: a HEAD per tag pull) and hub-ttl (ttl:24h: nothing
// upstream for a tag checked within a day).
type ptEnv struct {
	hub *hubemu.Hub
	b   *berth
	dir string // the clients' working directory and HOME
	cfg string // berth's configuration file
}

const ptConfig = `log:
  level: debug
proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %[1]s
      docker_hub: true
      hosts: [docker.io, registry-1.docker.io, index.docker.io]
      revalidate: always
      max_staleness: 720h
      quota_reserve: 0
    - prefix: hub-ttl
      upstream: %[1]s
      docker_hub: true
      revalidate: ttl:24h
%[2]s`

// ptStart starts a hub (its realm on the registry's own host:port, which crane requires) and
// berth in front of it. extra is appended to the configuration file.
func ptStart(t *testing.T, opts hubemu.Options, extra string) *ptEnv {
	t.Helper()
	opts.RealmOnRegistry = true
	hub, err := hubemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(ptConfig, hub.RegistryURL(), extra)))
	b := startBerth(t, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth log:\n%s", b.Log())
		}
	})
	return &ptEnv{hub: hub, b: b, dir: dir, cfg: cfg}
}

// --- what reached the upstream ---

// ptDelta is after - before for every counter (not the per-repository map).
func ptDelta(before, after hubemu.Counts) hubemu.Counts {
	return hubemu.Counts{
		ManifestGet: after.ManifestGet - before.ManifestGet, ManifestHead: after.ManifestHead - before.ManifestHead,
		BlobGet: after.BlobGet - before.BlobGet, BlobHead: after.BlobHead - before.BlobHead,
		TagList: after.TagList - before.TagList, Base: after.Base - before.Base, Other: after.Other - before.Other,
		Token: after.Token - before.Token, CDNGet: after.CDNGet - before.CDNGet, Pulls: after.Pulls - before.Pulls,
		Rejected429: after.Rejected429 - before.Rejected429, Unauthorized: after.Unauthorized - before.Unauthorized,
		Faulted: after.Faulted - before.Faulted, BlobBytes: after.BlobBytes - before.BlobBytes,
	}
}

func ptFmt(c hubemu.Counts) string {
	return fmt.Sprintf("manifest GET %d HEAD %d, blob GET %d HEAD %d, tags %d, /v2/ %d, other %d, token %d, 401 %d, 429 %d",
		c.ManifestGet, c.ManifestHead, c.BlobGet, c.BlobHead, c.TagList, c.Base, c.Other, c.Token, c.Unauthorized, c.Rejected429)
}

// ptNothing reports whether c counts no request at all.
func ptNothing(c hubemu.Counts) bool {
	return c.ManifestGet == 0 && c.ManifestHead == 0 && c.BlobGet == 0 && c.BlobHead == 0 && c.TagList == 0 &&
		c.Base == 0 && c.Other == 0 && c.Token == 0 && c.CDNGet == 0 && c.Unauthorized == 0 && c.Rejected429 == 0
}

// measure runs fn and returns what reached the upstream meanwhile.
func (e *ptEnv) measure(fn func()) hubemu.Counts {
	before := e.hub.Counts()
	fn()
	return ptDelta(before, e.hub.Counts())
}

// status is berth's GET /berth/v1/upstreams entry for a rule prefix.
func (e *ptEnv) status(t *testing.T, prefix string) proxy.Status {
	t.Helper()
	code, _, body := clGet(t, e.b.URL()+"/berth/v1/upstreams", "")
	if code != http.StatusOK {
		t.Fatalf("GET /berth/v1/upstreams: %d %s", code, body)
	}
	var s struct {
		Upstreams []proxy.Status `json:"upstreams"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("GET /berth/v1/upstreams: %v: %s", err, body)
	}
	for _, u := range s.Upstreams {
		if u.Prefix == prefix {
			return u
		}
	}
	t.Fatalf("GET /berth/v1/upstreams has no %s: %s", prefix, body)
	return proxy.Status{}
}

// --- images on the hub ---

// ptImage pushes a linux/amd64 image of two tar layers (file.txt in each, content from the
// names) to the hub.
func ptImage(t *testing.T, hub *hubemu.Hub, repo, tag string) hubemu.Image {
	t.Helper()
	var layers [][]byte
	for i := range 2 {
		layers = append(layers, clTar(t, map[string]string{"file.txt": fmt.Sprintf("%s:%s layer %d\n", repo, tag, i)}))
	}
	img, err := hub.PushImage(repo, tag, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func ptIndex(t *testing.T, hub *hubemu.Hub, repo, tag string) hubemu.Image {
	t.Helper()
	idx, err := hub.PushIndex(repo, tag, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// ptChild is the platform image of an index.
func ptChild(t *testing.T, idx hubemu.Image, platform string) hubemu.Image {
	t.Helper()
	for _, c := range idx.Children {
		if c.Platform == platform {
			return c
		}
	}
	t.Fatalf("index %s has no %s", idx.Digest, platform)
	return hubemu.Image{}
}

// --- clients ---

// ptAll as a platform asks a client for a whole index, every platform.
const ptAll = "all"

// ptClient pulls an image through berth into an OCI image layout with a real client.
type ptClient struct {
	name string
	bin  string // the client's path (tool)
	// pull copies ref (HOST/REPO:TAG or HOST/REPO@DIGEST) into a new OCI layout at layout under
	// the tag "pulled"; with a platform, only that platform's image of an index; with ptAll, the
	// whole index.
	pull func(e *ptEnv, bin, ref, platform, layout string) error
}

// ptExec runs a client with HOME=e.dir and ptClientTimeout; it returns an error with everything
// the client printed.
func ptExec(e *ptEnv, bin string, args ...string) (string, error) {
	start := time.Now()
	out, err := ptRun(e.dir, bin, args...)
	if err != nil {
		return out, fmt.Errorf("%s %s: %v after %v\n%s", filepath.Base(bin), strings.Join(args, " "), err,
			time.Since(start).Round(time.Millisecond), out)
	}
	return out, nil
}

// ptRun is runEnv with a deadline: HOME=dir, combined output.
func ptRun(dir, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ptClientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+filepath.Join(dir, ".docker"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", ptClientTimeout, err)
	}
	return out.String(), err
}

// ptClientDefs are the clients, without their paths.
var ptClientDefs = []ptClient{
	{name: "crane", pull: func(e *ptEnv, bin, ref, platform, layout string) error {
		args := []string{"pull", "--format", "oci"}
		if platform != "" && platform != ptAll {
			args = append(args, "--platform", platform)
		}
		_, err := ptExec(e, bin, append(args, ref, layout)...)
		return err
	}},
	{name: "skopeo", pull: func(e *ptEnv, bin, ref, platform, layout string) error {
		args := []string{"--insecure-policy"}
		var all []string
		if platform == ptAll {
			all = []string{"--all"}
		} else if platform != "" {
			goos, goarch, _ := strings.Cut(platform, "/")
			args = append(args, "--override-os", goos, "--override-arch", goarch)
		}
		// --preserve-digests: skopeo fails instead of converting, so that a digest that
		// matches is the upstream's, not a coincidence of a conversion.
		args = append(append(args, "copy", "--preserve-digests", "--src-tls-verify=false"), all...)
		args = append(args, "docker://"+ref, "oci:"+layout+":pulled")
		_, err := ptExec(e, bin, args...)
		return err
	}},
	{name: "oras", pull: func(e *ptEnv, bin, ref, platform, layout string) error {
		args := []string{"cp", "--from-plain-http"}
		if platform != "" && platform != ptAll {
			args = append(args, "--platform", platform)
		}
		_, err := ptExec(e, bin, append(args, ref, "--to-oci-layout", layout+":pulled")...)
		return err
	}},
	{name: "regctl", pull: func(e *ptEnv, bin, ref, platform, layout string) error {
		args := []string{"--host", "reg=" + e.b.Addr + ",tls=disabled", "image", "copy"}
		if platform != "" && platform != ptAll {
			args = append(args, "--platform", platform)
		}
		_, err := ptExec(e, bin, append(args, ref, "ocidir://"+layout+":pulled")...)
		return err
	}},
}

// ptClientByName is one client, which must be installed.
func ptClientByName(t *testing.T, name string) ptClient {
	t.Helper()
	for _, c := range ptClientDefs {
		if c.name == name {
			c.bin = tool(t, name)
			return c
		}
	}
	t.Fatalf("no client %s", name)
	return ptClient{}
}

// ptClients is every client, which must all be installed.
func ptClients(t *testing.T) []ptClient {
	t.Helper()
	var cs []ptClient
	for _, c := range ptClientDefs {
		cs = append(cs, ptClientByName(t, c.name))
	}
	return cs
}

// ptCheckLayout checks that the layout's "pulled" tag is the manifest want (by digest), and that
// everything it references (an index's platform manifests, configs and layers) is in the layout
// with the right bytes: the digests the hub's Push helpers returned.
func ptCheckLayout(t *testing.T, layout string, want hubemu.Image) {
	t.Helper()
	var idx clManifestJSON
	if err := json.Unmarshal(clReadFile(t, filepath.Join(layout, "index.json")), &idx); err != nil {
		t.Fatalf("%s/index.json: %v", layout, err)
	}
	var got []string
	for _, d := range idx.Manifests {
		got = append(got, d.Digest)
	}
	if !slices.Contains(got, want.Digest) {
		t.Fatalf("the pulled layout lists %v, want the manifest %s", got, want.Digest)
	}
	ptCheckBlobs(t, layout, want)
}

func ptCheckBlobs(t *testing.T, layout string, want hubemu.Image) {
	t.Helper()
	blob := func(d string) []byte {
		t.Helper()
		b := clReadFile(t, filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if clDigest(b) != d {
			t.Fatalf("pulled blob %s has digest %s", d, clDigest(b))
		}
		return b
	}
	m := clParse(t, blob(want.Digest))
	if len(want.Children) > 0 {
		var children []string
		for _, c := range m.Manifests {
			children = append(children, c.Digest)
		}
		if len(children) != len(want.Children) {
			t.Fatalf("pulled index %s lists %v, want %d manifests", want.Digest, children, len(want.Children))
		}
		for i, c := range want.Children {
			if children[i] != c.Digest {
				t.Fatalf("pulled index %s lists %v, want %s at %d", want.Digest, children, c.Digest, i)
			}
			ptCheckBlobs(t, layout, c)
		}
		return
	}
	if m.Config == nil || m.Config.Digest != want.Config || len(m.Layers) != len(want.Layers) {
		t.Fatalf("pulled manifest %s: config %+v, layers %+v; want config %s, layers %v", want.Digest, m.Config, m.Layers, want.Config, want.Layers)
	}
	blob(want.Config)
	for i, l := range m.Layers {
		if l.Digest != want.Layers[i] {
			t.Fatalf("pulled layer %d is %s, want %s", i, l.Digest, want.Layers[i])
		}
		blob(l.Digest)
	}
}

// ptPull pulls ref with c into a new layout, checks it is want and returns what reached the
// upstream meanwhile.
func (e *ptEnv) ptPull(t *testing.T, c ptClient, ref, platform string, want hubemu.Image) hubemu.Counts {
	t.Helper()
	layout, err := os.MkdirTemp(e.dir, c.name+"-layout-")
	if err != nil {
		t.Fatal(err)
	}
	var perr error
	start := time.Now()
	d := e.measure(func() { perr = c.pull(e, c.bin, ref, platform, layout) })
	if perr != nil {
		t.Fatal(perr)
	}
	ptCheckLayout(t, layout, want)
	what := ref
	if platform != "" {
		what += " (platform " + platform + ")"
	}
	t.Logf("%s pull %s in %v: upstream %s", c.name, what, time.Since(start).Round(time.Millisecond), ptFmt(d))
	return d
}

// --- the tests ---

func TestPullThroughCrane(t *testing.T)  { ptClientScenario(t, "crane") }
func TestPullThroughSkopeo(t *testing.T) { ptClientScenario(t, "skopeo") }
func TestPullThroughOras(t *testing.T)   { ptClientScenario(t, "oras") }
func TestPullThroughRegctl(t *testing.T) { ptClientScenario(t, "regctl") }

// ptClientScenario: one client pulls, through each rule, an image, one platform of a
// two-platform index, then the whole index, each cold then warm, then the image by digest. Cold
// pulls fetch each manifest and blob once; warm pulls send no manifest or blob GET upstream: one
// manifest HEAD (the tag's revalidation) under "always", nothing at all under "ttl:24h"; a pull by
// digest sends nothing under either.
func ptClientScenario(t *testing.T, name string) {
	c := ptClientByName(t, name)
	e := ptStart(t, hubemu.Options{}, "")
	img := ptImage(t, e.hub, "library/"+name, "1.0")
	idx := ptIndex(t, e.hub, "library/"+name+"-multi", "1.0")
	arm := ptChild(t, idx, "linux/arm64")

	for _, rule := range []string{"docker-hub", "hub-ttl"} {
		t.Run(rule, func(t *testing.T) {
			ttl := rule == "hub-ttl"
			// One-component names are official images: <prefix>/NAME is library/NAME upstream.
			ref := e.b.Addr + "/" + rule + "/" + name + ":1.0"
			multi := e.b.Addr + "/" + rule + "/" + name + "-multi:1.0"
			// Each rule downloads every blob, the second too although the first stored the
			// bytes: an upstream proves it has a blob by sending it (a HEAD is no proof), and
			// what another rule's upstream sent proves nothing about this one's. The store keeps
			// one copy.
			blobs := func(n int64) (gets, heads int64) { return n, 0 }
			before, hubBefore := e.status(t, rule), e.hub.Counts()

			cold := e.ptPull(t, c, ref, "", img)
			gets, heads := blobs(3) // config and two layers
			e.checkCold(t, "cold pull", cold, 1, gets, heads)
			e.checkWarm(t, "warm pull", e.ptPull(t, c, ref, "", img), ttl)

			// The index by tag, the platform's manifest by digest, its config and layer.
			cold = e.ptPull(t, c, multi, "linux/arm64", arm)
			gets, heads = blobs(2)
			e.checkCold(t, "cold pull of linux/arm64 of an index", cold, 2, gets, heads)
			e.checkWarm(t, "warm pull of linux/arm64 of an index", e.ptPull(t, c, multi, "linux/arm64", arm), ttl)

			// The whole index: the index itself is cached (a HEAD under always), linux/amd64 is new.
			cold = e.ptPull(t, c, multi, ptAll, idx)
			gets, heads = blobs(2)
			e.checkCold(t, "pull of the whole index after linux/arm64", cold, 1, gets, heads)
			wantHeads := int64(1)
			if ttl {
				wantHeads = 0
			}
			if cold.ManifestHead != wantHeads {
				t.Errorf("pull of the whole index after linux/arm64: upstream %s; want %d manifest HEAD for the cached index", ptFmt(cold), wantHeads)
			}
			e.checkWarm(t, "warm pull of the whole index", e.ptPull(t, c, multi, ptAll, idx), ttl)

			// By digest: immutable, never asked upstream again, whatever the policy.
			if d := e.ptPull(t, c, e.b.Addr+"/"+rule+"/"+name+"@"+img.Digest, "", img); !ptNothing(d) {
				t.Errorf("pull by digest of a cached image: upstream %s; want nothing", ptFmt(d))
			}

			// berth's own account (/berth/v1/upstreams) agrees with the upstream's.
			after, hub := e.status(t, rule), ptDelta(hubBefore, e.hub.Counts())
			revalidations := after.Cache.Revalidations - before.Cache.Revalidations
			mget := after.Requests.ManifestGets - before.Requests.ManifestGets
			bget := after.Requests.BlobGets - before.Requests.BlobGets
			// berth counts every request it sends, the emulator a request answered 401 only as
			// Unauthorized: the first manifest GET of each rule goes without a token.
			if revalidations != hub.ManifestHead || mget < hub.ManifestGet || mget > hub.ManifestGet+hub.Unauthorized || bget != hub.BlobGet {
				t.Errorf("berth counted %d revalidations, %d manifest GETs, %d blob GETs; the upstream saw %s",
					revalidations, mget, bget, ptFmt(hub))
			}
			t.Logf("%s: upstream in all %s; berth: +%d hits, +%d misses, +%d revalidations", rule, ptFmt(hub),
				after.Cache.Hits-before.Cache.Hits, after.Cache.Misses-before.Cache.Misses, revalidations)
		})
	}
}

// checkCold asserts what a cold pull cost upstream: manifest GETs (a pull each on Docker Hub),
// blob GETs and blob HEADs.
func (e *ptEnv) checkCold(t *testing.T, what string, d hubemu.Counts, manifests, blobGets, blobHeads int64) {
	t.Helper()
	if d.ManifestGet != manifests || d.BlobGet != blobGets || d.BlobHead != blobHeads {
		t.Errorf("%s: upstream %s; want %d manifest GETs, %d blob GETs, %d blob HEADs", what, ptFmt(d), manifests, blobGets, blobHeads)
	}
}

// checkWarm asserts what a warm pull (everything cached) cost upstream: no manifest or blob GET
// ever; under "always" exactly one manifest HEAD (each client here resolves the tag once) and
// nothing else; under "ttl:24h" nothing at all, not even a token.
func (e *ptEnv) checkWarm(t *testing.T, what string, d hubemu.Counts, ttl bool) {
	t.Helper()
	if d.ManifestGet != 0 || d.BlobGet != 0 || d.BlobHead != 0 || d.Pulls != 0 {
		t.Errorf("%s: upstream %s; want no manifest GET, no blob GET or HEAD", what, ptFmt(d))
	}
	switch {
	case ttl && !ptNothing(d):
		t.Errorf("%s under ttl:24h: upstream %s; want nothing at all", what, ptFmt(d))
	case !ttl && (d.ManifestHead != 1 || d.TagList != 0 || d.Other != 0 || d.Base != 0):
		t.Errorf("%s under always: upstream %s; want one manifest HEAD and nothing else", what, ptFmt(d))
	}
}

// ptHTTPPull pulls an image over plain HTTP from berth (base is berth's URL up to /v2/<name>;
// query, if any, is appended to every request): the manifest by tag, then its config and layers,
// each checked against the digests the hub returned.
func ptHTTPPull(t *testing.T, base, query, ref string, want hubemu.Image) {
	t.Helper()
	status, h, body := clGet(t, base+"/manifests/"+ref+query, clAcceptAll)
	if status != http.StatusOK {
		t.Fatalf("GET %s/manifests/%s%s: %d %s", base, ref, query, status, body)
	}
	if clDigest(body) != want.Digest || h.Get("Docker-Content-Digest") != want.Digest {
		t.Fatalf("GET %s/manifests/%s%s: digest %s (header %s), want %s", base, ref, query, clDigest(body), h.Get("Docker-Content-Digest"), want.Digest)
	}
	for _, d := range append([]string{want.Config}, want.Layers...) {
		status, _, b := clGet(t, base+"/blobs/"+d+query, "")
		if status != http.StatusOK || clDigest(b) != d {
			t.Fatalf("GET %s/blobs/%s%s: %d, digest %s", base, d, query, status, clDigest(b))
		}
	}
}

// TestPullThroughMirror: the two mirror modes reach the docker-hub rule and share its cache with
// the path prefix. A containerd-style request (?ns=docker.io on /v2/library/NAME) over plain
// HTTP, and regctl with docker.io mirrored to berth (it adds ?ns=registry-1.docker.io); a Docker
// Engine registry-mirrors style root pull (/v2/library/NAME, no ns) with skopeo's registries.conf
// mirror, with proxy.mirror: docker-hub. Whatever filled the cache, the other entry points then
// send no manifest or blob GET upstream. Private repositories at the root stay berth's own.
func TestPullThroughMirror(t *testing.T) {
	skopeo, regctl, crane := tool(t, "skopeo"), tool(t, "regctl"), tool(t, "crane")
	// proxy.mirror is the root mirror option (internal/config Proxy.Mirror); a berth without it
	// refuses the key (the configuration is strict) and fails to start.
	e := ptStart(t, hubemu.Options{}, "  mirror: docker-hub\n")
	img := ptImage(t, e.hub, "library/mirrored", "1.0")
	idx := ptIndex(t, e.hub, "library/mirrored-multi", "1.0")
	arm := ptChild(t, idx, "linux/arm64")

	clStep(t, "ns-http", func(t *testing.T) {
		d := e.measure(func() { ptHTTPPull(t, e.b.URL()+"/v2/library/mirrored", "?ns=docker.io", "1.0", img) })
		t.Logf("GET /v2/library/mirrored/...?ns=docker.io: upstream %s", ptFmt(d))
		e.checkCold(t, "cold ?ns=docker.io pull", d, 1, 3, 0)
		d = e.measure(func() { ptHTTPPull(t, e.b.URL()+"/v2/library/mirrored", "?ns=docker.io", "1.0", img) })
		e.checkWarm(t, "warm ?ns=docker.io pull", d, false)
	})

	clStep(t, "ns-regctl", func(t *testing.T) {
		// regctl sends docker.io pulls to its mirror first, with ?ns=registry-1.docker.io (the
		// host name it uses for docker.io), which the rule's hosts list as the built-in rule does.
		conf, err := json.Marshal(map[string]any{"hosts": map[string]any{
			"docker.io": map[string]any{"mirrors": []string{e.b.Addr}},
			e.b.Addr:    map[string]any{"tls": "disabled"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		clWriteFile(t, filepath.Join(e.dir, ".regctl", "config.json"), conf)
		c := ptClient{name: "regctl-mirror", bin: regctl, pull: func(e *ptEnv, bin, ref, platform, layout string) error {
			_, err := ptExec(e, bin, "image", "copy", "--platform", platform, ref, "ocidir://"+layout+":pulled")
			return err
		}}
		d := e.ptPull(t, c, "docker.io/library/mirrored-multi:1.0", "linux/arm64", arm)
		e.checkCold(t, "cold regctl pull through the docker.io mirror", d, 2, 2, 0)
		d = e.ptPull(t, c, "docker.io/library/mirrored-multi:1.0", "linux/arm64", arm)
		e.checkWarm(t, "warm regctl pull through the docker.io mirror", d, false)
		os.RemoveAll(filepath.Join(e.dir, ".regctl"))
	})

	clStep(t, "root-skopeo", func(t *testing.T) {
		// As Docker Engine's registry-mirrors: docker.io pulls go to berth's root, no ns.
		regConf := filepath.Join(e.dir, "registries.conf")
		clWriteFile(t, regConf, []byte(fmt.Sprintf(`[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = %q
insecure = true
`, e.b.Addr)))
		c := ptClient{name: "skopeo-mirror", bin: skopeo, pull: func(e *ptEnv, bin, ref, platform, layout string) error {
			args := []string{"--insecure-policy", "--registries-conf", regConf, "copy", "--preserve-digests"}
			if platform == ptAll {
				args = append(args, "--all")
			}
			_, err := ptExec(e, bin, append(args, "docker://"+ref, "oci:"+layout+":pulled")...)
			return err
		}}
		// Cached by the ?ns= pull: a HEAD, no GET.
		d := e.ptPull(t, c, "docker.io/library/mirrored:1.0", "", img)
		e.checkWarm(t, "root mirror pull of an image the ?ns= pull cached", d, false)
		// The index and linux/arm64 came through regctl; linux/amd64 is new.
		d = e.ptPull(t, c, "docker.io/library/mirrored-multi:1.0", ptAll, idx)
		e.checkCold(t, "root mirror pull of the whole index", d, 1, 2, 0)
		d = e.ptPull(t, c, "docker.io/library/mirrored-multi:1.0", ptAll, idx)
		e.checkWarm(t, "warm root mirror pull of the whole index", d, false)
		if s := e.status(t, "docker-hub"); s.Cache.Revalidations == 0 {
			t.Errorf("the docker-hub rule counted no revalidation: %+v", s.Cache)
		}
	})

	clStep(t, "prefix-crane", func(t *testing.T) {
		// The same cache under the path prefix: by tag a HEAD, by digest nothing.
		c := ptClientByName(t, "crane")
		d := e.ptPull(t, c, e.b.Addr+"/docker-hub/mirrored:1.0", "", img)
		e.checkWarm(t, "docker-hub/ pull of what the mirrors cached", d, false)
		d = e.ptPull(t, c, e.b.Addr+"/docker-hub/library/mirrored-multi@"+idx.Digest, ptAll, idx)
		if !ptNothing(d) {
			t.Errorf("docker-hub/ pull by digest of what the mirrors cached: upstream %s; want nothing", ptFmt(d))
		}
	})

	clStep(t, "root-push", func(t *testing.T) {
		// Pushes at the root create berth's own repositories. A push asks first whether the
		// repository has each blob (HEAD): answered from the mirror, the client skips uploading
		// what the upstream has, and the manifest PUT then fails with MANIFEST_BLOB_UNKNOWN. Two
		// copies of upstream images into new root repositories of the same names: one whose blobs
		// the mirror has cached (mirrored), one it never saw (pushcopy, blobs only upstream).
		pushcopy := ptImage(t, e.hub, "library/pushcopy", "1.0")
		for _, c := range []struct {
			name string
			img  hubemu.Image
		}{{"mirrored", img}, {"pushcopy", pushcopy}} {
			// crane reads the source from the hub itself; what berth asked the hub meanwhile is in
			// berth's own counters.
			before := e.status(t, "docker-hub").Requests
			if _, err := ptExec(e, crane, "copy", e.hub.Host()+"/library/"+c.name+":1.0", e.b.Addr+"/"+c.name+":mine"); err != nil {
				t.Fatalf("copying %s to a new root repository with the mirror on: %v", c.name, err)
			}
			after := e.status(t, "docker-hub").Requests
			t.Logf("crane copy library/%s:1.0 from the hub to berth's root %s:mine; berth asked the upstream: %d manifest GETs, %d blob HEADs, %d blob GETs",
				c.name, c.name, after.ManifestGets-before.ManifestGets, after.BlobHeads-before.BlobHeads, after.BlobGets-before.BlobGets)
			if after.BlobHeads != before.BlobHeads || after.BlobGets != before.BlobGets {
				t.Errorf("copy to a new root repository: berth sent %d blob HEADs and %d blob GETs upstream; want none (a push's checks stay local)",
					after.BlobHeads-before.BlobHeads, after.BlobGets-before.BlobGets)
			}
			clManifest(t, e.b, c.name, "mine", c.img.Digest, clOCIManifest)
			for _, b := range append([]string{c.img.Config}, c.img.Layers...) {
				clBlob(t, e.b, c.name, b)
			}
		}
		// A repository pushed to the root is berth's own from then on: reads send nothing upstream.
		clWriteFile(t, filepath.Join(e.dir, "layer.tar"), clTar(t, map[string]string{"f": "private\n"}))
		out, err := ptExec(e, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", e.b.Addr+"/team/app:1")
		if err != nil {
			t.Fatal(err)
		}
		pushed := clLastDigest(t, "crane append", out)
		d := e.measure(func() {
			clManifest(t, e.b, "team/app", "1", pushed, clOCIManifest)
			clManifest(t, e.b, "pushcopy", "mine", pushcopy.Digest, clOCIManifest)
			if out, err := ptExec(e, crane, "digest", e.b.Addr+"/team/app:1"); err != nil || strings.TrimSpace(out) != pushed {
				t.Fatalf("crane digest team/app:1 = %q (%v), pushed %s", out, err, pushed)
			}
		})
		if !ptNothing(d) {
			t.Errorf("reads of root repositories pushed to berth: upstream %s; want nothing", ptFmt(d))
		}
	})
}

// TestPullThroughRestart: the cache survives a restart of berth. After it, pulls by digest with
// every client send nothing upstream, a tag under ttl:24h nothing (the last check is stored), and
// a tag under always one manifest HEAD (and the token a new process needs), no GET.
func TestPullThroughRestart(t *testing.T) {
	clients := ptClients(t)
	e := ptStart(t, hubemu.Options{}, "")
	img := ptImage(t, e.hub, "library/app", "1.0")
	idx := ptIndex(t, e.hub, "library/app-multi", "1.0")
	crane := ptClientByName(t, "crane")
	ref := func(rule, r string) string { return e.b.Addr + "/" + rule + "/app" + r }
	for _, rule := range []string{"docker-hub", "hub-ttl"} {
		e.ptPull(t, crane, ref(rule, ":1.0"), "", img)
		e.ptPull(t, crane, ref(rule, "-multi:1.0"), ptAll, idx)
	}

	e.b.Restart("--config", e.cfg)
	t.Logf("berth restarted on %s", e.b.Addr)

	for _, c := range clients {
		for _, rule := range []string{"docker-hub", "hub-ttl"} {
			if d := e.ptPull(t, c, ref(rule, "@"+img.Digest), "", img); !ptNothing(d) {
				t.Errorf("%s: pull by digest through %s after a restart: upstream %s; want nothing", c.name, rule, ptFmt(d))
			}
			if d := e.ptPull(t, c, ref(rule, "-multi@"+idx.Digest), ptAll, idx); !ptNothing(d) {
				t.Errorf("%s: pull of an index by digest through %s after a restart: upstream %s; want nothing", c.name, rule, ptFmt(d))
			}
		}
	}
	d := e.ptPull(t, crane, ref("hub-ttl", ":1.0"), "", img)
	e.checkWarm(t, "pull by tag under ttl:24h after a restart", d, true)
	d = e.ptPull(t, crane, ref("docker-hub", ":1.0"), "", img)
	if d.ManifestGet != 0 || d.BlobGet != 0 || d.BlobHead != 0 || d.ManifestHead != 1 {
		t.Errorf("pull by tag under always after a restart: upstream %s; want one manifest HEAD, no GET", ptFmt(d))
	}
	if s := e.status(t, "docker-hub"); s.Cache.Misses != 0 {
		t.Errorf("after the restart berth counted %d misses, want 0: %+v", s.Cache.Misses, s.Cache)
	}
}

// TestPullThroughUpstreamFailure: with the hub's pull quota exhausted, and with the hub down,
// every client's pull of a cached tag (an image and one platform of an index) still succeeds with
// the right digests and no manifest or blob GET upstream; berth records stale serves. A tag never
// cached fails with the upstream's reason: 429 TOOMANYREQUESTS with Retry-After, or 503
// UNAVAILABLE, both to plain HTTP and in a client's error. Once the upstream is back, the missing
// tag pulls.
func TestPullThroughUpstreamFailure(t *testing.T) {
	clients := ptClients(t)
	for _, mode := range []string{"quota-exhausted", "down"} {
		t.Run(mode, func(t *testing.T) {
			// A one-minute window bounds the Retry-After the hub sends; a HEAD is refused at zero
			// quota too (as has been seen on Docker Hub), so that revalidation fails.
			e := ptStart(t, hubemu.Options{Limit: 100, Window: time.Minute, HeadLimitedAtZero: true}, "")
			img := ptImage(t, e.hub, "library/app", "1.0")
			idx := ptIndex(t, e.hub, "library/app-multi", "1.0")
			arm := ptChild(t, idx, "linux/arm64")
			next := ptImage(t, e.hub, "library/app", "2.0")
			ref := e.b.Addr + "/docker-hub/app:1.0"
			multi := e.b.Addr + "/docker-hub/app-multi:1.0"
			crane := ptClientByName(t, "crane")
			e.ptPull(t, crane, ref, "", img)
			e.ptPull(t, crane, multi, "linux/arm64", arm)

			if mode == "down" {
				e.hub.SetFault(hubemu.Fault{Kind: hubemu.Down})
			} else {
				e.hub.ExhaustQuota()
			}
			before := e.status(t, "docker-hub").Cache
			for _, c := range clients {
				for _, p := range []struct {
					ref, platform string
					want          hubemu.Image
				}{{ref, "", img}, {multi, "linux/arm64", arm}} {
					d := e.ptPull(t, c, p.ref, p.platform, p.want)
					if d.ManifestGet != 0 || d.BlobGet != 0 || d.Pulls != 0 {
						t.Errorf("%s: cached pull with the upstream %s: upstream %s; want no manifest or blob GET", c.name, mode, ptFmt(d))
					}
				}
			}
			after := e.status(t, "docker-hub").Cache
			stale, saves := after.StaleServes-before.StaleServes, after.QuotaSaves-before.QuotaSaves
			t.Logf("berth: +%d stale serves, +%d quota saves, +%d hits", stale, saves, after.Hits-before.Hits)
			if stale < 1 || stale+saves != 2*int64(len(clients)) {
				t.Errorf("%d tag pulls with the upstream %s: %d stale serves, %d quota saves; want at least one stale serve, one of the two for each",
					2*len(clients), mode, stale, saves)
			}

			// A tag never cached: the upstream's reason, from one upstream request (berth does not retry).
			wantStatus, wantCode := http.StatusServiceUnavailable, "UNAVAILABLE"
			if mode == "quota-exhausted" {
				wantStatus, wantCode = http.StatusTooManyRequests, "TOOMANYREQUESTS"
			}
			var status int
			var h http.Header
			var body []byte
			d := e.measure(func() { status, h, body = clGet(t, e.b.URL()+"/v2/docker-hub/app/manifests/2.0", clAcceptAll) })
			t.Logf("GET of the uncached tag: %d %s Retry-After %q; upstream %s", status, strings.TrimSpace(string(body)), h.Get("Retry-After"), ptFmt(d))
			if status != wantStatus || !strings.Contains(string(body), `"code":"`+wantCode+`"`) {
				t.Errorf("uncached tag with the upstream %s: %d %s; want %d %s", mode, status, body, wantStatus, wantCode)
			}
			if d.ManifestGet != 1 {
				t.Errorf("uncached tag with the upstream %s: upstream %s; want exactly one manifest GET", mode, ptFmt(d))
			}
			if mode == "quota-exhausted" {
				ra, err := time.ParseDuration(h.Get("Retry-After") + "s")
				if err != nil || ra <= 0 || ra > time.Minute {
					t.Errorf("429 with Retry-After %q; want 1 to 60 seconds (the hub's window)", h.Get("Retry-After"))
				}
				if !strings.Contains(string(body), "rate limit") {
					t.Errorf("429 body does not carry the upstream's message: %s", body)
				}
			}

			// And in a client's error. skopeo and regctl wait out a 429's Retry-After (regctl
			// without end), oras retries for 15 s; crane retries twice (about 4 s) and then
			// reports the error. A 503 fails skopeo and regctl at once.
			failing := []string{"skopeo", "regctl"}
			if mode == "quota-exhausted" {
				failing = []string{"crane"}
			}
			for _, name := range failing {
				c := ptClientByName(t, name)
				layout := filepath.Join(e.dir, name+"-uncached")
				start := time.Now()
				err := c.pull(e, c.bin, e.b.Addr+"/docker-hub/app:2.0", "", layout)
				if err == nil {
					t.Fatalf("%s pulled an uncached tag with the upstream %s", name, mode)
				}
				msg := err.Error()
				want := []string{"TOOMANYREQUESTS", "429"}
				if mode == "down" {
					want = []string{"503", "UNAVAILABLE"}
				}
				if !strings.Contains(msg, want[0]) && !strings.Contains(msg, want[1]) {
					t.Errorf("%s's error for an uncached tag with the upstream %s mentions neither %q nor %q:\n%s", name, mode, want[0], want[1], msg)
				}
				t.Logf("%s failed in %v, as expected", name, time.Since(start).Round(time.Millisecond))
			}

			// The upstream is back: the missing tag pulls, the cached one is revalidated again.
			e.hub.SetFault()
			e.hub.SetQuotaRemaining("127.0.0.1", 100)
			d = e.ptPull(t, crane, e.b.Addr+"/docker-hub/app:2.0", "", next)
			if d.ManifestGet != 1 {
				t.Errorf("pull of the new tag once the upstream is back: upstream %s; want one manifest GET", ptFmt(d))
			}
		})
	}
}
