package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestImmutabilityClients: with team/* IMMUTABLE_WITH_EXCLUSION (dev-* excluded), crane, oras,
// regctl and skopeo each try to push another image to the immutable tag team/app:v1 and fail,
// showing TAG_INVALID and the message that names the rule; each pushes the image v1 already
// names to it again and succeeds (ECR refuses that too), and the excluded dev-* tags move.
func TestImmutabilityClients(t *testing.T) {
	crane, oras, regctl, skopeo := tool(t, "crane"), tool(t, "oras"), tool(t, "regctl"), tool(t, "skopeo")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(`immutability:
  - repositories: "team/*"
    mode: IMMUTABLE_WITH_EXCLUSION
    filters: ["dev-*"]
`))
	b := &berth{t: t, Data: t.TempDir(), config: cfg}
	b.start()
	t.Cleanup(b.Stop)
	ref := func(tag string) string { return b.Addr + "/team/app:" + tag }

	// Two images, at the excluded tags dev-a and dev-b; v1 names the first.
	clWriteFile(t, filepath.Join(dir, "a.tar"), clTar(t, map[string]string{"a.txt": "image a\n"}))
	clWriteFile(t, filepath.Join(dir, "b.tar"), clTar(t, map[string]string{"b.txt": "image b\n"}))
	a := clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "a.tar", "-t", ref("dev-a")))
	other := clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "b.tar", "-t", ref("dev-b")))
	clRun(t, dir, crane, "tag", ref("dev-a"), "v1")
	clManifest(t, b, "team/app", "v1", a, clOCIManifest)
	// dev-* is excluded: it moves.
	clRun(t, dir, crane, "tag", ref("dev-b"), "dev-a")
	clManifest(t, b, "team/app", "dev-a", other, clOCIManifest)
	clRun(t, dir, crane, "tag", ref("v1"), "dev-a")

	message := "tag v1 of team/app is immutable (rule team/* IMMUTABLE_WITH_EXCLUSION): it points at " + a
	regHost := "--host=reg=" + b.Addr + ",tls=disabled"
	clWriteFile(t, filepath.Join(dir, "c.txt"), []byte("an artifact\n"))
	for _, c := range []struct {
		client      string
		bin         string
		code        string   // how the client shows the code: oras and skopeo print Distribution's description of it
		other, same []string // push another image to v1; push v1's own image to it
	}{
		{"crane", crane, "TAG_INVALID", []string{"copy", ref("dev-b"), ref("v1")}, []string{"copy", ref("dev-a"), ref("v1")}},
		{"oras", oras, "tag invalid: ", []string{"push", "--plain-http", ref("v1"), "c.txt:text/plain"},
			[]string{"cp", "--from-plain-http", "--to-plain-http", ref("dev-a"), ref("v1")}},
		{"regctl", regctl, "TAG_INVALID", []string{regHost, "image", "copy", ref("dev-b"), ref("v1")},
			[]string{regHost, "image", "copy", ref("dev-a"), ref("v1")}},
		{"skopeo", skopeo, "tag invalid: ", []string{"--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
			"docker://" + ref("dev-b"), "docker://" + ref("v1")},
			[]string{"--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
				"docker://" + ref("dev-a"), "docker://" + ref("v1")}},
	} {
		t.Run(c.client, func(t *testing.T) {
			out := clRunFails(t, dir, c.bin, c.other...)
			for _, want := range []string{c.code, message} {
				if !strings.Contains(out, want) {
					t.Errorf("%s pushing another image to v1: output lacks %q:\n%s", c.client, want, out)
				}
			}
			for _, line := range clLines(out) {
				if strings.Contains(line, message) {
					t.Logf("%s shows: %s", c.client, strings.TrimSpace(line))
					break
				}
			}
			clManifest(t, b, "team/app", "v1", a, clOCIManifest)
			clRun(t, dir, c.bin, c.same...)
			clManifest(t, b, "team/app", "v1", a, clOCIManifest)
		})
	}
}
