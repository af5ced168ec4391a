package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConformanceAuth runs the OCI distribution-spec conformance suite, configured as
// TestConformance, against berth with authentication on, logged in as a robot granted
// pull,push,delete on the suite's two repositories (OCI_REPO1, OCI_REPO2: this version of the
// suite has no OCI_NAMESPACE / OCI_CROSSMOUNT_NAMESPACE), and requires zero failures.
//
// The suite answers each 401 by fetching a token for the challenge's scope with Basic
// credentials, and caches it per repository and kind of request. The cross-repository mount
// (POST ?mount=&from=repo2) therefore carries a token for the target repository only: berth
// does not mount from a repository the token does not let the caller pull, and answers 202 (a
// plain upload), which the suite counts as a skip ("fell back to blob POST+PUT"), not a failure.
func TestConformanceAuth(t *testing.T) {
	t.Parallel()
	conformanceAuth(t, startSecureBerth(t))
}

// conformanceAuth is TestConformanceAuth on b, a berth with authentication on (or the replicas
// behind a load balancer: TestReplicas).
func conformanceAuth(t *testing.T, b *berth) {
	bin := tool(t, "conformance")
	secret := authRobot(b, "conformance", "conformance/*", "pull,push,delete")
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	env := []string{
		"OCI_REGISTRY=" + b.Addr,
		"OCI_TLS=disabled",
		"OCI_RESULTS_DIR=" + results,
		"OCI_VERSION=1.1",
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		"OCI_USERNAME=conformance",
		"OCI_PASSWORD=" + secret,
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_TAG_PARAM=true",
		"OCI_DATA_SHA512=true",
	}
	out, err := runEnv(dir, append(env, authClientEnv(dir)...), bin)
	junit, _ := os.ReadFile(filepath.Join(results, "junit.xml"))
	m := regexp.MustCompile(`tests="(\d+)" failures="(\d+)"`).FindSubmatch(junit)
	if m == nil {
		t.Fatalf("conformance produced no junit.xml (err %v):\n%s", err, out)
	}
	var skipped []string
	for _, s := range regexp.MustCompile(`<testcase name="([^"]*)"[^>]*status="skipped"`).FindAllSubmatch(junit, -1) {
		skipped = append(skipped, string(s[1]))
	}
	t.Logf("conformance with auth: %s checks, %s failures, skipped %q", m[1], m[2], skipped)
	if string(m[2]) != "0" || err != nil {
		t.Fatalf("conformance with auth failed (%v): %s failures\n%s\nberth log:\n%s", err, m[2], out, b.Log())
	}
	// Only the mounts may be skipped (see above; TestAuthMount shows the mount with a token
	// that carries both scopes).
	for _, s := range skipped {
		if !strings.Contains(s, "/mount") {
			t.Errorf("conformance with auth skipped %q", s)
		}
	}
	// The suite really logged in: berth issued tokens to the robot (the audit lines go to the
	// main log without auth.audit_log).
	if !strings.Contains(b.Log(), "subject=robot:conformance") {
		t.Errorf("berth's log shows no token issued to robot:conformance")
	}
}

// TestAuthMount: a cross-repository mount needs pull on the source in the caller's token (or
// grants, with Basic): a token for both repositories mounts (201); a token for the target only,
// or a source the caller may not pull, gets a plain upload session (202), so that a digest is
// never a key to another repository's blobs.
func TestAuthMount(t *testing.T) {
	b := startSecureBerth(t)
	admin := basicAuth("admin", b.AdminPassword())
	secret := authRobot(b, "mounter", "team/*", "pull,push")
	team := authPushImage(t, b, admin, "team/src", "v1", "mount me\n")
	hidden := authPushImage(t, b, admin, "secret/src", "v1", "do not mount me\n")

	mount := func(authz, from, dgst string) authResp {
		t.Helper()
		return authDo(t, http.MethodPost, b.URL()+"/v2/team/dst/blobs/uploads/?mount="+dgst+"&from="+from, authz, nil)
	}
	both := bearerAuth(authToken(t, b, "mounter", secret, "repository:team/dst:pull,push", "repository:team/src:pull"))
	if r := mount(both, "team/src", team.Layer); r.Status != http.StatusCreated {
		t.Errorf("mount with a token for both repositories: %s, want 201", r)
	}
	targetOnly := bearerAuth(authToken(t, b, "mounter", secret, "repository:team/dst:pull,push"))
	if r := mount(targetOnly, "team/src", team.Config); r.Status != http.StatusAccepted {
		t.Errorf("mount with a token for the target only: %s, want 202", r)
	}
	if r := mount(basicAuth("mounter", secret), "team/src", team.Config); r.Status != http.StatusCreated {
		t.Errorf("mount with Basic credentials allowed to pull the source: %s, want 201", r)
	}
	hiddenTok := bearerAuth(authToken(t, b, "mounter", secret, "repository:team/dst:pull,push", "repository:secret/src:pull"))
	for _, authz := range []string{hiddenTok, basicAuth("mounter", secret)} {
		if r := mount(authz, "secret/src", hidden.Layer); r.Status != http.StatusAccepted {
			t.Errorf("mount from a repository the caller may not pull: %s, want 202", r)
		}
	}
	if r := authDo(t, http.MethodHead, b.URL()+"/v2/team/dst/blobs/"+hidden.Layer, admin, nil); r.Status != http.StatusNotFound {
		t.Errorf("the refused mount put the blob in team/dst: HEAD %d", r.Status)
	}
}
