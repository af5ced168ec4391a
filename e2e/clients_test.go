package e2e

// Round trips through berth with the real clients: crane, oras, regctl and skopeo. Each test
// builds content locally (no network), pushes it, pulls it back and compares digests and bytes,
// pushes and resolves a two-platform index, lists tags and deletes. Every assertion is on what
// came back (digests, media types, file contents, 404s), never only on a client's exit status.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Media types the tests check for.
const (
	clOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	clOCIIndex       = "application/vnd.oci.image.index.v1+json"
	clOCIConfig      = "application/vnd.oci.image.config.v1+json"
	clOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	clDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	clDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// clCmdTimeout bounds every client command, so that a hung client fails its test instead of
// stalling the package until go test's global timeout.
const clCmdTimeout = 60 * time.Second

// clStep runs one step as a subtest and stops the test if it fails: the later steps build on it.
func clStep(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, fn) {
		t.FailNow()
	}
}

// clExec runs a client with HOME=dir (as runEnv does) and a timeout, returning stdout and stderr
// apart: several clients print the digest on stdout and their progress on stderr.
func clExec(dir, bin string, args ...string) (stdout, stderr string, err error) {
	return clExecEnv(dir, []string{"HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, ".docker")}, bin, args...)
}

// clExecEnv is clExec with env added to the environment.
func clExecEnv(dir string, env []string, bin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), clCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", clCmdTimeout, err)
	}
	return o.String(), e.String(), err
}

// execFunc runs a client in dir: clExec, or another environment's.
type execFunc func(dir, bin string, args ...string) (stdout, stderr string, err error)

// clRun runs a client that must succeed and returns its stdout.
func clRun(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	return mustRun(t, clExec, dir, bin, args...)
}

// clRunFails runs a client that must fail and returns what it printed.
func clRunFails(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	return mustFail(t, clExec, dir, bin, args...)
}

func mustRun(t *testing.T, run execFunc, dir, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := run(dir, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func mustFail(t *testing.T, run execFunc, dir, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := run(dir, bin, args...)
	if err == nil {
		t.Fatalf("%s %s succeeded, want an error; output:\n%s%s", filepath.Base(bin), strings.Join(args, " "), out, errOut)
	}
	return out + errOut
}

var clDigestRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// clLastDigest is the last sha256 digest in a client's output.
func clLastDigest(t *testing.T, what, out string) string {
	t.Helper()
	all := clDigestRE.FindAllString(out, -1)
	if len(all) == 0 {
		t.Fatalf("%s: no digest in output:\n%s", what, out)
	}
	return all[len(all)-1]
}

func clDigest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// clTar is a tar of files (name -> content), with fixed times so that it is reproducible.
func clTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func clGzip(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// clTarFile returns the content of name in a tar or gzipped tar.
func clTarFile(t *testing.T, layer []byte, name string) string {
	t.Helper()
	var r io.Reader = bytes.NewReader(layer)
	if len(layer) > 2 && layer[0] == 0x1f && layer[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("layer has no %s", name)
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

func clWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func clReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- plain HTTP checks against berth, independent of any client ---

var clAcceptAll = strings.Join([]string{clOCIManifest, clOCIIndex, clDockerManifest, clDockerList}, ", ")

var clHTTP = &http.Client{Timeout: 15 * time.Second}

func clGet(t *testing.T, url, accept string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := clHTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// clManifest fetches repo:ref from berth over plain HTTP and checks that it is the manifest
// wantDigest of mediaType (Docker-Content-Digest, the body's own digest, Content-Type). It
// returns the body.
func clManifest(t *testing.T, b *berth, repo, ref, wantDigest, mediaType string) []byte {
	t.Helper()
	url := b.URL() + "/v2/" + repo + "/manifests/" + ref
	status, h, body := clGet(t, url, clAcceptAll)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200: %s", url, status, body)
	}
	if got := h.Get("Docker-Content-Digest"); got != wantDigest {
		t.Errorf("GET %s: Docker-Content-Digest %s, want %s", url, got, wantDigest)
	}
	if got := clDigest(body); got != wantDigest {
		t.Errorf("GET %s: body digest %s, want %s", url, got, wantDigest)
	}
	if mediaType != "" {
		if got := h.Get("Content-Type"); got != mediaType {
			t.Errorf("GET %s: Content-Type %q, want %q", url, got, mediaType)
		}
		var m struct {
			MediaType string `json:"mediaType"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("GET %s: %v", url, err)
		} else if m.MediaType != mediaType {
			t.Errorf("GET %s: mediaType %q, want %q", url, m.MediaType, mediaType)
		}
	}
	return body
}

// clManifestGone checks that berth answers repo:ref with 404 MANIFEST_UNKNOWN.
func clManifestGone(t *testing.T, b *berth, repo, ref string) {
	t.Helper()
	url := b.URL() + "/v2/" + repo + "/manifests/" + ref
	status, _, body := clGet(t, url, clAcceptAll)
	if status != http.StatusNotFound || !strings.Contains(string(body), "MANIFEST_UNKNOWN") {
		t.Errorf("GET %s after delete: status %d %s, want 404 MANIFEST_UNKNOWN", url, status, body)
	}
}

// clBlob fetches a blob over plain HTTP and checks its digest.
func clBlob(t *testing.T, b *berth, repo, dgst string) []byte {
	t.Helper()
	url := b.URL() + "/v2/" + repo + "/blobs/" + dgst
	status, _, body := clGet(t, url, "")
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, status, body)
	}
	if got := clDigest(body); got != dgst {
		t.Fatalf("GET %s: content digest %s", url, got)
	}
	return body
}

// clTags lists repo's tags over plain HTTP.
func clTags(t *testing.T, b *berth, repo string) []string {
	t.Helper()
	url := b.URL() + "/v2/" + repo + "/tags/list"
	status, _, body := clGet(t, url, "")
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, status, body)
	}
	var l struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
	if l.Name != repo {
		t.Errorf("GET %s: name %q, want %q", url, l.Name, repo)
	}
	return l.Tags
}

// clSameSet compares two lists of names regardless of order.
func clSameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s: got %q, want %q", what, g, w)
	}
}

func clLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// --- manifests as JSON ---

type clDesc struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *clPlatform       `json:"platform,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type clPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type clManifestJSON struct {
	SchemaVersion int      `json:"schemaVersion"`
	MediaType     string   `json:"mediaType,omitempty"`
	ArtifactType  string   `json:"artifactType,omitempty"`
	Config        *clDesc  `json:"config,omitempty"`
	Layers        []clDesc `json:"layers,omitempty"`
	Manifests     []clDesc `json:"manifests,omitempty"`
	Subject       *clDesc  `json:"subject,omitempty"`
}

func clParse(t *testing.T, body []byte) clManifestJSON {
	t.Helper()
	var m clManifestJSON
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v: %s", err, body)
	}
	return m
}

// clPlatforms maps "os/arch" to the digest of each manifest an index lists.
func clPlatforms(t *testing.T, index []byte) map[string]string {
	t.Helper()
	m := clParse(t, index)
	out := map[string]string{}
	for _, d := range m.Manifests {
		if d.Platform == nil {
			t.Errorf("index entry %s has no platform", d.Digest)
			continue
		}
		out[d.Platform.OS+"/"+d.Platform.Architecture] = d.Digest
	}
	return out
}

// ---------------------------------------------------------------------------------------------

// TestCrane: crane builds OCI images from a local tar (append --oci-empty-base), sets their
// platforms (mutate), makes an index (index append), pushes a Docker-media-type tarball (push);
// berth restarts; crane pulls it all back (digest, manifest, export, blob, pull --format oci,
// copy to another repository), lists tags and deletes a tag and manifests by digest.
func TestCrane(t *testing.T) {
	crane := tool(t, "crane")
	b := startBerth(t)
	dir := t.TempDir()
	repo := "crane/img"
	dockerRepo := "crane/docker"
	ref := func(r, tag string) string { return b.Addr + "/" + r + tag }

	content := "hello from crane\n"
	clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": content}))

	var v1, amd, arm, multi, dock string
	clStep(t, "push-oci", func(t *testing.T) {
		out := clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", ref(repo, ":v1"))
		v1 = clLastDigest(t, "crane append", out)
		t.Logf("crane append pushed %s:v1 as %s", repo, v1)
		body := clManifest(t, b, repo, "v1", v1, clOCIManifest)
		if m := clParse(t, body); len(m.Layers) != 1 || m.Layers[0].MediaType != clOCILayerGzip {
			t.Fatalf("manifest layers: %+v", m.Layers)
		}
	})
	clStep(t, "push-index", func(t *testing.T) {
		amd = clLastDigest(t, "crane mutate", clRun(t, dir, crane, "mutate", "--set-platform", "linux/amd64", "-t", ref(repo, ":amd64"), ref(repo, ":v1")))
		arm = clLastDigest(t, "crane mutate", clRun(t, dir, crane, "mutate", "--set-platform", "linux/arm64", "-t", ref(repo, ":arm64"), ref(repo, ":v1")))
		multi = clLastDigest(t, "crane index append", clRun(t, dir, crane, "index", "append",
			"-m", ref(repo, ":amd64"), "-m", ref(repo, ":arm64"), "-t", ref(repo, ":multi")))
		t.Logf("crane pushed linux/amd64 %s, linux/arm64 %s, index %s", amd, arm, multi)
		if amd == arm || amd == v1 {
			t.Fatalf("platform images should differ: v1 %s amd64 %s arm64 %s", v1, amd, arm)
		}
	})
	clStep(t, "push-docker-tarball", func(t *testing.T) {
		// Without --oci-empty-base the empty base, hence the image, has Docker media types.
		clRun(t, dir, crane, "append", "-f", "layer.tar", "-t", ref(dockerRepo, ":v1"), "-o", "docker.tar")
		out := clRun(t, dir, crane, "push", "docker.tar", ref(dockerRepo, ":v1"))
		dock = clLastDigest(t, "crane push", out)
		t.Logf("crane push docker.tar -> %s:v1 %s", dockerRepo, dock)
	})

	clStep(t, "restart", func(t *testing.T) {
		b.Restart()
		t.Logf("berth restarted on %s", b.Addr)
	})

	clStep(t, "pull-oci", func(t *testing.T) {
		if got := strings.TrimSpace(clRun(t, dir, crane, "digest", ref(repo, ":v1"))); got != v1 {
			t.Errorf("crane digest %s:v1 = %s, pushed %s", repo, got, v1)
		}
		raw := clRun(t, dir, crane, "manifest", ref(repo, ":v1"))
		if got := clDigest([]byte(raw)); got != v1 {
			t.Errorf("crane manifest: body digest %s, pushed %s", got, v1)
		}
		m := clParse(t, []byte(raw))
		layer := clRun(t, dir, crane, "blob", ref(repo, "@"+m.Layers[0].Digest))
		if got := clDigest([]byte(layer)); got != m.Layers[0].Digest {
			t.Errorf("crane blob: digest %s, want %s", got, m.Layers[0].Digest)
		}
		if got := clTarFile(t, []byte(layer), "hello.txt"); got != content {
			t.Errorf("layer hello.txt = %q, want %q", got, content)
		}
		fsTar := clRun(t, dir, crane, "export", ref(repo, ":v1"), "-")
		if got := clTarFile(t, []byte(fsTar), "hello.txt"); got != content {
			t.Errorf("crane export hello.txt = %q, want %q", got, content)
		}
		t.Logf("crane pulled %s:v1: digest, manifest, layer blob and exported file all match", repo)
	})
	clStep(t, "pull-index", func(t *testing.T) {
		body := clManifest(t, b, repo, "multi", multi, clOCIIndex)
		plats := clPlatforms(t, body)
		if plats["linux/amd64"] != amd || plats["linux/arm64"] != arm || len(plats) != 2 {
			t.Fatalf("index platforms %v, want linux/amd64 %s and linux/arm64 %s", plats, amd, arm)
		}
		for p, want := range plats {
			got := strings.TrimSpace(clRun(t, dir, crane, "digest", "--platform", p, ref(repo, ":multi")))
			if got != want {
				t.Errorf("crane digest --platform %s = %s, want %s", p, got, want)
			}
			clManifest(t, b, repo, want, want, clOCIManifest)
			cfg := clRun(t, dir, crane, "config", ref(repo, "@"+want))
			var c clPlatform
			if err := json.Unmarshal([]byte(cfg), &c); err != nil || c.OS+"/"+c.Architecture != p {
				t.Errorf("config of %s: %s (%v), want platform %s", want, cfg, err, p)
			}
		}
		layout := filepath.Join(dir, "pulled")
		clRun(t, dir, crane, "pull", "--format", "oci", ref(repo, ":multi"), layout)
		var idx clManifestJSON
		if err := json.Unmarshal(clReadFile(t, filepath.Join(layout, "index.json")), &idx); err != nil {
			t.Fatal(err)
		}
		if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != multi {
			t.Fatalf("crane pull index.json lists %+v, want the index %s", idx.Manifests, multi)
		}
		for _, d := range []string{multi, amd, arm} {
			if got := clDigest(clReadFile(t, filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))); got != d {
				t.Errorf("pulled blob %s has digest %s", d, got)
			}
		}
		// A copy to another repository of the same registry mounts the blobs (?mount=&from=).
		clRun(t, dir, crane, "copy", ref(repo, ":multi"), ref("crane/copy", ":multi"))
		if got := strings.TrimSpace(clRun(t, dir, crane, "digest", ref("crane/copy", ":multi"))); got != multi {
			t.Errorf("crane copy: crane/copy:multi is %s, want %s", got, multi)
		}
		clManifest(t, b, "crane/copy", "multi", multi, clOCIIndex)
		clManifest(t, b, "crane/copy", arm, arm, clOCIManifest)
		t.Logf("index %s resolves to linux/amd64 %s and linux/arm64 %s; pulled as OCI layout and copied", multi, amd, arm)
	})
	clStep(t, "pull-docker", func(t *testing.T) {
		body := clManifest(t, b, dockerRepo, "v1", dock, clDockerManifest)
		m := clParse(t, body)
		if m.Config == nil || m.Config.MediaType != "application/vnd.docker.container.image.v1+json" ||
			len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.docker.image.rootfs.diff.tar.gzip" {
			t.Fatalf("docker manifest: %s", body)
		}
		if got := strings.TrimSpace(clRun(t, dir, crane, "digest", ref(dockerRepo, ":v1"))); got != dock {
			t.Errorf("crane digest %s:v1 = %s, pushed %s", dockerRepo, got, dock)
		}
		fsTar := clRun(t, dir, crane, "export", ref(dockerRepo, ":v1"), "-")
		if got := clTarFile(t, []byte(fsTar), "hello.txt"); got != content {
			t.Errorf("crane export hello.txt = %q, want %q", got, content)
		}
		t.Logf("docker image %s pulled back with Docker media types and its content", dock)
	})
	clStep(t, "tags", func(t *testing.T) {
		want := []string{"amd64", "arm64", "multi", "v1"}
		clSameSet(t, "crane ls", clLines(clRun(t, dir, crane, "ls", ref(repo, ""))), want)
		clSameSet(t, "GET tags/list", clTags(t, b, repo), want)
	})
	clStep(t, "delete", func(t *testing.T) {
		// By tag: the tag goes, the manifest stays.
		clRun(t, dir, crane, "delete", ref(repo, ":v1"))
		clManifestGone(t, b, repo, "v1")
		clManifest(t, b, repo, v1, v1, clOCIManifest)
		clSameSet(t, "crane ls after tag delete", clLines(clRun(t, dir, crane, "ls", ref(repo, ""))), []string{"amd64", "arm64", "multi"})
		// By digest: the manifest goes.
		clRun(t, dir, crane, "delete", ref(repo, "@"+v1))
		clManifestGone(t, b, repo, v1)
		if out := clRunFails(t, dir, crane, "manifest", ref(repo, "@"+v1)); !strings.Contains(out, "MANIFEST_UNKNOWN") {
			t.Errorf("crane manifest of a deleted digest: %s", out)
		}
		clRun(t, dir, crane, "delete", ref(dockerRepo, "@"+dock))
		clManifestGone(t, b, dockerRepo, dock)
		clManifestGone(t, b, dockerRepo, "v1")
		clSameSet(t, "tags of "+dockerRepo, clTags(t, b, dockerRepo), nil)
		t.Logf("deleted %s:v1 (tag), %s@%s and %s@%s", repo, repo, v1, dockerRepo, dock)
	})
}

// TestOras: oras pushes files as an artifact with an artifact type, pulls them back, attaches
// and discovers a referrer, builds a two-platform index from platform artifacts (manifest index
// create), tags, lists tags and deletes manifests by digest.
func TestOras(t *testing.T) {
	oras := tool(t, "oras")
	b := startBerth(t)
	dir := t.TempDir()
	repo := "oras/art"
	ref := func(s string) string { return b.Addr + "/" + repo + s }
	const artifactType = "application/vnd.berth.test.v1"

	files := map[string]string{"a.txt": "artifact file a\n", "b.json": `{"berth":"oras"}`}
	for n, c := range files {
		clWriteFile(t, filepath.Join(dir, n), []byte(c))
	}
	type pushed struct {
		Digest       string `json:"digest"`
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
	}
	var v1 string
	clStep(t, "push", func(t *testing.T) {
		out := clRun(t, dir, oras, "push", "--plain-http", "--artifact-type", artifactType, "--format", "json",
			ref(":v1"), "a.txt:text/plain", "b.json:application/json")
		var p pushed
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("oras push output: %v\n%s", err, out)
		}
		v1 = p.Digest
		t.Logf("oras push %s:v1 -> %s (%s)", repo, v1, p.ArtifactType)
		body := clManifest(t, b, repo, "v1", v1, clOCIManifest)
		m := clParse(t, body)
		if m.ArtifactType != artifactType || len(m.Layers) != 2 {
			t.Fatalf("manifest: %s", body)
		}
		for _, l := range m.Layers {
			name := l.Annotations["org.opencontainers.image.title"]
			if got := string(clBlob(t, b, repo, l.Digest)); got != files[name] {
				t.Errorf("blob %s (%s) = %q, want %q", l.Digest, name, got, files[name])
			}
		}
		if got := strings.TrimSpace(clRun(t, dir, oras, "resolve", "--plain-http", ref(":v1"))); got != v1 {
			t.Errorf("oras resolve = %s, want %s", got, v1)
		}
	})
	clStep(t, "pull", func(t *testing.T) {
		out := filepath.Join(dir, "out")
		clRun(t, dir, oras, "pull", "--plain-http", "-o", out, ref(":v1"))
		for n, c := range files {
			if got := string(clReadFile(t, filepath.Join(out, n))); got != c {
				t.Errorf("pulled %s = %q, want %q", n, got, c)
			}
		}
		raw := clRun(t, dir, oras, "manifest", "fetch", "--plain-http", ref("@"+v1))
		if got := clDigest([]byte(raw)); got != v1 {
			t.Errorf("oras manifest fetch: digest %s, want %s", got, v1)
		}
		t.Logf("oras pull %s:v1: both files match", repo)
	})
	var sig string
	clStep(t, "referrers", func(t *testing.T) {
		clWriteFile(t, filepath.Join(dir, "sig.txt"), []byte("signature\n"))
		out := clRun(t, dir, oras, "attach", "--plain-http", "--artifact-type", "application/vnd.berth.sig",
			"--format", "json", ref(":v1"), "sig.txt")
		var p pushed
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("oras attach output: %v\n%s", err, out)
		}
		sig = p.Digest
		body := clManifest(t, b, repo, sig, sig, clOCIManifest)
		if m := clParse(t, body); m.Subject == nil || m.Subject.Digest != v1 {
			t.Fatalf("attached manifest has subject %+v, want %s", m.Subject, v1)
		}
		var d struct {
			Digest    string `json:"digest"`
			Referrers []struct {
				Digest       string `json:"digest"`
				ArtifactType string `json:"artifactType"`
			} `json:"referrers"`
		}
		out = clRun(t, dir, oras, "discover", "--plain-http", "--format", "json", ref(":v1"))
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("oras discover output: %v\n%s", err, out)
		}
		if d.Digest != v1 || len(d.Referrers) != 1 || d.Referrers[0].Digest != sig || d.Referrers[0].ArtifactType != "application/vnd.berth.sig" {
			t.Fatalf("oras discover: %s", out)
		}
		t.Logf("oras attach %s to %s; discover finds it", sig, v1)
	})
	plat := map[string]string{}
	var multi string
	clStep(t, "push-index", func(t *testing.T) {
		for _, p := range []string{"linux/amd64", "linux/arm64"} {
			tag := strings.ReplaceAll(p, "/", "-")
			clWriteFile(t, filepath.Join(dir, tag+".txt"), []byte("content for "+p+"\n"))
			out := clRun(t, dir, oras, "push", "--plain-http", "--artifact-platform", p, "--format", "json", ref(":"+tag), tag+".txt")
			var pu pushed
			if err := json.Unmarshal([]byte(out), &pu); err != nil {
				t.Fatalf("oras push output: %v\n%s", err, out)
			}
			plat[p] = pu.Digest
		}
		out := clRun(t, dir, oras, "manifest", "index", "create", "--plain-http", ref(":multi"), "linux-amd64", "linux-arm64")
		multi = clLastDigest(t, "oras manifest index create", out)
		t.Logf("oras manifest index create %s:multi -> %s (linux/amd64 %s, linux/arm64 %s)", repo, multi, plat["linux/amd64"], plat["linux/arm64"])
		body := clManifest(t, b, repo, "multi", multi, clOCIIndex)
		got := clPlatforms(t, body)
		if len(got) != 2 || got["linux/amd64"] != plat["linux/amd64"] || got["linux/arm64"] != plat["linux/arm64"] {
			t.Fatalf("index platforms %v, want %v", got, plat)
		}
	})
	clStep(t, "pull-index", func(t *testing.T) {
		for p, want := range plat {
			got := strings.TrimSpace(clRun(t, dir, oras, "resolve", "--plain-http", "--platform", p, ref(":multi")))
			if got != want {
				t.Errorf("oras resolve --platform %s = %s, want %s", p, got, want)
			}
			clManifest(t, b, repo, want, want, clOCIManifest)
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(p, "/", "-"))
			clRun(t, dir, oras, "pull", "--plain-http", "--platform", p, "-o", out, ref(":multi"))
			name := strings.ReplaceAll(p, "/", "-") + ".txt"
			if got := string(clReadFile(t, filepath.Join(out, name))); got != "content for "+p+"\n" {
				t.Errorf("oras pull --platform %s: %s = %q", p, name, got)
			}
		}
		t.Logf("both platforms of %s resolve and pull their own file", multi)
	})
	clStep(t, "tags", func(t *testing.T) {
		clRun(t, dir, oras, "tag", "--plain-http", ref(":v1"), "v2", "latest")
		want := []string{"latest", "linux-amd64", "linux-arm64", "multi", "v1", "v2"}
		clSameSet(t, "oras repo tags", clLines(clRun(t, dir, oras, "repo", "tags", "--plain-http", ref(""))), want)
		clSameSet(t, "GET tags/list", clTags(t, b, repo), want)
		clManifest(t, b, repo, "latest", v1, clOCIManifest)
	})
	clStep(t, "delete", func(t *testing.T) {
		// oras deletes by digest: every tag on v1 goes with it.
		clRun(t, dir, oras, "manifest", "delete", "--plain-http", "--force", ref("@"+v1))
		for _, r := range []string{v1, "v1", "v2", "latest"} {
			clManifestGone(t, b, repo, r)
		}
		if out := clRunFails(t, dir, oras, "manifest", "fetch", "--plain-http", ref(":v1")); !strings.Contains(out, "not found") {
			t.Errorf("oras manifest fetch after delete: %s", out)
		}
		clRun(t, dir, oras, "manifest", "delete", "--plain-http", "--force", ref(":multi"))
		clManifestGone(t, b, repo, multi)
		want := []string{"linux-amd64", "linux-arm64"}
		clSameSet(t, "oras repo tags after delete", clLines(clRun(t, dir, oras, "repo", "tags", "--plain-http", ref(""))), want)
		clSameSet(t, "GET tags/list after delete", clTags(t, b, repo), want)
		t.Logf("deleted %s (tags v1, v2, latest) and the index %s", v1, multi)
	})
}

// TestRegctl: regctl builds two single-platform images in an OCI layout (image create, image mod
// --layer-add) and an index of them (index create), copies them to berth, pulls them back to a
// layout and as blobs, lists tags and deletes a tag and a manifest by digest.
func TestRegctl(t *testing.T) {
	regctl := tool(t, "regctl")
	b := startBerth(t)
	dir := t.TempDir()
	host := "--host=reg=" + b.Addr + ",tls=disabled"
	repo := "regctl/img"
	remote := func(s string) string { return b.Addr + "/" + repo + s }
	layout := "ocidir://" + filepath.Join(dir, "layout")
	reg := func(t *testing.T, args ...string) string {
		t.Helper()
		return clRun(t, dir, regctl, append([]string{host}, args...)...)
	}

	content := map[string]string{"linux/amd64": "regctl amd64\n", "linux/arm64": "regctl arm64\n"}
	local := map[string]string{} // platform -> digest in the local layout
	var multi string
	clStep(t, "build", func(t *testing.T) {
		for p, c := range content {
			tag := strings.ReplaceAll(p, "/", "-")
			clWriteFile(t, filepath.Join(dir, tag+".tar"), clTar(t, map[string]string{"file.txt": c}))
			clRun(t, dir, regctl, "image", "create", layout+":base-"+tag, "--platform", p)
			clRun(t, dir, regctl, "image", "mod", layout+":base-"+tag, "--layer-add", "tar="+tag+".tar", "--create", tag)
			local[p] = strings.TrimSpace(clRun(t, dir, regctl, "image", "digest", layout+":"+tag))
		}
		clRun(t, dir, regctl, "index", "create", layout+":multi", "--ref", layout+":linux-amd64", "--ref", layout+":linux-arm64")
		multi = strings.TrimSpace(clRun(t, dir, regctl, "image", "digest", layout+":multi"))
		t.Logf("regctl built linux/amd64 %s, linux/arm64 %s, index %s", local["linux/amd64"], local["linux/arm64"], multi)
	})
	clStep(t, "push", func(t *testing.T) {
		reg(t, "image", "copy", layout+":linux-amd64", remote(":amd64"))
		want := local["linux/amd64"]
		if got := strings.TrimSpace(reg(t, "image", "digest", remote(":amd64"))); got != want {
			t.Errorf("regctl image digest %s:amd64 = %s, the layout has %s", repo, got, want)
		}
		body := clManifest(t, b, repo, "amd64", want, clOCIManifest)
		m := clParse(t, body)
		if len(m.Layers) != 1 {
			t.Fatalf("manifest: %s", body)
		}
		layer := reg(t, "blob", "get", remote(""), m.Layers[0].Digest)
		if got := clDigest([]byte(layer)); got != m.Layers[0].Digest {
			t.Errorf("regctl blob get: digest %s, want %s", got, m.Layers[0].Digest)
		}
		if got := clTarFile(t, []byte(layer), "file.txt"); got != content["linux/amd64"] {
			t.Errorf("layer file.txt = %q, want %q", got, content["linux/amd64"])
		}
		t.Logf("regctl image copy -> %s:amd64 %s; blob get returns the layer", repo, want)
	})
	clStep(t, "push-index", func(t *testing.T) {
		reg(t, "image", "copy", layout+":multi", remote(":multi"))
		if got := strings.TrimSpace(reg(t, "image", "digest", remote(":multi"))); got != multi {
			t.Errorf("regctl image digest %s:multi = %s, the layout has %s", repo, got, multi)
		}
		body := clManifest(t, b, repo, "multi", multi, clOCIIndex)
		if got := clPlatforms(t, body); len(got) != 2 || got["linux/amd64"] != local["linux/amd64"] || got["linux/arm64"] != local["linux/arm64"] {
			t.Fatalf("index platforms %v, want %v", got, local)
		}
		for p, want := range local {
			if got := strings.TrimSpace(reg(t, "image", "digest", "--platform", p, remote(":multi"))); got != want {
				t.Errorf("regctl image digest --platform %s = %s, want %s", p, got, want)
			}
			clManifest(t, b, repo, want, want, clOCIManifest)
		}
		reg(t, "image", "copy", layout+":linux-arm64", remote(":arm64"))
		t.Logf("regctl image copy -> %s:multi %s, both platforms resolve", repo, multi)
	})
	clStep(t, "pull", func(t *testing.T) {
		out := "ocidir://" + filepath.Join(dir, "pulled")
		reg(t, "image", "copy", remote(":multi"), out+":multi")
		if got := strings.TrimSpace(clRun(t, dir, regctl, "image", "digest", out+":multi")); got != multi {
			t.Errorf("pulled index digest %s, want %s", got, multi)
		}
		for p, want := range local {
			raw := clRun(t, dir, regctl, "manifest", "get", "--format", "raw-body", out+"@"+want)
			if got := clDigest([]byte(raw)); got != want {
				t.Fatalf("pulled %s manifest digest %s, want %s", p, got, want)
			}
			m := clParse(t, []byte(raw))
			layer := clReadFile(t, filepath.Join(dir, "pulled", "blobs", "sha256", strings.TrimPrefix(m.Layers[0].Digest, "sha256:")))
			if got := clTarFile(t, layer, "file.txt"); got != content[p] {
				t.Errorf("pulled %s file.txt = %q, want %q", p, got, content[p])
			}
		}
		t.Logf("regctl pulled %s:multi to a layout: index, both manifests and layers match", repo)
	})
	clStep(t, "tags", func(t *testing.T) {
		want := []string{"amd64", "arm64", "multi"}
		clSameSet(t, "regctl tag ls", clLines(reg(t, "tag", "ls", remote(""))), want)
		clSameSet(t, "GET tags/list", clTags(t, b, repo), want)
	})
	clStep(t, "delete", func(t *testing.T) {
		reg(t, "tag", "delete", remote(":arm64"))
		clManifestGone(t, b, repo, "arm64")
		clManifest(t, b, repo, local["linux/arm64"], local["linux/arm64"], clOCIManifest)
		clSameSet(t, "regctl tag ls after tag delete", clLines(reg(t, "tag", "ls", remote(""))), []string{"amd64", "multi"})

		reg(t, "manifest", "delete", remote("@"+multi))
		clManifestGone(t, b, repo, multi)
		clManifestGone(t, b, repo, "multi")
		if out := clRunFails(t, dir, regctl, host, "manifest", "head", remote(":multi")); !strings.Contains(out, "not found") {
			t.Errorf("regctl manifest head after delete: %s", out)
		}
		clSameSet(t, "GET tags/list after delete", clTags(t, b, repo), []string{"amd64"})
		t.Logf("regctl deleted tag arm64 and the index %s", multi)
	})
}

// clLayout writes an OCI image layout by hand (oci-layout, index.json, blobs/sha256/...), for the
// clients that cannot build images (skopeo).
type clLayout struct {
	t    *testing.T
	dir  string
	refs []clDesc
}

func (l *clLayout) blob(data []byte) string {
	d := clDigest(data)
	clWriteFile(l.t, filepath.Join(l.dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")), data)
	return d
}

// clImage is an image written to a layout.
type clImage struct {
	desc     clDesc // the manifest
	layer    string // the layer's digest
	content  string // hello.txt in the layer
	platform string
}

// image writes a one-layer image (gzip layer holding hello.txt) for os/arch.
func (l *clLayout) image(osArch, content string) clImage {
	t := l.t
	tarball := clTar(t, map[string]string{"hello.txt": content})
	layer := clGzip(t, tarball)
	goos, goarch, _ := strings.Cut(osArch, "/")
	cfg, err := json.Marshal(map[string]any{
		"architecture": goarch, "os": goos,
		"config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{clDigest(tarball)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := json.Marshal(clManifestJSON{
		SchemaVersion: 2, MediaType: clOCIManifest,
		Config: &clDesc{MediaType: clOCIConfig, Digest: l.blob(cfg), Size: int64(len(cfg))},
		Layers: []clDesc{{MediaType: clOCILayerGzip, Digest: l.blob(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return clImage{
		desc:  clDesc{MediaType: clOCIManifest, Digest: l.blob(m), Size: int64(len(m)), Platform: &clPlatform{OS: goos, Architecture: goarch}},
		layer: clDigest(layer), content: content, platform: osArch,
	}
}

// index writes an image index of images.
func (l *clLayout) index(images ...clImage) clDesc {
	idx := clManifestJSON{SchemaVersion: 2, MediaType: clOCIIndex}
	for _, im := range images {
		idx.Manifests = append(idx.Manifests, im.desc)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		l.t.Fatal(err)
	}
	return clDesc{MediaType: clOCIIndex, Digest: l.blob(b), Size: int64(len(b))}
}

// tag names d in index.json.
func (l *clLayout) tag(name string, d clDesc) {
	d.Platform = nil
	d.Annotations = map[string]string{"org.opencontainers.image.ref.name": name}
	l.refs = append(l.refs, d)
}

func (l *clLayout) finish() {
	b, err := json.Marshal(clManifestJSON{SchemaVersion: 2, MediaType: clOCIIndex, Manifests: l.refs})
	if err != nil {
		l.t.Fatal(err)
	}
	clWriteFile(l.t, filepath.Join(l.dir, "index.json"), b)
	clWriteFile(l.t, filepath.Join(l.dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
}

// TestSkopeo: skopeo copies images from an OCI layout the test writes by hand to berth (as OCI,
// as Docker v2s2 with --format, and a two-platform index with --all); berth restarts; skopeo
// inspects and pulls them back to dir: and oci: layouts, lists tags and deletes.
func TestSkopeo(t *testing.T) {
	skopeo := tool(t, "skopeo")
	b := startBerth(t)
	dir := t.TempDir()
	repo := "skopeo/img"
	dockerRepo := "skopeo/docker"
	docker := func(r, s string) string { return "docker://" + b.Addr + "/" + r + s }
	src := filepath.Join(dir, "src")
	sk := func(t *testing.T, args ...string) string {
		t.Helper()
		return clRun(t, dir, skopeo, append([]string{"--insecure-policy"}, args...)...)
	}
	push := func(t *testing.T, from, to string, extra ...string) string {
		t.Helper()
		df := filepath.Join(dir, "digest")
		os.Remove(df)
		args := append([]string{"copy", "--dest-tls-verify=false", "--digestfile", df}, extra...)
		sk(t, append(args, from, to)...)
		return strings.TrimSpace(string(clReadFile(t, df)))
	}

	l := &clLayout{t: t, dir: src}
	single := l.image("linux/amd64", "skopeo single image\n")
	amd := l.image("linux/amd64", "skopeo amd64\n")
	arm := l.image("linux/arm64", "skopeo arm64\n")
	index := l.index(amd, arm)
	l.tag("single", single.desc)
	l.tag("multi", index)
	l.finish()

	var dock string
	clStep(t, "push-oci", func(t *testing.T) {
		got := push(t, "oci:"+src+":single", docker(repo, ":v1"))
		if got != single.desc.Digest {
			t.Fatalf("skopeo pushed %s, the layout's manifest is %s", got, single.desc.Digest)
		}
		clManifest(t, b, repo, "v1", single.desc.Digest, clOCIManifest)
		t.Logf("skopeo copy oci:single -> %s:v1 %s (digest kept)", repo, got)
	})
	clStep(t, "push-docker-v2s2", func(t *testing.T) {
		dock = push(t, "oci:"+src+":single", docker(dockerRepo, ":v1"), "--format", "v2s2")
		if dock == single.desc.Digest {
			t.Fatalf("--format v2s2 kept the OCI digest %s", dock)
		}
		body := clManifest(t, b, dockerRepo, "v1", dock, clDockerManifest)
		if m := clParse(t, body); len(m.Layers) != 1 || m.Layers[0].Digest != single.layer {
			t.Fatalf("v2s2 manifest should reference the same gzip layer %s: %s", single.layer, body)
		}
		t.Logf("skopeo copy --format v2s2 -> %s:v1 %s", dockerRepo, dock)
	})
	clStep(t, "push-index", func(t *testing.T) {
		got := push(t, "oci:"+src+":multi", docker(repo, ":multi"), "--all")
		if got != index.Digest {
			t.Fatalf("skopeo copy --all pushed %s, the layout's index is %s", got, index.Digest)
		}
		body := clManifest(t, b, repo, "multi", index.Digest, clOCIIndex)
		if p := clPlatforms(t, body); len(p) != 2 || p["linux/amd64"] != amd.desc.Digest || p["linux/arm64"] != arm.desc.Digest {
			t.Fatalf("index platforms %v", p)
		}
		t.Logf("skopeo copy --all oci:multi -> %s:multi %s", repo, got)
	})

	clStep(t, "restart", func(t *testing.T) {
		b.Restart()
		t.Logf("berth restarted on %s", b.Addr)
	})

	clStep(t, "pull-oci", func(t *testing.T) {
		raw := sk(t, "inspect", "--tls-verify=false", "--raw", docker(repo, ":v1"))
		if got := clDigest([]byte(raw)); got != single.desc.Digest {
			t.Errorf("skopeo inspect --raw: digest %s, want %s", got, single.desc.Digest)
		}
		var info struct {
			Digest       string
			Architecture string
			Os           string
			Layers       []string
		}
		out := sk(t, "inspect", "--tls-verify=false", docker(repo, ":v1"))
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("skopeo inspect: %v\n%s", err, out)
		}
		if info.Digest != single.desc.Digest || info.Os != "linux" || info.Architecture != "amd64" ||
			!slices.Equal(info.Layers, []string{single.layer}) {
			t.Errorf("skopeo inspect: %s", out)
		}
		pulled := filepath.Join(dir, "pulled-v1")
		sk(t, "copy", "--src-tls-verify=false", docker(repo, ":v1"), "dir:"+pulled)
		if got := clDigest(clReadFile(t, filepath.Join(pulled, "manifest.json"))); got != single.desc.Digest {
			t.Errorf("pulled manifest.json digest %s, want %s", got, single.desc.Digest)
		}
		layer := clReadFile(t, filepath.Join(pulled, strings.TrimPrefix(single.layer, "sha256:")))
		if got := clDigest(layer); got != single.layer {
			t.Errorf("pulled layer digest %s, want %s", got, single.layer)
		}
		if got := clTarFile(t, layer, "hello.txt"); got != single.content {
			t.Errorf("pulled hello.txt = %q, want %q", got, single.content)
		}
		t.Logf("skopeo pulled %s:v1 to dir: manifest and layer bytes match", repo)
	})
	clStep(t, "pull-docker", func(t *testing.T) {
		raw := sk(t, "inspect", "--tls-verify=false", "--raw", docker(dockerRepo, ":v1"))
		if got := clDigest([]byte(raw)); got != dock {
			t.Errorf("skopeo inspect --raw: digest %s, want %s", got, dock)
		}
		if m := clParse(t, []byte(raw)); m.MediaType != clDockerManifest {
			t.Errorf("mediaType %q, want %q", m.MediaType, clDockerManifest)
		}
		pulled := filepath.Join(dir, "pulled-docker")
		sk(t, "copy", "--src-tls-verify=false", docker(dockerRepo, ":v1"), "dir:"+pulled)
		layer := clReadFile(t, filepath.Join(pulled, strings.TrimPrefix(single.layer, "sha256:")))
		if got := clTarFile(t, layer, "hello.txt"); got != single.content {
			t.Errorf("pulled hello.txt = %q, want %q", got, single.content)
		}
		t.Logf("skopeo pulled %s:v1 (v2s2) back with its layer", dockerRepo)
	})
	clStep(t, "pull-index", func(t *testing.T) {
		for _, im := range []clImage{amd, arm} {
			goos, goarch, _ := strings.Cut(im.platform, "/")
			pulled := filepath.Join(dir, "pulled-"+goarch)
			clRun(t, dir, skopeo, "--insecure-policy", "--override-os", goos, "--override-arch", goarch,
				"copy", "--src-tls-verify=false", docker(repo, ":multi"), "dir:"+pulled)
			if got := clDigest(clReadFile(t, filepath.Join(pulled, "manifest.json"))); got != im.desc.Digest {
				t.Errorf("%s from the index: manifest %s, want %s", im.platform, got, im.desc.Digest)
			}
			if got := clTarFile(t, clReadFile(t, filepath.Join(pulled, strings.TrimPrefix(im.layer, "sha256:"))), "hello.txt"); got != im.content {
				t.Errorf("%s hello.txt = %q, want %q", im.platform, got, im.content)
			}
			clManifest(t, b, repo, im.desc.Digest, im.desc.Digest, clOCIManifest)
		}
		out := filepath.Join(dir, "pulled-oci")
		df := filepath.Join(dir, "pulled-digest")
		sk(t, "copy", "--all", "--src-tls-verify=false", "--digestfile", df, docker(repo, ":multi"), "oci:"+out+":multi")
		if got := strings.TrimSpace(string(clReadFile(t, df))); got != index.Digest {
			t.Errorf("skopeo copy --all from berth: digest %s, want %s", got, index.Digest)
		}
		for _, d := range []string{index.Digest, amd.desc.Digest, arm.desc.Digest, amd.layer, arm.layer} {
			if got := clDigest(clReadFile(t, filepath.Join(out, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))); got != d {
				t.Errorf("pulled blob %s has digest %s", d, got)
			}
		}
		t.Logf("both platforms of %s pull by --override-arch; copy --all back to a layout keeps every digest", index.Digest)
	})
	clStep(t, "tags", func(t *testing.T) {
		var l struct {
			Repository string
			Tags       []string
		}
		out := sk(t, "list-tags", "--tls-verify=false", docker(repo, ""))
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("skopeo list-tags: %v\n%s", err, out)
		}
		clSameSet(t, "skopeo list-tags", l.Tags, []string{"multi", "v1"})
		clSameSet(t, "GET tags/list", clTags(t, b, repo), []string{"multi", "v1"})
	})
	clStep(t, "delete", func(t *testing.T) {
		// skopeo delete resolves the tag and deletes the manifest by digest.
		sk(t, "delete", "--tls-verify=false", docker(repo, ":v1"))
		clManifestGone(t, b, repo, single.desc.Digest)
		clManifestGone(t, b, repo, "v1")
		if out := clRunFails(t, dir, skopeo, "--insecure-policy", "inspect", "--tls-verify=false", "--raw", docker(repo, ":v1")); !strings.Contains(out, "manifest unknown") {
			t.Errorf("skopeo inspect after delete: %s", out)
		}
		sk(t, "delete", "--tls-verify=false", docker(dockerRepo, "@"+dock))
		clManifestGone(t, b, dockerRepo, dock)
		clSameSet(t, "GET tags/list after delete", clTags(t, b, repo), []string{"multi"})
		clManifest(t, b, repo, "multi", index.Digest, clOCIIndex)
		t.Logf("skopeo deleted %s:v1 (%s) and %s@%s", repo, single.desc.Digest, dockerRepo, dock)
	})
}
