package e2e

// Pull-through cache hardening (issue 8, items 8 and 9), against the berth binary: an upstream
// that lies (answers HEAD 200 for any digest, names digests it does not have) must not become a
// way to read private blobs or to learn their digests; a public image whose layer also lives in a
// private repository still pulls through (fetched from the upstream and verified, one copy on
// disk); fills are bounded by the declared size, the upstream's Content-Length or
// proxy.max_fill_size, and stop at min_free_space.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berth/berth/internal/hubemu"
)

// phResp is a response whose body may have been cut: err is the error reading it, if any.
type phResp struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error
}

func (r phResp) String() string {
	s := fmt.Sprintf("%d (%d bytes)", r.Status, len(r.Body))
	if json.Valid(r.Body) || utf8.Valid(r.Body) {
		s = fmt.Sprintf("%d %q", r.Status, phShort(r.Body))
	}
	if r.Err != nil {
		s += fmt.Sprintf(" (body cut: %v)", r.Err)
	}
	return s
}

func phShort(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

var phHTTP = &http.Client{Timeout: 60 * time.Second}

// phDo sends one request and reads the whole body, keeping a read error instead of failing: a
// cut body is an outcome these tests look at.
func phDo(t testing.TB, method, u, authz string, extra ...string) phResp {
	t.Helper()
	resp, b, err := authSend(t, phHTTP, method, u, authz, nil, extra...)
	return phResp{resp.StatusCode, resp.Header, b, err}
}

// phRobot adds a robot with grants (pattern, actions pairs) and waits until berth's token service
// grants the first pattern's actions on repo (a grant reaches a running berth within 2 s); it
// returns the robot's secret.
func phRobot(t testing.TB, b *berth, name, repo string, grants ...string) string {
	t.Helper()
	secret := authRobot(b, name, grants...)
	want := strings.Split(grants[1], ",")
	authEventually(t, 10*time.Second, "grant of robot "+name, func() bool {
		r, tr := authTokenResp(t, b, name, secret, "repository:"+repo+":"+grants[1])
		if r.Status != http.StatusOK {
			return false
		}
		access, _, _ := jwtAccess(t, tr.Token)
		for _, a := range want {
			if !slices.Contains(access["repository:"+repo], a) {
				return false
			}
		}
		return true
	})
	return secret
}

// phCode is the first OCI error code of a body, or "".
func phCode(body []byte) string { return authResp{Body: body}.errorCode() }

// --- a lying upstream ---

// liar is an upstream registry (no auth) with one manifest, served for any repository and
// reference, that names a config and a layer it has, plus any digests the test adds (named,
// with sizes). It answers a blob HEAD with 200 for every digest, and a GET of a digest it does
// not have with garbage, of the size its manifest declares for a named one. It logs every
// request.
type liar struct {
	srv *httptest.Server

	mu       sync.Mutex
	blobs    map[string][]byte // what it really has
	named    map[string]int64
	manifest []byte
	log      []string // "METHOD PATH"
}

func startLiar(t *testing.T, named map[string]int64) *liar {
	t.Helper()
	l := &liar{blobs: map[string][]byte{}, named: named}
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := make([]byte, 4096)
	rand.Read(layer)
	l.blobs[clDigest(cfg)] = cfg
	l.blobs[clDigest(layer)] = layer
	layers := []clDesc{{MediaType: clOCILayerGzip, Digest: clDigest(layer), Size: int64(len(layer))}}
	for d, size := range named {
		layers = append(layers, clDesc{MediaType: clOCILayerGzip, Digest: d, Size: size})
	}
	l.manifest, _ = json.Marshal(clManifestJSON{SchemaVersion: 2, MediaType: clOCIManifest,
		Config: &clDesc{MediaType: clOCIConfig, Digest: clDigest(cfg), Size: int64(len(cfg))}, Layers: layers})
	l.srv = httptest.NewServer(http.HandlerFunc(l.serve))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *liar) serve(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.log = append(l.log, r.Method+" "+r.URL.Path)
	l.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/v2/":
		w.Write([]byte("{}"))
	case strings.Contains(p, "/manifests/"):
		w.Header().Set("Content-Type", clOCIManifest)
		w.Header().Set("Docker-Content-Digest", clDigest(l.manifest))
		w.Header().Set("Content-Length", strconv.Itoa(len(l.manifest)))
		if r.Method == http.MethodGet {
			w.Write(l.manifest)
		}
	case strings.Contains(p, "/blobs/"):
		d := p[strings.LastIndex(p, "/")+1:]
		body, ok := l.blobs[d]
		if !ok {
			// The lie: "I have it". A GET gets bytes that are not it, of the right size if the
			// liar's manifest declares one (so that only the digest gives it away).
			body = bytes.Repeat([]byte("not the blob you asked for "), 200)
			if n, ok := l.named[d]; ok {
				body = bytes.Repeat([]byte{'x'}, int(n))
			}
		}
		w.Header().Set("Docker-Content-Digest", d)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	default:
		http.NotFound(w, r)
	}
}

// sawDigest lists the requests that named d.
func (l *liar) sawDigest(d string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.log {
		if strings.Contains(e, strings.TrimPrefix(d, "sha256:")) {
			out = append(out, e)
		}
	}
	return out
}

const phLiarConfig = `proxy:
  defaults: false
  rules:
    - prefix: liar
      upstream: %s
      revalidate: always
`

// TestProxyLyingUpstream: an upstream that answers every blob HEAD with 200 and names a private
// digest in its own manifest. A robot with pull and fetch on the cache prefix asks for a private
// repository's blobs through cache repositories, by digest only and as named by the liar's
// manifest, with GET and HEAD. It never receives the private bytes, no cache repository links
// them (the admin cannot read them there either), and the upstream never sees the digests its
// manifest does not name.
func TestProxyLyingUpstream(t *testing.T) {
	// The admin's private blobs, made before anything starts so that the liar's manifest can name
	// one of them (as an upstream that learnt it elsewhere would).
	secret := make([]byte, 8192)
	rand.Read(secret)
	named, unnamed := secret[:4096], secret[4096:]
	dNamed, dUnnamed := clDigest(named), clDigest(unnamed)
	l := startLiar(t, map[string]int64{dNamed: int64(len(named))})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(phLiarConfig, l.srv.URL)))
	b := startSecureBerth(t, "--config", cfg)
	admin := basicAuth("admin", b.AdminPassword())
	authUploadBlob(t, b, admin, "private/secret", named)
	authUploadBlob(t, b, admin, "private/secret", unnamed)
	robot := basicAuth("fetcher", phRobot(t, b, "fetcher", "liar/app", "liar/*", "pull,fetch"))

	// refused checks that a request for a private blob through a cache repository does not
	// return it: a 404 BLOB_UNKNOWN, or (for a digest the liar's manifest names, which berth
	// then asks the liar for) a failed download, cut or refused as an upstream failure (503);
	// never the private bytes. It returns the response.
	refused := func(who, authz, method, repo, d string, private []byte) phResp {
		t.Helper()
		r := phDo(t, method, b.URL()+"/v2/"+repo+"/blobs/"+d, authz)
		t.Logf("%s: %s %s@%s: %s", who, method, repo, d[:19], r)
		if bytes.Contains(r.Body, private) || (r.Status == http.StatusOK && r.Err == nil && method == http.MethodGet) {
			t.Fatalf("%s: %s %s@%s through the lying upstream: %s; want a refusal or a failed download, never the private blob",
				who, method, repo, d, r)
		}
		switch {
		case r.Status == http.StatusOK: // a HEAD the liar answered itself, or a cut GET: no private bytes
		case r.Status == http.StatusNotFound && (method == http.MethodHead || phCode(r.Body) == "BLOB_UNKNOWN"):
		case r.Status == http.StatusServiceUnavailable && phCode(r.Body) == "UNAVAILABLE":
		default:
			t.Errorf("%s: %s %s@%s: %s; want 404 BLOB_UNKNOWN, 503 UNAVAILABLE or a cut download", who, method, repo, d, r)
		}
		return r
	}

	clStep(t, "digest-only", func(t *testing.T) {
		// No manifest of these repositories names the digests: berth must not ask the liar.
		for _, repo := range []string{"liar/app", "liar/other"} {
			for _, d := range []struct {
				d       string
				private []byte
			}{{dNamed, named}, {dUnnamed, unnamed}} {
				for _, m := range []string{http.MethodHead, http.MethodGet} {
					r := phDo(t, m, b.URL()+"/v2/"+repo+"/blobs/"+d.d, robot)
					t.Logf("%s %s@%s by digest only: %s", m, repo, d.d[:19], r)
					if bytes.Contains(r.Body, d.private) {
						t.Fatalf("%s %s@%s by digest only returned the private blob", m, repo, d.d)
					}
					if r.Status != http.StatusNotFound || (m == http.MethodGet && phCode(r.Body) != "BLOB_UNKNOWN") {
						t.Errorf("%s %s@%s by digest only: %s; want 404 BLOB_UNKNOWN", m, repo, d.d, r)
					}
				}
			}
		}
		if seen := l.sawDigest(dNamed); len(seen) > 0 {
			t.Errorf("berth sent a private digest that no upstream manifest named to the upstream: %v", seen)
		}
	})

	clStep(t, "named-by-manifest", func(t *testing.T) {
		// The liar's manifest names the private layer: berth may ask the liar for it (the liar
		// knows the digest already), and the liar must prove it has the bytes.
		r := phDo(t, http.MethodGet, b.URL()+"/v2/liar/app/manifests/v1", robot, "Accept", clAcceptAll)
		if r.Status != http.StatusOK || clDigest(r.Body) != clDigest(l.manifest) {
			t.Fatalf("GET liar/app:v1: %s", r)
		}
		// The liar sends bytes of the declared size that are not the blob: the download fails
		// its verification, and the client sees a cut body. Every time: nothing was linked.
		for _, m := range []string{http.MethodHead, http.MethodGet, http.MethodGet} {
			r := refused("robot with fetch", robot, m, "liar/app", dNamed, named)
			if m == http.MethodGet && (r.Status != http.StatusOK || r.Err == nil || len(r.Body) >= len(named)) {
				t.Errorf("GET liar/app@%s (garbage from the liar): %s; want a cut download", dNamed, r)
			}
		}
		// Nor in another cache repository, whose manifests do not name it.
		refused("robot with fetch", robot, http.MethodGet, "liar/other", dNamed, named)
		// Whatever happened, the cache repositories do not hold it: not even the admin (who may
		// read everything, and has no fetch restriction) reads it there.
		for _, repo := range []string{"liar/app", "liar/other"} {
			refused("admin", admin, http.MethodGet, repo, dNamed, named)
		}
	})

	clStep(t, "upstream-log", func(t *testing.T) {
		if seen := l.sawDigest(dUnnamed); len(seen) > 0 {
			t.Errorf("the upstream received a private digest its manifest never named: %v", seen)
		}
		t.Logf("requests for the digest the liar's manifest names: %v", l.sawDigest(dNamed))
		// The private repository is unharmed.
		for _, d := range []string{dNamed, dUnnamed} {
			if r := phDo(t, http.MethodGet, b.URL()+"/v2/private/secret/blobs/"+d, admin); r.Status != http.StatusOK || clDigest(r.Body) != d {
				t.Errorf("GET private/secret@%s as admin: %s", d, r)
			}
		}
	})
}

// phHubConfig is a docker-hub rule (revalidate always) on an emulated Docker Hub, and whatever
// the test appends.
const phHubConfig = `proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: always
%s`

// phHub starts a Docker Hub emulator (its realm on its own host:port, as crane requires).
func phHub(t *testing.T, opts hubemu.Options) *hubemu.Hub {
	t.Helper()
	opts.RealmOnRegistry = true
	hub, err := hubemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return hub
}

// phFiles lists the files of blob d under data/blobs, and the temporary files in data/uploads.
func phFiles(t *testing.T, data, d string) (blobs, temps []string) {
	t.Helper()
	hex := strings.TrimPrefix(d, "sha256:")
	filepath.WalkDir(filepath.Join(data, "blobs"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && de.Name() == hex {
			blobs = append(blobs, p)
		}
		return nil
	})
	temps, _ = filepath.Glob(filepath.Join(data, "uploads", "put-*"))
	return blobs, temps
}

// TestProxyPrivateLayerPullsThrough: a public image one of whose layers a private repository
// holds too pulls through the cache with crane, as a robot with fetch: every blob comes from the
// upstream (the shared layer too: the upstream proves it has it by sending it, and berth
// verifies it), the store keeps one copy of the shared layer, and the private repository still
// serves it.
func TestProxyPrivateLayerPullsThrough(t *testing.T) {
	crane := tool(t, "crane")
	hub := phHub(t, hubemu.Options{})
	layers := [][]byte{
		clTar(t, map[string]string{"base.txt": "a base layer that a private image shares\n"}),
		clTar(t, map[string]string{"app.txt": "the public image's own layer\n"}),
	}
	img, err := hub.PushImage("library/shared", "1", layers...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(phHubConfig, hub.RegistryURL(), "")))
	b := startSecureBerth(t, "--config", cfg)
	admin := basicAuth("admin", b.AdminPassword())
	shared := authUploadBlob(t, b, admin, "team/app", layers[0])
	if shared != img.Layers[0] {
		t.Fatalf("pushed %s, the hub's layer is %s", shared, img.Layers[0])
	}
	secret := phRobot(t, b, "fetcher", "docker-hub/shared", "docker-hub/*", "pull,fetch")

	authRun(t, dir, crane, "auth", "login", b.Addr, "-u", "fetcher", "-p", secret)
	layout := filepath.Join(dir, "layout")
	before := hub.Counts()
	authRun(t, dir, crane, "pull", "--format", "oci", b.Addr+"/docker-hub/shared:1", layout)
	d := ptDelta(before, hub.Counts())
	t.Logf("crane pull through the cache: upstream %s", ptFmt(d))
	ptCheckLayout(t, layout, img)
	if d.ManifestGet != 1 || d.BlobGet != 3 || d.BlobHead != 0 {
		t.Errorf("pull of an image whose layer a private repository holds: upstream %s; want 1 manifest GET, 3 blob GETs (the shared layer fetched and verified), no blob HEAD", ptFmt(d))
	}
	if files, temps := phFiles(t, b.Data, shared); len(files) != 1 || len(temps) != 0 {
		t.Errorf("the shared layer is on disk as %v, with temporary files %v; want one file, none", files, temps)
	}
	if r := phDo(t, http.MethodGet, b.URL()+"/v2/team/app/blobs/"+shared, admin); r.Status != http.StatusOK || clDigest(r.Body) != shared {
		t.Errorf("GET team/app@%s (the private copy) as admin: %s", shared, r)
	}
	// Cached now: a second pull sends nothing but the tag's revalidation upstream.
	before = hub.Counts()
	authRun(t, dir, crane, "pull", "--format", "oci", b.Addr+"/docker-hub/shared:1", filepath.Join(dir, "layout2"))
	if d := ptDelta(before, hub.Counts()); d.BlobGet != 0 || d.ManifestGet != 0 || d.ManifestHead != 1 {
		t.Errorf("second pull: upstream %s; want one manifest HEAD", ptFmt(d))
	}
}

// --- fill bounds (item 9) ---

// endlessUpstream is an upstream (no auth) with one image, "app:v1", whose manifest declares a
// layer of layerSize bytes; every blob GET gets that layer's bytes and then more, endlessly,
// chunked (no Content-Length). sent counts the body bytes it wrote.
type endlessUpstream struct {
	srv      *httptest.Server
	layer    string // the declared layer's digest
	manifest []byte
	sent     atomicInt
}

type atomicInt struct {
	mu sync.Mutex
	n  int64
}

func (a *atomicInt) add(n int64) {
	a.mu.Lock()
	a.n += n
	a.mu.Unlock()
}

func (a *atomicInt) load() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func startEndless(t *testing.T, layerSize int) *endlessUpstream {
	t.Helper()
	layer := make([]byte, layerSize)
	rand.Read(layer)
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`)
	u := &endlessUpstream{layer: clDigest(layer)}
	u.manifest, _ = json.Marshal(clManifestJSON{SchemaVersion: 2, MediaType: clOCIManifest,
		Config: &clDesc{MediaType: clOCIConfig, Digest: clDigest(cfg), Size: int64(len(cfg))},
		Layers: []clDesc{{MediaType: clOCILayerGzip, Digest: u.layer, Size: int64(len(layer))}}})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/v2/":
			w.Write([]byte("{}"))
		case strings.Contains(p, "/manifests/"):
			w.Header().Set("Content-Type", clOCIManifest)
			w.Header().Set("Content-Length", strconv.Itoa(len(u.manifest)))
			w.Write(u.manifest)
		case strings.Contains(p, "/blobs/") && r.Method == http.MethodGet:
			rc := http.NewResponseController(w)
			chunk := bytes.Repeat([]byte{'x'}, 64<<10)
			for body := layer; r.Context().Err() == nil; body = chunk {
				n, err := w.Write(body)
				u.sent.add(int64(n))
				if err != nil || rc.Flush() != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

const phEndlessConfig = `proxy:
  defaults: false
  max_fill_size: %d
  rules:
    - prefix: endless
      upstream: %s
      revalidate: always
min_free_space: %d
`

// phBlobBytes is what berth says it read from the endless rule's upstream.
func phBlobBytes(t *testing.T, b *berth) int64 {
	t.Helper()
	r := phDo(t, http.MethodGet, b.URL()+"/berth/v1/upstreams", "")
	var s struct {
		Upstreams []struct {
			Prefix   string `json:"prefix"`
			Requests struct {
				BlobBytes int64 `json:"blob_bytes"`
			} `json:"requests"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil || r.Status != http.StatusOK {
		t.Fatalf("GET /berth/v1/upstreams: %s (%v)", r, err)
	}
	for _, u := range s.Upstreams {
		if u.Prefix == "endless" {
			return u.Requests.BlobBytes
		}
	}
	t.Fatalf("no endless rule in /berth/v1/upstreams: %s", r)
	return 0
}

// phDiskUse is the bytes of the regular files under dir, but metadata.db*.
func phDiskUse(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() && !strings.HasPrefix(de.Name(), "metadata.db") {
			if fi, err := de.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestProxyFillBounds: an upstream that sends an endless chunked body. A blob that the cached
// manifest declares stops at the declared size and one byte; a blob asked for by digest only
// stops at proxy.max_fill_size and one byte. Each client gets a cut body, nothing is stored or
// left on disk, and berth's log says why.
func TestProxyFillBounds(t *testing.T) {
	const layerSize, maxFill = 1 << 20, 3 << 20
	u := startEndless(t, layerSize)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(phEndlessConfig, maxFill, u.srv.URL, 0)))
	b := startBerth(t, "--config", cfg)
	if r := phDo(t, http.MethodGet, b.URL()+"/v2/endless/app/manifests/v1", "", "Accept", clAcceptAll); r.Status != http.StatusOK {
		t.Fatalf("GET endless/app:v1: %s", r)
	}
	for _, c := range []struct {
		what, repo string
		bound      int64
	}{
		{"declared by the cached manifest", "endless/app", layerSize},
		{"by digest only", "endless/other", maxFill},
	} {
		before := phBlobBytes(t, b)
		start := time.Now()
		r := phDo(t, http.MethodGet, b.URL()+"/v2/"+c.repo+"/blobs/"+u.layer, "")
		read := phBlobBytes(t, b) - before
		t.Logf("GET %s@%s (%s): %d, %d bytes, cut: %v, in %v; berth read %d bytes (the upstream has sent %d in all)",
			c.repo, u.layer[:19], c.what, r.Status, len(r.Body), r.Err, time.Since(start).Round(time.Millisecond), read, u.sent.load())
		if r.Status != http.StatusOK || r.Err == nil || int64(len(r.Body)) >= c.bound {
			t.Errorf("GET of an endless blob %s: %s; want 200 and a body cut short of %d bytes", c.what, r, c.bound)
		}
		if read > c.bound+1 {
			t.Errorf("berth read %d bytes of an endless body %s; want at most %d", read, c.what, c.bound+1)
		}
	}
	// A fill removes its temporary file before its clients' responses end.
	if files, temps := phFiles(t, b.Data, u.layer); len(files) != 0 || len(temps) != 0 {
		t.Errorf("after the endless fills: blob files %v, temporary files %v; want none", files, temps)
	}
	if use := phDiskUse(b.Data); use > 64<<10 {
		t.Errorf("the data directory holds %d bytes besides the metadata after the endless fills", use)
	}
	if log := b.Log(); !strings.Contains(log, "blob fill failed") || !strings.Contains(log, "longer than") {
		t.Errorf("berth's log does not say why the fills failed:\n%s", log)
	}
}

// TestProxyFillFreeSpaceFloor: berth's data directory on a 48 MiB tmpfs, min_free_space 24 MiB,
// and an endless body asked for by digest only (proxy.max_fill_size far away): the fill stops
// before the filesystem has less than the floor free, the client gets a cut body, the
// temporary file goes, and berth's log says why. Then, with the floor above what is free, a
// request whose size is known is refused before any byte is read: 503 UNAVAILABLE. Needs root (mount).
func TestProxyFillFreeSpaceFloor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	const size, floor = 48 << 20, 24 << 20
	data := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { // after berth has stopped (cleanups run last in, first out)
		if out, err := exec.Command("umount", data).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", data, err, out)
		}
	})
	u := startEndless(t, 1<<20)
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(phEndlessConfig, 1<<30, u.srv.URL, floor)))
	b := &berth{t: t, Data: data}
	b.start("--config", cfg)
	t.Cleanup(b.Stop)

	free := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(data, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * st.Bsize
	}
	t.Logf("before the fill: %d bytes free on the tmpfs", free())
	r := phDo(t, http.MethodGet, b.URL()+"/v2/endless/app/blobs/"+u.layer, "")
	read := phBlobBytes(t, b)
	t.Logf("GET of an endless blob by digest only: %d, %d bytes, cut: %v; berth read %d bytes", r.Status, len(r.Body), r.Err, read)
	if r.Status != http.StatusOK || r.Err == nil {
		t.Errorf("GET of an endless blob with the floor reached: %s; want 200 and a cut body", r)
	}
	if read > size-floor {
		t.Errorf("berth read %d bytes into a %d-byte filesystem with a %d-byte floor", read, size, floor)
	}
	if _, temps := phFiles(t, data, u.layer); len(temps) != 0 {
		t.Errorf("temporary files left: %v", temps)
	}
	if f := free(); f < floor {
		t.Errorf("%d bytes free after the fill, below the floor %d", f, floor)
	}
	if log := b.Log(); !strings.Contains(log, "not enough free disk space") {
		t.Errorf("berth's log does not say the fill stopped for disk space:\n%s", log)
	}

	// A blob of known size larger than what the floor leaves: refused before its body is read.
	b.Stop()
	clWriteFile(t, cfg, []byte(fmt.Sprintf(phEndlessConfig, 1<<30, u.srv.URL, free())))
	b.start("--config", cfg)
	if r := phDo(t, http.MethodGet, b.URL()+"/v2/endless/app/manifests/v1", "", "Accept", clAcceptAll); r.Status != http.StatusOK {
		t.Fatalf("GET endless/app:v1: %s", r)
	}
	r = phDo(t, http.MethodGet, b.URL()+"/v2/endless/app/blobs/"+u.layer, "")
	t.Logf("GET of a declared blob with the floor at the free space: %s", r)
	if r.Status != http.StatusServiceUnavailable || phCode(r.Body) != "UNAVAILABLE" || !bytes.Contains(r.Body, []byte("disk space")) {
		t.Errorf("GET of a blob that would go below the floor: %s; want 503 UNAVAILABLE about disk space", r)
	}
	if read := phBlobBytes(t, b); read != 0 {
		t.Errorf("berth read %d bytes of a body it refused for disk space", read)
	}
}
