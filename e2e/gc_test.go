package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGC: `berth gc` beside a running berth. Two images pushed with crane, one deleted: within
// the grace period nothing goes; a dry run names the deleted image's two blobs (its config and
// layer) and deletes nothing; the pass deletes exactly those from the data directory (listed
// directly), and the other image still pulls whole.
func TestGC(t *testing.T) {
	crane := tool(t, "crane")
	b := startBerth(t)
	dir := t.TempDir()
	ref := func(s string) string { return b.Addr + "/gc/app" + s }
	clWriteFile(t, filepath.Join(dir, "keep.tar"), clTar(t, map[string]string{"keep.txt": "kept\n"}))
	clWriteFile(t, filepath.Join(dir, "gone.tar"), clTar(t, map[string]string{"gone.txt": "deleted\n"}))
	clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "keep.tar", "-t", ref(":keep"))
	gone := clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "gone.tar", "-t", ref(":gone")))
	goneBlobs := map[string]bool{}
	m := clParse(t, clManifest(t, b, "gc/app", gone, gone, clOCIManifest))
	goneBlobs[m.Config.Digest] = true
	for _, l := range m.Layers {
		goneBlobs[l.Digest] = true
	}
	clRun(t, dir, crane, "delete", ref("@"+gone))

	stored := func() map[string]bool {
		files, err := filepath.Glob(filepath.Join(b.Data, "blobs", "sha256", "*", "*"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, f := range files {
			out["sha256:"+filepath.Base(f)] = true
		}
		return out
	}
	before := stored()
	for d := range goneBlobs {
		if !before[d] {
			t.Fatalf("the deleted image's blob %s is not in the data directory before gc", d)
		}
	}
	deleted := regexp.MustCompile(`(would delete|deleted) (\d+) \((\d+) bytes\)`)
	count := func(out string) string {
		t.Helper()
		m := deleted.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("berth gc printed %q", out)
		}
		return m[2]
	}
	if out := b.Admin("gc"); count(out) != "0" {
		t.Errorf("berth gc within the grace period (24h): %q; want nothing deleted", out)
	}
	if out := b.Admin("gc", "--dry-run", "--grace", "0s"); count(out) != "2" || !strings.Contains(out, "would delete") {
		t.Errorf("berth gc --dry-run: %q; want 2 blobs it would delete", out)
	}
	if n := len(stored()); n != len(before) {
		t.Errorf("a dry run left %d blobs of %d", n, len(before))
	}
	if out := b.Admin("gc", "--grace", "0s"); count(out) != "2" {
		t.Errorf("berth gc: %q; want 2 deleted", out)
	}
	after := stored()
	for d := range before {
		if after[d] == goneBlobs[d] {
			t.Errorf("blob %s: stored %v after gc; the deleted image's: %v", d, after[d], goneBlobs[d])
		}
	}
	// The kept image pulls whole (crane verifies every digest).
	clRun(t, dir, crane, "pull", "--format", "oci", ref(":keep"), filepath.Join(dir, "pulled"))
}
