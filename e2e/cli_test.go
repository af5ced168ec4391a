package e2e

// The berth binary's client commands against a berth it runs and a Docker Hub emulator:
// `berth upstreams` after pulls through the cache, and `berth copy` from the emulator into berth.
// The in-process tests of cmd/berth cover their options and errors; these check the binary's own
// output (a pipe, not a terminal: plain lines).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/proxy"
)

// cliExec runs the berth binary with a HOME of its own (no Docker config) and a 15 s timeout,
// and returns stdout and stderr apart.
func cliExec(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	home, err := os.MkdirTemp("", "berth-cli-home")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, berthBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"), "BERTH_URL=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// cliRun runs the berth binary and fails the test if the command fails.
func cliRun(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	o, e, err := cliExec(args...)
	if err != nil {
		t.Fatalf("berth %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o, e)
	}
	return o, e
}

func startHubemu(t *testing.T, opts hubemu.Options) *hubemu.Hub {
	t.Helper()
	hub, err := hubemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return hub
}

// cliGet GETs a path of berth and returns the body, failing the test unless the answer is 200
// and the body has digest dgst (when given).
func cliGet(t *testing.T, url, dgst string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, body)
	}
	if dgst != "" {
		if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != dgst {
			t.Fatalf("GET %s: content is not %s", url, dgst)
		}
	}
	return body
}

func TestCLIUpstreams(t *testing.T) {
	hub := startHubemu(t, hubemu.Options{Limit: 100, Window: time.Hour})
	img, err := hub.PushImage("library/nginx", "1.27", []byte("layer one"), []byte("layer two, a little longer"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := fmt.Sprintf("proxy:\n  defaults: false\n  rules:\n    - prefix: docker-hub\n      upstream: %s\n"+
		"      docker_hub: true\n      revalidate: always\n", hub.RegistryURL())
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, "--config", cfg)

	// A cold pull (manifest GET upstream, three blob GETs), a warm one (a HEAD revalidates), and
	// one while the upstream answers 503 (the HEAD fails, the cached copy is served stale).
	base := b.URL() + "/v2/docker-hub/nginx/"
	cliGet(t, base+"manifests/1.27", img.Digest)
	for _, d := range append([]string{img.Config}, img.Layers...) {
		cliGet(t, base+"blobs/"+d, d)
	}
	cliGet(t, base+"manifests/1.27", img.Digest)
	hub.SetFault(hubemu.Fault{Kind: hubemu.Status5xx, On: hubemu.Manifests})
	cliGet(t, base+"manifests/1.27", img.Digest)
	hub.SetFault()
	n := hub.Counts()
	if n.ManifestGet != 1 || n.ManifestHead != 2 || n.BlobGet != 3 {
		t.Fatalf("the hub saw %+v; want 1 manifest GET, 2 HEADs, 3 blob GETs", n)
	}

	// What berth's API says agrees with what the hub saw (berth also counts the GET that met the
	// 401 challenge); the command prints exactly that.
	var doc struct{ Upstreams []proxy.Status }
	if err := json.Unmarshal(cliGet(t, b.URL()+"/berth/v1/upstreams", ""), &doc); err != nil || len(doc.Upstreams) != 1 {
		t.Fatalf("upstreams API: %v, %+v", err, doc)
	}
	st := doc.Upstreams[0]
	r, c := st.Requests, st.Cache
	if r.ManifestGets < n.ManifestGet || r.ManifestHeads != n.ManifestHead || r.BlobGets != n.BlobGet ||
		r.BlobBytes != n.BlobBytes || st.Quota.Remaining != 100-int(n.Pulls) || c.StaleServes != 1 ||
		c.Revalidations != 2 || r.Errors[proxy.KindUnavailable] != 1 || len(r.Errors) != 1 {
		t.Errorf("berth reports %+v; the hub saw %+v", st, n)
	}
	if n.BlobBytes >= 1024 || n.BlobBytes < int64(len("layer one")) {
		t.Errorf("the hub sent %d blob bytes; this test expects a few hundred", n.BlobBytes)
	}
	out, _ := cliRun(t, "upstreams", "--url", b.URL())
	for _, want := range []string{
		"docker-hub",
		fmt.Sprintf("  quota          %d of 100 remaining, window 1h, source 127.0.0.1 (seen ", 100-n.Pulls),
		fmt.Sprintf("  manifests      %d GET, %d HEAD\n", r.ManifestGets, n.ManifestHead),
		fmt.Sprintf("  blobs          %d GET, %d B fetched, 0 HEAD\n", n.BlobGet, n.BlobBytes),
		fmt.Sprintf("  cache          %d hits, %d misses, 2 revalidations\n", c.Hits, c.Misses),
		"  stale serves   1\n",
		"  quota saves    0\n",
		"  coalesced      0 waiters\n",
		"  errors         unavailable 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("berth upstreams lacks %q:\n%s", want, out)
		}
	}

	// --json is what the API says.
	raw, _ := cliRun(t, "upstreams", "--json", "--url", b.Addr)
	api := cliGet(t, b.URL()+"/berth/v1/upstreams", "")
	var fromCLI, fromAPI any
	if err := json.Unmarshal([]byte(raw), &fromCLI); err != nil {
		t.Fatalf("--json printed %q: %v", raw, err)
	}
	json.Unmarshal(api, &fromAPI)
	if a, b := fmt.Sprint(fromCLI), fmt.Sprint(fromAPI); a != b {
		t.Errorf("--json:\n%s\nAPI:\n%s", a, b)
	}
}

func TestCLICopy(t *testing.T) {
	hub := startHubemu(t, hubemu.Options{RealmOnRegistry: true})
	idx, err := hub.PushIndex("library/multi", "2.0")
	if err != nil {
		t.Fatal(err)
	}
	b := startBerth(t)
	src := hub.Host() + "/library/multi:2.0"
	dst := b.Addr + "/mirror/multi:2.0"
	out, errOut := cliRun(t, "copy", src, dst)
	if want := b.Addr + "/mirror/multi@" + idx.Digest + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	cliGet(t, b.URL()+"/v2/mirror/multi/manifests/2.0", idx.Digest)
	for _, c := range idx.Children {
		cliGet(t, b.URL()+"/v2/mirror/multi/manifests/"+c.Digest, c.Digest)
		for _, d := range append([]string{c.Config}, c.Layers...) {
			cliGet(t, b.URL()+"/v2/mirror/multi/blobs/"+d, d)
		}
	}
	// Plain lines on a pipe: what, which platforms, progress, the end; no carriage returns.
	want := regexp.MustCompile(`^copying ` + regexp.QuoteMeta(src+" to "+dst) + `\n` +
		`index ` + idx.Digest + `: 2 manifests\n` +
		`  linux/amd64 ` + idx.Children[0].Digest + `\n` +
		`  linux/arm64/v8 ` + idx.Children[1].Digest + `\n` +
		`(progress: \S+ \S+ of \S+ \S+ \(\d+%\)\n)*` +
		`progress: (\S+ \S+) of (\S+ \S+) \(100%\)\n` +
		`copied \S+ \S+ in \S+\n$`)
	if !want.MatchString(errOut) {
		t.Errorf("stderr:\n%s", errOut)
	}
}

// Pre-warming: berth refuses pushes into a cache prefix, so a copy *from* the prefix (through
// the cache) fills it; afterwards the image is served without asking the upstream for anything
// but a HEAD of the tag.
func TestCLICopyPrewarm(t *testing.T) {
	hub := startHubemu(t, hubemu.Options{Limit: 100, RealmOnRegistry: true})
	idx, err := hub.PushIndex("library/multi", "3.0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := fmt.Sprintf("proxy:\n  defaults: false\n  rules:\n    - prefix: docker-hub\n      upstream: %s\n"+
		"      docker_hub: true\n      revalidate: always\n", hub.RegistryURL())
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, "--config", cfg)

	out, _ := cliRun(t, "copy", b.Addr+"/docker-hub/multi:3.0", b.Addr+"/warm/multi")
	if want := b.Addr + "/warm/multi@" + idx.Digest + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	// A copy into the cache prefix is refused, with berth's reason.
	if _, errOut, err := cliExec("copy", b.Addr+"/warm/multi:3.0", b.Addr+"/docker-hub/other:1"); err == nil ||
		!strings.Contains(errOut, "pull-through cache") {
		t.Errorf("a copy into the cache prefix: %v\n%s", err, errOut)
	}
	pulls := hub.Counts().Pulls
	if pulls != 3 {
		t.Errorf("pre-warming cost %d pulls, want 3 (the index and two platform manifests)", pulls)
	}
	hub.ResetCounts()
	cliGet(t, b.URL()+"/v2/docker-hub/multi/manifests/3.0", idx.Digest)
	for _, c := range idx.Children {
		cliGet(t, b.URL()+"/v2/docker-hub/multi/manifests/"+c.Digest, c.Digest)
		for _, d := range append([]string{c.Config}, c.Layers...) {
			cliGet(t, b.URL()+"/v2/docker-hub/multi/blobs/"+d, d)
		}
	}
	if n := hub.Counts(); n.ManifestGet != 0 || n.BlobGet != 0 || n.Pulls != 0 {
		t.Errorf("a pull of the pre-warmed image reached the upstream: %+v", n)
	}
}

// TestCLILifecycleValidate: the binary checks an ECR lifecycle policy file, says what a valid one
// does on stdout, and refuses an invalid one with each problem on stderr and exit status 1.
func TestCLILifecycleValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "policy.json")
	// ECR's "Filtering on multiple rules" example A, as its documentation prints it (with commas).
	if err := os.WriteFile(good, []byte(`{"rules": [
		{"rulePriority": 1, "description": "Rule 1", "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
		{"rulePriority": 2, "description": "Rule 2", "selection": {"tagStatus": "tagged", "tagPrefixList": ["beta"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := cliRun(t, "lifecycle", "validate", good)
	if !strings.Contains(out, "valid, 2 rule(s)") || !strings.Contains(out, "1: images with tags starting prod: keep the 1 most recently pushed") {
		t.Errorf("stdout:\n%s", out)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"rules": [
		{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countNumber": 14}, "action": {"type": "expire"}},
		{"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPatternList": ["a*b*c*d*e*f"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cliExec("lifecycle", "validate", bad)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	for _, want := range []string{
		"rules[1].selection.countUnit: required with countType sinceImagePushed",
		"rules[2].selection.tagPatternList[1]: \"a*b*c*d*e*f\" has 5 wildcards; ECR allows at most 4",
		`rules[1].rulePriority: a rule with tagStatus "any" must have the highest rulePriority`,
		"berth: " + bad + ": invalid lifecycle policy: 3 problem(s)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if out != "" {
		t.Errorf("stdout for an invalid policy: %q", out)
	}
}
