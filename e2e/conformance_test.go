package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConformance runs the OCI distribution-spec conformance suite (spec 1.1, every API and data
// area) against berth and requires zero failures.
//
// Two things stay off, on purpose: "sparse" data (manifests whose blobs were never pushed), since
// berth rejects those with MANIFEST_BLOB_UNKNOWN; and anonymous cross-mounts (no ?from=), which
// berth answers with a new upload session, since mounting by digest alone would let anyone who knows
// a digest read a blob from a repository they were never given.
func TestConformance(t *testing.T) {
	bin := tool(t, "conformance")
	b := startBerth(t)
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	cmd := []string{
		"OCI_REGISTRY=" + b.Addr,
		"OCI_TLS=disabled",
		"OCI_RESULTS_DIR=" + results,
		"OCI_VERSION=1.1",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_TAG_PARAM=true",
		"OCI_DATA_SHA512=true",
	}
	out, err := runEnv(dir, cmd, bin)
	junit, _ := os.ReadFile(filepath.Join(results, "junit.xml"))
	m := regexp.MustCompile(`tests="(\d+)" failures="(\d+)"`).FindSubmatch(junit)
	if m == nil {
		t.Fatalf("conformance produced no junit.xml (err %v):\n%s", err, out)
	}
	var skipped []string
	for _, s := range regexp.MustCompile(`<testcase name="([^"]*)"[^>]*status="skipped"`).FindAllSubmatch(junit, -1) {
		skipped = append(skipped, string(s[1]))
	}
	t.Logf("conformance: %s checks, %s failures, skipped %q", m[1], m[2], skipped)
	if string(m[2]) != "0" || err != nil {
		t.Fatalf("conformance failed (%v): %s failures\n%s\nberth log:\n%s", err, m[2], out, b.Log())
	}
	// Zero failures of zero checks would prove nothing; and only the anonymous mounts may be
	// skipped (see above).
	if string(m[1]) == "0" {
		t.Errorf("conformance ran no checks:\n%s", out)
	}
	for _, s := range skipped {
		if !strings.HasSuffix(s, "/blob-mount-anonymous") {
			t.Errorf("conformance skipped %q", s)
		}
	}
}
