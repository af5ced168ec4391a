package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/hubemu"
	"github.com/berth/berth/internal/server"
)

// startServer runs berth in-process on a free loopback port until the test ends, and returns
// its host:port.
func startServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := config.Default()
	cfg.Addr, cfg.Data, cfg.Dev = addr, t.TempDir(), true
	off := false
	cfg.Proxy.Defaults = &off
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		// A connection that was dialled but never carried a request (Go's transports race dials)
		// holds a graceful shutdown for 5 s: close the clients' idle connections first.
		http.DefaultClient.CloseIdleConnections()
		remote.DefaultTransport.(*http.Transport).CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("berth: %v", err)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("berth stopped: %v", err)
		default:
		}
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
	}
	t.Fatal("berth did not become ready")
	return ""
}

// fetchVerified GETs a manifest or blob from the registry at addr and checks that its content
// has digest dgst (and, for a manifest, that the registry says so too).
func fetchVerified(t *testing.T, addr, repo, kind, ref, dgst string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/%s/%s/%s", addr, repo, kind, ref), nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s %s: %d %v %s", kind, ref, resp.StatusCode, err, body)
	}
	sum := sha256.Sum256(body)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != dgst {
		t.Fatalf("%s %s in %s: content is %s, want %s", kind, ref, repo, got, dgst)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != dgst {
		t.Fatalf("%s %s in %s: Docker-Content-Digest %q, want %s", kind, ref, repo, h, dgst)
	}
	return body
}

// checkImage checks that the image manifest dgst and all its blobs are intact in repo at addr.
func checkImage(t *testing.T, addr, repo string, img hubemu.Image) {
	t.Helper()
	fetchVerified(t, addr, repo, "manifests", img.Digest, img.Digest)
	for _, d := range append([]string{img.Config}, img.Layers...) {
		fetchVerified(t, addr, repo, "blobs", d, d)
	}
}

func TestCopyIndex(t *testing.T) {
	hub := startHub(t, hubemu.Options{RealmOnRegistry: true, Users: map[string]string{"alice": "s3cret"}})
	idx, err := hub.PushIndex("library/multi", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t)
	defer func(old time.Duration) { progressEvery = old }(progressEvery)
	progressEvery = 0 // a line per update

	src := hub.Host() + "/library/multi:1.0"
	dst := addr + "/mirror/multi" // no tag: SRC's
	out, errOut, err := runBerth(t, "", "copy", "--src-creds", "alice:s3cret", src, dst)
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, errOut)
	}
	if want := dst + "@" + idx.Digest + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}

	// The index by its tag and digest, every platform manifest and every blob, byte for byte.
	body := fetchVerified(t, addr, "mirror/multi", "manifests", "1.0", idx.Digest)
	if !bytes.Equal(body, idx.Manifest) {
		t.Errorf("the index changed on the way:\n%s\nwant\n%s", body, idx.Manifest)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(body, &im); err != nil || len(im.Manifests) != 2 {
		t.Fatalf("index: %v, %d manifests", err, len(im.Manifests))
	}
	for _, child := range idx.Children {
		checkImage(t, addr, "mirror/multi", child)
	}

	// The plain-line output: what is copied, progress lines that only grow, the end.
	if strings.Contains(errOut, "\r") {
		t.Errorf("a non-terminal got a redrawn bar:\n%q", errOut)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	want := []string{
		"copying " + src + " to " + dst + ":1.0",
		"index " + idx.Digest + ": 2 manifests",
		"  linux/amd64 " + idx.Children[0].Digest,
		"  linux/arm64/v8 " + idx.Children[1].Digest,
	}
	if len(lines) < len(want)+2 {
		t.Fatalf("stderr:\n%s", errOut)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("stderr line %d = %q, want %q", i, lines[i], w)
		}
	}
	progress := regexp.MustCompile(`^progress: ([0-9.]+ K?i?B) of ([0-9.]+ K?i?B) \((\d+)%\)$`)
	var m []string
	for _, l := range lines[len(want) : len(lines)-1] {
		if m = progress.FindStringSubmatch(l); m == nil {
			t.Fatalf("not a progress line: %q", l)
		}
	}
	if m[1] != m[2] || m[3] != "100" {
		t.Errorf("the last progress line is %q", lines[len(lines)-2])
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "copied "+m[2]+" in ") {
		t.Errorf("last line = %q, want copied %s in ...", last, m[2])
	}

	// Again: everything is there already, nothing is uploaded, the result is the same.
	out2, _, err := runBerth(t, "", "copy", "--src-creds", "alice:s3cret", src, dst+":again")
	if err != nil || out2 != dst+"@"+idx.Digest+"\n" {
		t.Fatalf("second copy: %q, %v", out2, err)
	}
	fetchVerified(t, addr, "mirror/multi", "manifests", "again", idx.Digest)
}

func TestCopyOnePlatform(t *testing.T) {
	hub := startHub(t, hubemu.Options{RealmOnRegistry: true})
	idx, err := hub.PushIndex("library/multi", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t)
	arm := idx.Children[1]
	out, errOut, err := runBerth(t, "", "copy", "--platform", "linux/arm64/v8",
		hub.Host()+"/library/multi@"+idx.Digest, addr+"/one/multi:arm")
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, errOut)
	}
	if want := addr + "/one/multi@" + arm.Digest + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	fetchVerified(t, addr, "one/multi", "manifests", "arm", arm.Digest)
	checkImage(t, addr, "one/multi", arm)
	if !strings.Contains(errOut, "copying only linux/arm64/v8 "+arm.Digest) {
		t.Errorf("stderr:\n%s", errOut)
	}

	// By digest without a DST tag: pushed by the digest of the platform image.
	amd := idx.Children[0]
	out, errOut, err = runBerth(t, "", "copy", "--all-platforms=false", "--platform", "linux/amd64",
		hub.Host()+"/library/multi@"+idx.Digest, addr+"/two/multi")
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, errOut)
	}
	if want := addr + "/two/multi@" + amd.Digest + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	checkImage(t, addr, "two/multi", amd)
	if !strings.HasPrefix(errOut, "copying "+hub.Host()+"/library/multi@"+idx.Digest+" to "+addr+"/two/multi@"+amd.Digest+"\n") {
		t.Errorf("stderr:\n%s", errOut)
	}
}

func TestCopyErrors(t *testing.T) {
	hub := startHub(t, hubemu.Options{RealmOnRegistry: true, Users: map[string]string{"alice": "s3cret"}})
	if _, err := hub.PushImage("library/one", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.PushIndex("library/multi", "1"); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{hub.Host() + "/library/one:1", addr + "/x:1", "--src-creds", "alice:wrong"}, "fetching"},
		{[]string{hub.Host() + "/library/one:1", addr + "/x:1", "--src-creds", "nocolon"}, "USER:PASSWORD"},
		{[]string{hub.Host() + "/library/none:1", addr + "/x:1"}, "fetching"},
		{[]string{"not a reference", addr + "/x:1"}, "not a reference"},
		{[]string{hub.Host() + "/library/multi:1", addr + "/x:1", "--platform", "windows/amd64"}, "windows/amd64"},
	} {
		_, _, err := runBerth(t, "", append([]string{"copy"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("copy %v: err = %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

func TestIsLoopbackRegistry(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:5000": true, "127.3.4.5": true,
		"[::1]:5000": true, "::1": true, "registry-1.docker.io": false, "10.0.0.1:5000": false,
		"localhost.example.com": false,
	} {
		if got := isLoopbackRegistry(host); got != want {
			t.Errorf("isLoopbackRegistry(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressPrinter(&buf, true)
	p.every = 0
	updates := make(chan v1.Update, 3)
	updates <- v1.Update{Total: 4096, Complete: 1024}
	updates <- v1.Update{Total: 4096, Complete: 4096}
	close(updates)
	last := p.run(updates)
	p.finish(last)
	if last.Complete != 4096 || last.Total != 4096 {
		t.Errorf("last update %+v", last)
	}
	out := buf.String()
	for _, want := range []string{"\r[=======>", " 25%  1.0 KiB / 4.0 KiB", "\r[==============================] 100%  4.0 KiB / 4.0 KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output %q lacks %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("bar output does not end its line: %q", out)
	}
}
