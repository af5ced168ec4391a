package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// imageRun runs a command in the repository with crane's directory first on PATH.
func imageRun(t *testing.T, crane string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(crane)+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// TestImage builds berth's own image with scripts/image.sh into a berth, pulls it back with crane
// and checks what the README promises: both platforms, a non-root user, the entrypoint and
// command, the labels, the files of the layer, the binary's version, and a reproducible digest.
func TestImage(t *testing.T) {
	crane := tool(t, "crane")
	b := startBerth(t)
	ref := b.Addr + "/berth/berth:test"
	commit := strings.TrimSpace(imageRun(t, crane, "git", "rev-parse", "HEAD"))

	lines := strings.Fields(imageRun(t, crane, "scripts/image.sh", ref))
	if len(lines) == 0 {
		t.Fatal("scripts/image.sh printed nothing")
	}
	pushed := lines[len(lines)-1]
	if !strings.HasPrefix(pushed, b.Addr+"/berth/berth@sha256:") {
		t.Fatalf("scripts/image.sh printed %q, want %s/berth/berth@sha256:...", pushed, b.Addr)
	}

	// The script's intermediate images are gone: the repository has REF's tag only.
	if tags := strings.Fields(imageRun(t, crane, crane, "ls", b.Addr+"/berth/berth")); !slices.Equal(tags, []string{"test"}) {
		t.Errorf("the repository has the tags %v, want [test]", tags)
	}

	var index struct {
		MediaType string
		Manifests []struct {
			MediaType string
			Digest    string
			Platform  struct{ OS, Architecture string }
		}
	}
	if err := json.Unmarshal([]byte(imageRun(t, crane, crane, "manifest", ref)), &index); err != nil {
		t.Fatal(err)
	}
	if index.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("the tag is a %q, want an OCI index", index.MediaType)
	}
	var platforms []string
	images := map[string]string{} // architecture -> digest
	for _, m := range index.Manifests {
		platforms = append(platforms, m.Platform.OS+"/"+m.Platform.Architecture)
		images[m.Platform.Architecture] = m.Digest
	}
	slices.Sort(platforms)
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("the index lists %v, want linux/amd64 and linux/arm64", platforms)
	}

	for arch, digest := range images {
		var cfg struct {
			OS, Architecture string
			Config           struct {
				User, WorkingDir string
				Entrypoint, Cmd  []string
				ExposedPorts     map[string]struct{}
				Labels           map[string]string
			}
		}
		if err := json.Unmarshal([]byte(imageRun(t, crane, crane, "config", b.Addr+"/berth/berth@"+digest)), &cfg); err != nil {
			t.Fatal(err)
		}
		c := cfg.Config
		for _, check := range []struct{ what, got, want string }{
			{"platform", cfg.OS + "/" + cfg.Architecture, "linux/" + arch},
			{"user", c.User, "65532:65532"},
			{"working directory", c.WorkingDir, "/data"},
			{"entrypoint", strings.Join(c.Entrypoint, " "), "/usr/local/bin/berth"},
			{"command", strings.Join(c.Cmd, " "), "serve --addr :5000 --data /data"},
			{"revision label", c.Labels["org.opencontainers.image.revision"], commit},
			{"source label", c.Labels["org.opencontainers.image.source"], "https://github.com/berth/berth"},
		} {
			if check.got != check.want {
				t.Errorf("%s: %s is %q, want %q", arch, check.what, check.got, check.want)
			}
		}
		if _, ok := c.ExposedPorts["5000/tcp"]; !ok {
			t.Errorf("%s: exposed ports %v, want 5000/tcp", arch, c.ExposedPorts)
		}
		for _, l := range []string{"org.opencontainers.image.version", "org.opencontainers.image.created"} {
			if c.Labels[l] == "" {
				t.Errorf("%s: no %s label: %v", arch, l, c.Labels)
			}
		}
	}

	// The amd64 filesystem: crane export flattens the image into one tar.
	export := imageRun(t, crane, crane, "export", b.Addr+"/berth/berth@"+images["amd64"], "-")
	type entry struct {
		mode     int64
		uid, gid int
		body     []byte
	}
	files := map[string]entry{}
	tr := tar.NewReader(strings.NewReader(export))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = entry{h.Mode & 0o7777, h.Uid, h.Gid, body}
	}
	for _, want := range []struct {
		name     string
		mode     int64
		uid, gid int
	}{
		{"usr/local/bin/berth", 0o755, 0, 0},
		{"etc/passwd", 0o644, 0, 0},
		{"etc/group", 0o644, 0, 0},
		{"etc/ssl/certs/ca-certificates.crt", 0o644, 0, 0},
		{"data", 0o750, 65532, 65532},
		{"tmp", 0o1777, 0, 0},
	} {
		got, ok := files[want.name]
		if !ok {
			t.Errorf("the image has no /%s", want.name)
			continue
		}
		if got.mode != want.mode || got.uid != want.uid || got.gid != want.gid {
			t.Errorf("/%s: mode %o owner %d:%d, want %o %d:%d", want.name, got.mode, got.uid, got.gid, want.mode, want.uid, want.gid)
		}
	}
	if !strings.Contains(string(files["etc/passwd"].body), "\nberth:x:65532:65532:") {
		t.Errorf("/etc/passwd has no berth user 65532:\n%s", files["etc/passwd"].body)
	}
	if !bytes.Contains(files["etc/ssl/certs/ca-certificates.crt"].body, []byte("BEGIN CERTIFICATE")) {
		t.Error("/etc/ssl/certs/ca-certificates.crt holds no certificate")
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if err := os.WriteFile(bin, files["usr/local/bin/berth"].body, 0o755); err != nil {
		t.Fatal(err)
	}
	var v struct{ Release, Commit, GoVersion string }
	if err := json.Unmarshal([]byte(imageRun(t, crane, bin, "version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Commit != commit || v.GoVersion != runtime.Version() || v.Release == "" || v.Release == "(devel)" {
		t.Errorf("the image's berth version --json = %+v, want commit %s, %s and a git describe release", v, commit, runtime.Version())
	}

	// The binary from the image serves, and says what it is to Prometheus too.
	served := &berth{t: t, Data: t.TempDir(), bin: bin}
	metricsAddr := freeAddr(t)
	served.start("--metrics-addr", metricsAddr)
	t.Cleanup(served.Stop)
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	info := fmt.Sprintf(`berth_build_info{commit=%q,goversion=%q,version=%q} 1`, commit, runtime.Version(), v.Release)
	if !strings.Contains(string(exposition), "\n"+info+"\n") {
		t.Errorf("the image's berth has no %s in /metrics:\n%s", info, grepLines(string(exposition), "berth_build_info"))
	}

	// The container health check of the README's task definition, run by the image's binary.
	if out := imageRun(t, crane, bin, "health", "--ready", "--url", served.URL()); out != "ready\n" {
		t.Errorf("the image's berth health --ready = %q, want ready", out)
	}

	// Reproducible: the same commit built again is the same index, byte for byte.
	lines = strings.Fields(imageRun(t, crane, "scripts/image.sh", ref))
	if again := lines[len(lines)-1]; again != pushed {
		t.Errorf("a second build pushed %s, the first %s", again, pushed)
	}
}

// grepLines returns the lines of s that contain word.
func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
