package e2e

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuotaClients: a push over a storage quota, as crane, oras, regctl and skopeo show it. The
// quota on q/* is 64 KiB; each client pushes an image whose layer is 100 KiB of random bytes
// (which no compression shrinks) and fails. crane, oras and skopeo show berth's message, which
// names the quota; regctl shows only the status (its chunked upload drops error bodies), after
// retrying for about 45 s with backoff, so it runs in parallel.
func TestQuotaClients(t *testing.T) {
	t.Parallel()
	crane, oras, regctl, skopeo := tool(t, "crane"), tool(t, "oras"), tool(t, "regctl"), tool(t, "skopeo")
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte("quotas:\n  - repositories: q/*\n    max_bytes: 65536\n"))
	b := startBerth(t, "--config", cfg)
	dir := t.TempDir()
	big := make([]byte, 100<<10)
	rand.Read(big)
	clWriteFile(t, filepath.Join(dir, "big.bin"), big)
	clWriteFile(t, filepath.Join(dir, "big.tar"), clTar(t, map[string]string{"big.bin": string(big)}))
	l := &clLayout{t: t, dir: filepath.Join(dir, "layout")}
	l.tag("v1", l.image("linux/amd64", string(big)).desc)
	l.finish()
	ref := func(repo string) string { return b.Addr + "/q/" + repo + ":v1" }
	const message = "storage quota of q/* exceeded"
	// Outside the pattern nothing is bound.
	clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "big.tar", "-t", b.Addr+"/free/app:v1")
	for _, c := range []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{"crane", crane, []string{"append", "--oci-empty-base", "-f", "big.tar", "-t", ref("crane")}, message},
		{"oras", oras, []string{"push", "--plain-http", ref("oras"), "big.bin"}, message},
		{"skopeo", skopeo, []string{"--insecure-policy", "copy", "--dest-tls-verify=false", "oci:" + filepath.Join(dir, "layout") + ":v1", "docker://" + ref("skopeo")}, message},
		{"regctl", regctl, []string{"--host=reg=" + b.Addr + ",tls=disabled", "artifact", "put", "--artifact-type", "application/vnd.berth.test",
			"--file", "big.bin", ref("regctl")}, "[http 403]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "regctl" {
				t.Parallel()
			}
			out := clRunFails(t, dir, c.bin, c.args...)
			if !strings.Contains(out, c.want) {
				t.Errorf("%s over the quota printed:\n%s\nwant %q", c.name, out, c.want)
			}
			t.Logf("%s shows: %s", c.name, lastLine(out, c.want))
		})
	}
}

// lastLine is the last line of out that holds s.
func lastLine(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return strings.TrimSpace(lines[i])
		}
	}
	return fmt.Sprintf("(no line with %q)", s)
}
