package registry_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/berth/berth/internal/oci"
)

type referrersIndex struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// getReferrers checks a 200 referrers response and decodes it.
func (e *env) getReferrers(t *testing.T, path string) (referrersIndex, resp) {
	t.Helper()
	r := e.do(t, "GET", path, nil)
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	checkHeaders(t, r, map[string]string{
		"Content-Type":   oci.MediaTypeImageIndex,
		"Content-Length": strconv.Itoa(len(r.body)),
	})
	var idx referrersIndex
	if err := json.Unmarshal(r.body, &idx); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != oci.MediaTypeImageIndex || idx.Manifests == nil {
		t.Errorf("not an image index with a manifests list: %s", r.body)
	}
	return idx, r
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "refs"
	img := e.image(t, repo, "subject", oci.MediaTypeImageManifest)
	subjectD := e.pushManifest(t, repo, "latest", oci.MediaTypeImageManifest, img)
	subject := descOf(oci.MediaTypeImageManifest, img)

	const sbom, sig = "application/vnd.example.sbom", "application/vnd.example.sig"
	sbomBody := e.artifact(t, repo, sbom, &subject, "org.opencontainers.image.created", "2024-01-01T00:00:00Z", "kind", "sbom")
	sigBody := e.artifact(t, repo, sig, &subject)
	// An image (no artifactType) with a subject: its config media type stands for artifactType.
	cfg := []byte(`{"referring":"image"}`)
	e.pushBlob(t, repo, cfg)
	imgRef := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest,
		Config: ptr(descOf("application/vnd.example.config+json", cfg)), Subject: &subject}.bytes(t)
	// An index with a subject and an artifactType.
	idxRef := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, ArtifactType: "application/vnd.example.bundle",
		Manifests: []oci.Descriptor{subject}, Subject: &subject, Annotations: map[string]string{"bundle": "yes"}}.bytes(t)
	// A referrer pushed by tag, and one that refers to something else.
	pushes := []struct {
		ref, mediaType string
		body           []byte
	}{
		{sha256Of(sbomBody).String(), oci.MediaTypeImageManifest, sbomBody},
		{"sig", oci.MediaTypeImageManifest, sigBody},
		{sha256Of(imgRef).String(), oci.MediaTypeImageManifest, imgRef},
		{sha256Of(idxRef).String(), oci.MediaTypeImageIndex, idxRef},
	}
	for _, p := range pushes {
		e.pushManifest(t, repo, p.ref, p.mediaType, p.body)
	}
	unrelated := descOf(oci.MediaTypeImageManifest, sbomBody)
	e.pushManifest(t, repo, "unrelated", oci.MediaTypeImageManifest, e.artifact(t, repo, sbom, &unrelated))

	want := map[string]oci.Descriptor{
		sbom: {MediaType: oci.MediaTypeImageManifest, Digest: sha256Of(sbomBody), Size: int64(len(sbomBody)), ArtifactType: sbom,
			Annotations: map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "kind": "sbom"}},
		sig: {MediaType: oci.MediaTypeImageManifest, Digest: sha256Of(sigBody), Size: int64(len(sigBody)), ArtifactType: sig},
		"application/vnd.example.config+json": {MediaType: oci.MediaTypeImageManifest, Digest: sha256Of(imgRef), Size: int64(len(imgRef)),
			ArtifactType: "application/vnd.example.config+json"},
		"application/vnd.example.bundle": {MediaType: oci.MediaTypeImageIndex, Digest: sha256Of(idxRef), Size: int64(len(idxRef)),
			ArtifactType: "application/vnd.example.bundle", Annotations: map[string]string{"bundle": "yes"}},
	}
	base := "/v2/" + repo + "/referrers/" + subjectD.String()

	for _, tc := range []struct {
		name     string
		query    string
		types    []string // artifactTypes expected
		filtered bool
	}{
		{"all", "", []string{sbom, sig, "application/vnd.example.config+json", "application/vnd.example.bundle"}, false},
		{"sbom", "?artifactType=" + sbom, []string{sbom}, true},
		{"config type", "?artifactType=application/vnd.example.config%2Bjson", []string{"application/vnd.example.config+json"}, true},
		{"index", "?artifactType=application/vnd.example.bundle", []string{"application/vnd.example.bundle"}, true},
		{"no match", "?artifactType=application/vnd.example.none", nil, true},
		{"empty filter", "?artifactType=", []string{sbom, sig, "application/vnd.example.config+json", "application/vnd.example.bundle"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			idx, r := e.getReferrers(t, base+tc.query)
			applied := ""
			if tc.filtered {
				applied = "artifactType"
			}
			checkHeaders(t, r, map[string]string{"OCI-Filters-Applied": applied})
			if len(idx.Manifests) != len(tc.types) {
				t.Fatalf("%d referrers, want %d: %s", len(idx.Manifests), len(tc.types), r.body)
			}
			for _, at := range tc.types {
				w := want[at]
				i := slices.IndexFunc(idx.Manifests, func(d oci.Descriptor) bool { return d.Digest == w.Digest })
				if i < 0 {
					t.Errorf("referrer %s (%s) missing: %s", w.Digest, at, r.body)
					continue
				}
				got := idx.Manifests[i]
				if got.MediaType != w.MediaType || got.Size != w.Size || got.ArtifactType != w.ArtifactType ||
					!maps.Equal(got.Annotations, w.Annotations) {
					t.Errorf("referrer\n got %+v\nwant %+v", got, w)
				}
			}
		})
	}

	for _, tc := range []struct{ name, path string }{
		{"unknown digest", "/v2/" + repo + "/referrers/" + goodD},
		{"unknown sha512", "/v2/" + repo + "/referrers/" + sha512D},
		{"unknown repository", "/v2/nowhere/referrers/" + subjectD.String()},
		{"unknown repository filtered", "/v2/nowhere/referrers/" + subjectD.String() + "?artifactType=" + sbom},
		{"a layer", "/v2/" + repo + "/referrers/" + sha256Of(cfg).String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if idx, r := e.getReferrers(t, tc.path); len(idx.Manifests) != 0 {
				t.Errorf("referrers %s, want none", r.body)
			}
		})
	}

	for _, tc := range []struct{ name, path string }{
		{"short", "/v2/" + repo + "/referrers/" + shortD},
		{"upper case", "/v2/" + repo + "/referrers/" + upperD},
		{"tag", "/v2/" + repo + "/referrers/latest"},
		{"unknown algorithm", "/v2/" + repo + "/referrers/md5:d41d8cd98f00b204e9800998ecf8427e"},
	} {
		t.Run("invalid "+tc.name, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, "GET", tc.path, nil), http.StatusBadRequest, oci.ErrDigestInvalid)
		})
	}
}

// TestReferrersFollowDeletes: deleting a referrer removes it from the list; referrers are per
// repository.
func TestReferrersFollowDeletes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := e.image(t, "a", "subject", oci.MediaTypeImageManifest)
	subjectD := e.pushManifest(t, "a", "latest", oci.MediaTypeImageManifest, img)
	subject := descOf(oci.MediaTypeImageManifest, img)
	sigBody := e.artifact(t, "a", "application/vnd.example.sig", &subject)
	sigD := e.pushManifest(t, "a", sha256Of(sigBody).String(), oci.MediaTypeImageManifest, sigBody)

	if idx, r := e.getReferrers(t, "/v2/a/referrers/"+subjectD.String()); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sigD {
		t.Fatalf("referrers %s, want %s", r.body, sigD)
	}
	// The same subject digest in another repository has no referrers there.
	e.image(t, "b", "subject", oci.MediaTypeImageManifest)
	e.pushManifest(t, "b", "latest", oci.MediaTypeImageManifest, img)
	if idx, r := e.getReferrers(t, "/v2/b/referrers/"+subjectD.String()); len(idx.Manifests) != 0 {
		t.Errorf("referrers in b: %s", r.body)
	}
	if r := e.do(t, "DELETE", "/v2/a/manifests/"+sigD.String(), nil); r.code != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", r.code, r.body)
	}
	if idx, r := e.getReferrers(t, "/v2/a/referrers/"+subjectD.String()); len(idx.Manifests) != 0 {
		t.Errorf("referrers after delete: %s", r.body)
	}
}
