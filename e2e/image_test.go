package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestImage builds berth's own image with scripts/image.sh (two static binaries, no base image),
// pushes it into a berth that requires a login, and pulls it back with crane: an index of
// linux/amd64 and linux/arm64 whose configs run /usr/local/bin/berth as 65532:65532 with the
// OCI labels, whose layer holds the user and its /data, and whose binary for this machine runs
// and names the commit. A second build of the same commit gives the same digest.
func TestImage(t *testing.T) {
	crane := tool(t, "crane")
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed: image.sh stamps the release and commit from the checkout")
	}
	commit := strings.TrimSpace(gitOut(t, "rev-parse", "HEAD"))
	b := startSecureBerth(t)
	dir := t.TempDir()
	env := []string{"DOCKER_CONFIG=" + filepath.Join(dir, ".docker"), "PATH=" + filepath.Dir(crane) + string(os.PathListSeparator) + os.Getenv("PATH")}
	run := func(timeout time.Duration, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = repoRoot, append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	run(time.Minute, crane, "auth", "login", b.Addr, "-u", "admin", "-p", b.AdminPassword())

	build := func(tag string) (repo, digest string) {
		t.Helper()
		out := strings.TrimSpace(run(15*time.Minute, filepath.Join(repoRoot, "scripts", "image.sh"), b.Addr+"/berth/berth:"+tag))
		last := out[strings.LastIndex(out, "\n")+1:]
		repo, digest, ok := strings.Cut(last, "@")
		if !ok || repo != b.Addr+"/berth/berth" || !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("image.sh printed %q, want %s/berth/berth@sha256:...", out, b.Addr)
		}
		return repo, digest
	}
	repo, digest := build("v1")
	if got := strings.TrimSpace(run(time.Minute, crane, "digest", repo+":v1")); got != digest {
		t.Fatalf("crane digest %s:v1 = %s, image.sh printed %s", repo, got, digest)
	}

	var index struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			Digest   string `json:"digest"`
			Platform struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	mustJSON(t, run(time.Minute, crane, "manifest", repo+"@"+digest), &index)
	if index.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index media type %q", index.MediaType)
	}
	images := map[string]string{} // platform → manifest digest
	for _, m := range index.Manifests {
		images[m.Platform.OS+"/"+m.Platform.Architecture] = m.Digest
	}
	if len(images) != 2 || images["linux/amd64"] == "" || images["linux/arm64"] == "" {
		t.Fatalf("index platforms = %v, want linux/amd64 and linux/arm64", images)
	}
	for platform, d := range images {
		var cfg struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Config       struct {
				User       string
				Entrypoint []string
				Cmd        []string
				WorkingDir string
				Labels     map[string]string
			} `json:"config"`
		}
		mustJSON(t, run(time.Minute, crane, "config", repo+"@"+d), &cfg)
		c := cfg.Config
		if got := cfg.OS + "/" + cfg.Architecture; got != platform {
			t.Errorf("%s: config says %s", platform, got)
		}
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532 (not root)", platform, c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/berth"}) || len(c.Cmd) == 0 || c.Cmd[0] != "serve" || !slices.Contains(c.Cmd, "/data") {
			t.Errorf("%s: entrypoint %q cmd %q, want berth serve ... /data", platform, c.Entrypoint, c.Cmd)
		}
		if c.WorkingDir != "/data" {
			t.Errorf("%s: workdir %q", platform, c.WorkingDir)
		}
		for k, want := range map[string]string{"org.opencontainers.image.revision": commit, "org.opencontainers.image.source": "https://github.com/berth/berth"} {
			if c.Labels[k] != want {
				t.Errorf("%s: label %s = %q, want %q", platform, k, c.Labels[k], want)
			}
		}
		for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.created"} {
			if c.Labels[k] == "" {
				t.Errorf("%s: no label %s", platform, k)
			}
		}
	}

	// The layer as a container runtime unpacks it: the user, its data directory, the binary.
	here := "linux/" + runtime.GOARCH
	if images[here] == "" {
		t.Fatalf("no image for this machine (%s) to run", here)
	}
	files := map[string]*tar.Header{}
	var passwd, certs []byte
	bin := filepath.Join(dir, "berth")
	tr := tar.NewReader(strings.NewReader(run(5*time.Minute, crane, "export", repo+"@"+images[here], "-")))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")
		files[name] = h
		switch name {
		case "etc/passwd":
			passwd, _ = io.ReadAll(tr)
		case "etc/ssl/certs/ca-certificates.crt":
			certs, _ = io.ReadAll(tr)
		case "usr/local/bin/berth":
			body, _ := io.ReadAll(tr)
			if err := os.WriteFile(bin, body, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h := files["usr/local/bin/berth"]; h == nil || h.Mode&0o777 != 0o755 || h.Uid != 0 {
		t.Fatalf("usr/local/bin/berth in the layer: %+v, want mode 0755 owned by root", h)
	}
	if h := files["data"]; h == nil || h.Typeflag != tar.TypeDir || h.Uid != 65532 || h.Gid != 65532 {
		t.Errorf("data in the layer: %+v, want a directory owned by 65532:65532", h)
	}
	if !bytes.Contains(passwd, []byte("berth:x:65532:65532:")) {
		t.Errorf("etc/passwd has no user 65532:\n%s", passwd)
	}
	if !bytes.Contains(certs, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("etc/ssl/certs/ca-certificates.crt holds no certificate (%d bytes)", len(certs))
	}
	line := run(time.Minute, bin, "version")
	if !strings.Contains(line, "commit "+commit[:12]) || !strings.Contains(line, "berth ") {
		t.Errorf("berth version from the image printed %q, want commit %s", line, commit[:12])
	}
	t.Run("serves as 65532", func(t *testing.T) {
		imageServes(t, run(5*time.Minute, crane, "export", repo+"@"+images[here], "-"))
	})

	// Reproducible: a second build of this commit (another tag) is the same index, byte for byte.
	if _, again := build("v1-again"); again != digest {
		t.Errorf("a second build of one commit gave %s, the first %s", again, digest)
	}
}

// imageServes unpacks the image's filesystem and runs berth in it as the image does — chrooted,
// as 65532:65532, in /data — which a container runtime would (this machine may have none): it
// must come up (first start writes the admin password into /data) and answer /readyz.
func imageServes(t *testing.T, fsTar string) {
	if os.Geteuid() != 0 {
		t.Skip("chroot and files owned by 65532 need root")
	}
	root := t.TempDir()
	untar := exec.Command("tar", "-x", "--same-owner", "-p", "-C", root)
	untar.Stdin = strings.NewReader(fsTar)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	var log syncBuffer
	srv := exec.Command("chroot", "--userspec=65532:65532", root, "/usr/local/bin/berth", "serve", "--addr", addr, "--data", "/data")
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Kill()
		<-exited
	}()
	var out []byte
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err = exec.Command("chroot", "--userspec=65532:65532", root, "/usr/local/bin/berth", "health", "--ready", "--url", "http://"+addr).CombinedOutput()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			exited <- werr // for the deferred wait
			t.Fatalf("berth in the image's filesystem, as 65532, exited: %v\n%s", werr, log.String())
		default:
		}
	}
	if err != nil {
		t.Fatalf("berth in the image's filesystem, as 65532, is not ready: %v %s\n%s", err, out, log.String())
	}
	if fi, err := os.Stat(filepath.Join(root, "data", "admin-password")); err != nil {
		t.Errorf("no admin password in /data: %v\n%s", err, log.String())
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 {
		t.Errorf("/data/admin-password owned by %d, want 65532", st.Uid)
	}
}

func gitOut(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
}

// TestImageReadme: the ECS task definition in the README is JSON that ECS would take for berth's
// image: its health check runs the binary (the image has no shell), on the port it maps.
func TestImageReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "**ECS on Fargate**")
	if !ok {
		t.Fatal("README has no **ECS on Fargate** paragraph")
	}
	_, rest, _ = strings.Cut(rest, "```json\n")
	block, _, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("no ```json block after **ECS on Fargate**")
	}
	var td struct {
		Family               string
		ContainerDefinitions []struct {
			Image        string
			Command      []string
			PortMappings []struct{ ContainerPort int }
			HealthCheck  struct{ Command []string }
			Secrets      []struct{ Name, ValueFrom string }
		}
	}
	if err := json.Unmarshal([]byte(block), &td); err != nil {
		t.Fatalf("the README's task definition: %v\n%s", err, block)
	}
	if len(td.ContainerDefinitions) != 1 {
		t.Fatalf("%d container definitions", len(td.ContainerDefinitions))
	}
	c := td.ContainerDefinitions[0]
	if len(c.HealthCheck.Command) < 3 || c.HealthCheck.Command[0] != "CMD" || c.HealthCheck.Command[1] != "/usr/local/bin/berth" || c.HealthCheck.Command[2] != "health" {
		t.Errorf("healthCheck.command %q: the image has no shell, it must run [CMD /usr/local/bin/berth health ...]", c.HealthCheck.Command)
	}
	if len(c.PortMappings) != 1 || c.PortMappings[0].ContainerPort != 5000 || !slices.Contains(c.Command, ":5000") {
		t.Errorf("port mappings %+v for command %q", c.PortMappings, c.Command)
	}
	for _, s := range c.Secrets {
		if !strings.Contains(string(readme), s.Name) || !strings.HasPrefix(s.ValueFrom, "arn:aws:") {
			t.Errorf("secret %+v", s)
		}
	}

	// The systemd unit: systemd-analyze verify says nothing about a good unit. It only warns
	// (exit status 0) on an unknown key or value, so any output fails the test.
	const unitStart = "# /etc/systemd/system/berth.service\n"
	_, rest, ok = strings.Cut(string(readme), unitStart)
	unit, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatalf("README has no ```ini block starting %q", unitStart)
	}
	analyze := tool(t, "systemd-analyze")
	dir := t.TempDir()
	// verify wants ExecStart's binary to exist: any executable does.
	unit = strings.ReplaceAll(unit, "/usr/local/bin/berth", berthBin)
	if err := os.WriteFile(filepath.Join(dir, "berth.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "berth.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify on the README's unit: %v\n%s", err, out)
	}
}
