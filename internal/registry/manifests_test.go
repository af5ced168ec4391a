package registry_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// checkManifest asserts that GET (and HEAD) of ref in repo answer body as mediaType.
func (e *env) checkManifest(t *testing.T, repo, ref, mediaType string, body []byte, d digest.Digest) {
	t.Helper()
	for _, method := range []string{"GET", "HEAD"} {
		r := e.do(t, method, "/v2/"+repo+"/manifests/"+ref, nil)
		if r.code != http.StatusOK {
			t.Fatalf("%s %s:%s: %d %s", method, repo, ref, r.code, r.body)
		}
		want := body
		if method == "HEAD" {
			want = nil
		}
		if !bytes.Equal(r.body, want) {
			t.Errorf("%s %s:%s: body %s, want %s", method, repo, ref, r.body, want)
		}
		checkHeaders(t, r, map[string]string{
			"Content-Type":          mediaType,
			"Docker-Content-Digest": d.String(),
			"Content-Length":        strconv.Itoa(len(body)),
		})
	}
}

// TestManifestKinds pushes each kind of manifest by tag and by digest, pulls it back both ways,
// deletes the tag and then the manifest.
func TestManifestKinds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kinds := []struct {
		name      string
		mediaType string // Content-Type of the PUT and of the GET
		body      func(t *testing.T, repo string) []byte
	}{
		{"OCI image", oci.MediaTypeImageManifest, func(t *testing.T, repo string) []byte {
			return e.image(t, repo, "oci", oci.MediaTypeImageManifest)
		}},
		{"OCI image without mediaType", oci.MediaTypeImageManifest, func(t *testing.T, repo string) []byte {
			return e.image(t, repo, "oci without mediaType", "")
		}},
		{"OCI index", oci.MediaTypeImageIndex, func(t *testing.T, repo string) []byte {
			return e.index(t, repo, oci.MediaTypeImageIndex, oci.MediaTypeImageManifest)
		}},
		{"Docker schema 2", oci.MediaTypeDockerManifest, func(t *testing.T, repo string) []byte {
			return e.image(t, repo, "docker", oci.MediaTypeDockerManifest)
		}},
		{"Docker manifest list", oci.MediaTypeDockerList, func(t *testing.T, repo string) []byte {
			return e.index(t, repo, oci.MediaTypeDockerList, oci.MediaTypeDockerManifest)
		}},
		{"artifact", oci.MediaTypeImageManifest, func(t *testing.T, repo string) []byte {
			e.pushBlob(t, repo, oci.EmptyJSON)
			return e.artifact(t, repo, "application/vnd.example.sbom", nil)
		}},
		{"artifact without its empty config", oci.MediaTypeImageManifest, func(t *testing.T, repo string) []byte {
			return e.artifact(t, repo, "application/vnd.example.sbom", nil)
		}},
		{"foreign layer", oci.MediaTypeDockerManifest, func(t *testing.T, repo string) []byte {
			cfg := []byte(`{"os":"windows"}`)
			e.pushBlob(t, repo, cfg)
			return manifest{SchemaVersion: 2, MediaType: oci.MediaTypeDockerManifest,
				Config: ptr(descOf(dockerConfig, cfg)),
				Layers: []oci.Descriptor{{
					MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
					Digest:    sha256Of([]byte("never pushed")), Size: 12,
					URLs: []string{"https://example.com/layer"},
				}},
			}.bytes(t)
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			repo := "kinds/" + strings.ToLower(strings.ReplaceAll(k.name, " ", "-"))
			body := k.body(t, repo)
			d := sha256Of(body)

			r := e.putManifest(t, repo, "v1", k.mediaType, body)
			if r.code != http.StatusCreated {
				t.Fatalf("PUT by tag: %d %s", r.code, r.body)
			}
			checkHeaders(t, r, map[string]string{
				"Location":              "/v2/" + repo + "/manifests/" + d.String(),
				"Docker-Content-Digest": d.String(),
				"Content-Length":        "0",
				"OCI-Subject":           "",
				"OCI-Tag":               "",
			})
			e.checkManifest(t, repo, "v1", k.mediaType, body, d)
			e.checkManifest(t, repo, d.String(), k.mediaType, body, d)

			// Pushing again by digest is idempotent.
			r = e.putManifest(t, repo, d.String(), k.mediaType, body)
			if r.code != http.StatusCreated {
				t.Fatalf("PUT by digest: %d %s", r.code, r.body)
			}
			checkHeaders(t, r, map[string]string{
				"Location":              "/v2/" + repo + "/manifests/" + d.String(),
				"Docker-Content-Digest": d.String(),
			})

			// Deleting the tag leaves the manifest.
			if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/v1", nil); r.code != http.StatusAccepted {
				t.Fatalf("DELETE tag: %d %s", r.code, r.body)
			}
			checkError(t, e.do(t, "GET", "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, oci.ErrManifestUnknown)
			e.checkManifest(t, repo, d.String(), k.mediaType, body, d)

			if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+d.String(), nil); r.code != http.StatusAccepted {
				t.Fatalf("DELETE digest: %d %s", r.code, r.body)
			}
			checkError(t, e.do(t, "GET", "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, oci.ErrManifestUnknown)
			checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, oci.ErrManifestUnknown)
			checkError(t, e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, oci.ErrManifestUnknown)
		})
	}

	t.Run("empty config is served", func(t *testing.T) {
		t.Parallel()
		const repo = "kinds/empty-config"
		e.pushManifest(t, repo, "sbom", oci.MediaTypeImageManifest, e.artifact(t, repo, "application/vnd.example.sbom", nil))
		e.checkBlob(t, repo, oci.EmptyJSONDigest, oci.EmptyJSON)
	})

	t.Run("sha512", func(t *testing.T) {
		t.Parallel()
		const repo = "kinds/sha512"
		body := e.image(t, repo, "sha512", oci.MediaTypeImageManifest)
		d := digest.SHA512.FromBytes(body)
		r := e.putManifest(t, repo, d.String()+"?tag=v512", oci.MediaTypeImageManifest, body)
		if r.code != http.StatusCreated {
			t.Fatalf("%d %s", r.code, r.body)
		}
		checkHeaders(t, r, map[string]string{
			"Location":              "/v2/" + repo + "/manifests/" + d.String(),
			"Docker-Content-Digest": d.String(),
			"OCI-Tag":               "v512",
		})
		e.checkManifest(t, repo, d.String(), oci.MediaTypeImageManifest, body, d)
		e.checkManifest(t, repo, "v512", oci.MediaTypeImageManifest, body, d)
	})
}

// index pushes two images of childType and returns an index of them.
func (e *env) index(t *testing.T, repo, mediaType, childType string) []byte {
	t.Helper()
	var children []oci.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		m := e.image(t, repo, arch, childType)
		e.pushManifest(t, repo, sha256Of(m).String(), childType, m)
		desc := descOf(childType, m)
		desc.Platform = []byte(`{"architecture":"` + arch + `","os":"linux"}`)
		children = append(children, desc)
	}
	return manifest{SchemaVersion: 2, MediaType: mediaType, Manifests: children}.bytes(t)
}

// artifact returns an artifact manifest of artifactType with the empty config and one layer, with
// subject if it is not nil. The layer is pushed; the empty config is not.
func (e *env) artifact(t *testing.T, repo, artifactType string, subject *oci.Descriptor, annotations ...string) []byte {
	t.Helper()
	layer := []byte("payload of " + artifactType + " " + strings.Join(annotations, ","))
	e.pushBlob(t, repo, layer)
	m := manifest{
		SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType,
		Config:  ptr(descOf(oci.MediaTypeEmptyJSON, oci.EmptyJSON)),
		Layers:  []oci.Descriptor{descOf("application/octet-stream", layer)},
		Subject: subject,
	}
	if len(annotations) > 0 {
		m.Annotations = map[string]string{}
		for i := 0; i+1 < len(annotations); i += 2 {
			m.Annotations[annotations[i]] = annotations[i+1]
		}
	}
	return m.bytes(t)
}

func TestManifestPutRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "refused"
	good := e.image(t, repo, "good", oci.MediaTypeImageManifest)
	cfg := []byte(`{"refused":true}`)
	e.pushBlob(t, repo, cfg)
	e.pushBlob(t, "elsewhere", []byte("layer elsewhere"))
	missingLayer := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest,
		Config: ptr(descOf(ociConfig, cfg)),
		Layers: []oci.Descriptor{descOf(ociLayer, []byte("never pushed"))}}.bytes(t)
	missingConfig := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest,
		Config: ptr(descOf(ociConfig, []byte("never pushed")))}.bytes(t)
	otherRepoLayer := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest,
		Config: ptr(descOf(ociConfig, cfg)),
		Layers: []oci.Descriptor{descOf(ociLayer, []byte("layer elsewhere"))}}.bytes(t)
	unknownChild := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex,
		Manifests: []oci.Descriptor{descOf(oci.MediaTypeImageManifest, good)}}.bytes(t)
	schema1 := []byte(`{"schemaVersion":1,"name":"refused","tag":"latest","architecture":"amd64",` +
		`"fsLayers":[{"blobSum":"` + goodD + `"}],"history":[{"v1Compatibility":"{}"}]}`)
	signed1 := []byte(`{"schemaVersion":1,"name":"refused","tag":"latest","fsLayers":[],"history":[],` +
		`"signatures":[{"header":{"alg":"ES256"},"signature":"x","protected":"y"}]}`)
	badDigest := bytes.Replace(good, []byte(`"digest":"sha256:`), []byte(`"digest":"sha256:XX`), 1)

	for _, tc := range []struct {
		name        string
		ref         string // default: the tag "t"
		contentType string
		body        []byte
		status      int
		code        oci.Code
		message     string // a part of the message (never empty: "" is in every message)
	}{
		{"schema 1", "", oci.MediaTypeDockerSchema1, schema1, 400, oci.ErrManifestInvalid, "schema 1"},
		{"signed schema 1", "", oci.MediaTypeDockerSchema1S, signed1, 400, oci.ErrManifestInvalid, "schema 1"},
		{"schema 1 without Content-Type", "", "", schema1, 400, oci.ErrManifestInvalid, "schema 1"},
		{"schema 1 as JSON", "", "application/json", schema1, 400, oci.ErrManifestInvalid, "schema 1"},
		{"missing layer", "", oci.MediaTypeImageManifest, missingLayer, 400, oci.ErrManifestBlobUnknown, "unknown to the repository"},
		{"missing config", "", oci.MediaTypeImageManifest, missingConfig, 400, oci.ErrManifestBlobUnknown, "unknown to the repository"},
		{"layer of another repository", "", oci.MediaTypeImageManifest, otherRepoLayer, 400, oci.ErrManifestBlobUnknown, "unknown to the repository"},
		{"index with unknown child", "", oci.MediaTypeImageIndex, unknownChild, 400, oci.ErrManifestUnknown, "unknown to the repository"},
		{"invalid JSON", "", oci.MediaTypeImageManifest, []byte(`{"schemaVersion":2,`), 400, oci.ErrManifestInvalid, "JSON"},
		{"not an object", "", oci.MediaTypeImageManifest, []byte(`[]`), 400, oci.ErrManifestInvalid, "JSON"},
		{"empty body", "", oci.MediaTypeImageManifest, []byte{}, 400, oci.ErrManifestInvalid, "JSON"},
		{"no schemaVersion", "", oci.MediaTypeImageManifest, bytes.Replace(good, []byte(`"schemaVersion":2,`), nil, 1), 400, oci.ErrManifestInvalid, "schemaVersion"},
		{"schemaVersion 3", "", oci.MediaTypeImageManifest, bytes.Replace(good, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1), 400, oci.ErrManifestInvalid, "schemaVersion"},
		{"Content-Type mismatch", "", oci.MediaTypeDockerManifest, good, 400, oci.ErrManifestInvalid, "Content-Type"},
		{"index Content-Type for a manifest", "", oci.MediaTypeImageIndex, good, 400, oci.ErrManifestInvalid, "Content-Type"},
		{"unknown media type", "", "application/vnd.example+json", bytes.Replace(good, []byte(oci.MediaTypeImageManifest), []byte("application/vnd.example+json"), 1), 400, oci.ErrManifestInvalid, "media type"},
		{"no mediaType anywhere", "", "", bytes.Replace(good, []byte(`"config"`), []byte(`"konfig"`), 1), 400, oci.ErrManifestInvalid, "no config"},
		{"descriptor with invalid digest", "", oci.MediaTypeImageManifest, badDigest, 400, oci.ErrManifestInvalid, "digest"},
		{"image with manifests", "", oci.MediaTypeImageManifest, bytes.Replace(good, []byte(`"layers"`), []byte(`"manifests":[],"layers"`), 1), 400, oci.ErrManifestInvalid, "must not list manifests"},
		{"digest mismatch", goodD, oci.MediaTypeImageManifest, good, 400, oci.ErrDigestInvalid, "manifest digest is"},
		{"sha512 digest mismatch", sha512D, oci.MediaTypeImageManifest, good, 400, oci.ErrDigestInvalid, "manifest digest is"},
		{"sha256 digest for sha512 reference", "sha512:" + strings.Repeat("0", 64) + sha256Of(good).Encoded(), oci.MediaTypeImageManifest, good, 400, oci.ErrDigestInvalid, "manifest digest is"},
		{"invalid tag parameter", sha256Of(good).String() + "?tag=.bad", oci.MediaTypeImageManifest, good, 400, oci.ErrManifestInvalid, "tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ref := tc.ref
			if ref == "" {
				ref = "t"
			}
			eb := checkError(t, e.putManifest(t, repo, ref, tc.contentType, tc.body), tc.status, tc.code)
			if tc.message == "" || !strings.Contains(eb.Errors[0].Message, tc.message) {
				t.Errorf("message %q does not mention %q", eb.Errors[0].Message, tc.message)
			}
			// Nothing was stored.
			for _, d := range []digest.Digest{sha256Of(tc.body), digest.SHA512.FromBytes(tc.body)} {
				checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, oci.ErrManifestUnknown)
			}
			checkError(t, e.do(t, "HEAD", "/v2/"+repo+"/manifests/t", nil), http.StatusNotFound, oci.ErrManifestUnknown)
		})
	}
}

// TestManifestTooLarge: the 4 MiB limit, announced by Content-Length (refused before the body is
// read) or streamed.
func TestManifestTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := []byte(`{}`)
	e.pushBlob(t, "big", cfg)
	body := func(size int) []byte {
		m := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest,
			Config: ptr(descOf(ociConfig, cfg)), Annotations: map[string]string{"padding": ""}}.bytes(t)
		return bytes.Replace(m, []byte(`"padding":""`), []byte(`"padding":"`+strings.Repeat("p", size-len(m))+`"`), 1)
	}
	exact, over := body(oci.MaxManifestSize), body(oci.MaxManifestSize+1)
	if len(exact) != oci.MaxManifestSize || len(over) != oci.MaxManifestSize+1 {
		t.Fatalf("sizes %d %d", len(exact), len(over))
	}
	for _, tc := range []struct {
		name     string
		body     []byte
		streamed bool
		status   int
	}{
		{"exactly 4 MiB", exact, false, 201},
		{"exactly 4 MiB streamed", exact, true, 201},
		{"one byte over", over, false, 413},
		{"one byte over streamed", over, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest("PUT", e.url+"/v2/big/manifests/"+strings.ReplaceAll(tc.name, " ", "-"),
				bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.streamed { // chunked: the registry learns the size only by reading
				req.ContentLength = -1
				req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(tc.body)))
				req.GetBody = nil
			}
			req.Header.Set("Content-Type", oci.MediaTypeImageManifest)
			req.Header.Set("Expect", "100-continue")
			r := e.send(t, req)
			if tc.status == http.StatusCreated {
				if r.code != http.StatusCreated {
					t.Fatalf("%d %s", r.code, r.body)
				}
				return
			}
			checkError(t, r, tc.status, oci.ErrManifestInvalid)
		})
	}
}

// TestManifestAccept: a manifest whose media type the Accept header does not list is not found;
// no Accept, */* or an Accept that names no manifest type take anything.
func TestManifestAccept(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "accept"
	ociBody := e.image(t, repo, "oci", oci.MediaTypeImageManifest)
	e.pushManifest(t, repo, "oci", oci.MediaTypeImageManifest, ociBody)
	dockerBody := e.image(t, repo, "docker", oci.MediaTypeDockerManifest)
	e.pushManifest(t, repo, "docker", oci.MediaTypeDockerManifest, dockerBody)
	bodies := map[string][]byte{"oci": ociBody, "docker": dockerBody}
	types := map[string]string{"oci": oci.MediaTypeImageManifest, "docker": oci.MediaTypeDockerManifest}

	for _, tc := range []struct {
		name   string
		tag    string
		accept []string
		ok     bool
	}{
		{"no Accept", "oci", nil, true},
		{"any", "oci", []string{"*/*"}, true},
		{"exact", "oci", []string{oci.MediaTypeImageManifest}, true},
		{"with parameters", "oci", []string{oci.MediaTypeImageManifest + "; q=0.9"}, true},
		{"in a list", "oci", []string{oci.MediaTypeDockerManifest + ", " + oci.MediaTypeImageManifest}, true},
		{"in a second header", "oci", []string{oci.MediaTypeDockerManifest, oci.MediaTypeImageManifest}, true},
		{"list and any", "oci", []string{oci.MediaTypeDockerManifest + ",*/*;q=0.1"}, true},
		{"no manifest type named", "oci", []string{"application/json"}, true},
		{"only Docker", "oci", []string{oci.MediaTypeDockerManifest}, false},
		{"only indexes", "oci", []string{oci.MediaTypeImageIndex + ", " + oci.MediaTypeDockerList}, false},
		{"Docker only OCI", "docker", []string{oci.MediaTypeImageManifest, oci.MediaTypeImageIndex}, false},
		{"Docker exact", "docker", []string{oci.MediaTypeDockerManifest}, true},
		{"Docker any", "docker", []string{"application/json", "*/*"}, true},
	} {
		for _, byDigest := range []bool{false, true} {
			for _, method := range []string{"GET", "HEAD"} {
				ref := tc.tag
				if byDigest {
					ref = sha256Of(bodies[tc.tag]).String()
				}
				t.Run(tc.name+" "+method+" "+ref, func(t *testing.T) {
					t.Parallel()
					var hdr []string
					for _, a := range tc.accept {
						hdr = append(hdr, "Accept", a)
					}
					r := e.do(t, method, "/v2/"+repo+"/manifests/"+ref, nil, hdr...)
					if !tc.ok {
						checkError(t, r, http.StatusNotFound, oci.ErrManifestUnknown)
						return
					}
					if r.code != http.StatusOK {
						t.Fatalf("%d %s", r.code, r.body)
					}
					checkHeaders(t, r, map[string]string{"Content-Type": types[tc.tag]})
				})
			}
		}
	}
}

func TestManifestSubject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "subject"
	img := e.image(t, repo, "subject", oci.MediaTypeImageManifest)
	subj := descOf(oci.MediaTypeImageManifest, img)
	e.pushManifest(t, repo, "img", oci.MediaTypeImageManifest, img)
	absent := descOf(oci.MediaTypeImageManifest, []byte("a manifest nobody pushed"))
	for _, tc := range []struct {
		name    string
		subject *oci.Descriptor
		ref     string
	}{
		{"by tag", &subj, "sig"},
		{"by digest", &subj, ""},
		{"subject not in the registry", &absent, "orphan"},
		{"no subject", nil, "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := e.artifact(t, repo, "application/vnd.example.sig", tc.subject, "name", tc.name)
			ref := tc.ref
			if ref == "" {
				ref = sha256Of(body).String()
			}
			r := e.putManifest(t, repo, ref, oci.MediaTypeImageManifest, body)
			if r.code != http.StatusCreated {
				t.Fatalf("%d %s", r.code, r.body)
			}
			want := ""
			if tc.subject != nil {
				want = tc.subject.Digest.String()
			}
			checkHeaders(t, r, map[string]string{"OCI-Subject": want, "Docker-Content-Digest": sha256Of(body).String()})
		})
	}
}

// TestManifestTagParams: PUT by digest with ?tag= tags the manifest, and says so with OCI-Tag.
func TestManifestTagParams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "tagparams"
	body := e.image(t, repo, "tagparams", oci.MediaTypeImageManifest)
	d := sha256Of(body)
	r := e.putManifest(t, repo, d.String()+"?tag=v1&tag=v1.0&tag=latest", oci.MediaTypeImageManifest, body)
	if r.code != http.StatusCreated {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var got []string
	for _, v := range r.header.Values("OCI-Tag") {
		for _, t := range strings.Split(v, ",") {
			got = append(got, strings.TrimSpace(t))
		}
	}
	if want := []string{"v1", "v1.0", "latest"}; !slices.Equal(got, want) {
		t.Errorf("OCI-Tag %q, want %q", got, want)
	}
	checkHeaders(t, r, map[string]string{"Location": "/v2/" + repo + "/manifests/" + d.String()})
	for _, tag := range []string{"v1", "v1.0", "latest"} {
		e.checkManifest(t, repo, tag, oci.MediaTypeImageManifest, body, d)
	}
	if tags := e.tagList(t, repo); !slices.Equal(tags, []string{"latest", "v1", "v1.0"}) {
		t.Errorf("tags %q", tags)
	}
}

// tagList returns the whole tag list of repo.
func (e *env) tagList(t *testing.T, repo string) []string {
	t.Helper()
	r := e.do(t, "GET", "/v2/"+repo+"/tags/list", nil)
	if r.code != http.StatusOK {
		t.Fatalf("tags of %s: %d %s", repo, r.code, r.body)
	}
	var tl struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(r.body, &tl); err != nil {
		t.Fatal(err)
	}
	return tl.Tags
}

func TestManifestTagMoves(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "moves"
	first := e.image(t, repo, "first", oci.MediaTypeImageManifest)
	second := e.image(t, repo, "second", oci.MediaTypeImageManifest)
	e.pushManifest(t, repo, "latest", oci.MediaTypeImageManifest, first)
	e.pushManifest(t, repo, "latest", oci.MediaTypeImageManifest, second)
	e.checkManifest(t, repo, "latest", oci.MediaTypeImageManifest, second, sha256Of(second))
	e.checkManifest(t, repo, sha256Of(first).String(), oci.MediaTypeImageManifest, first, sha256Of(first))
}

// TestManifestDeleteByDigest: deleting a manifest deletes every tag that points at it, and only those.
func TestManifestDeleteByDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "delete"
	doomed := e.image(t, repo, "doomed", oci.MediaTypeImageManifest)
	kept := e.image(t, repo, "kept", oci.MediaTypeImageManifest)
	for _, tag := range []string{"a", "b", "c"} {
		e.pushManifest(t, repo, tag, oci.MediaTypeImageManifest, doomed)
	}
	e.pushManifest(t, repo, "keep", oci.MediaTypeImageManifest, kept)
	r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+sha256Of(doomed).String(), nil)
	if r.code != http.StatusAccepted {
		t.Fatalf("%d %s", r.code, r.body)
	}
	for _, tag := range []string{"a", "b", "c"} {
		checkError(t, e.do(t, "GET", "/v2/"+repo+"/manifests/"+tag, nil), http.StatusNotFound, oci.ErrManifestUnknown)
	}
	if tags := e.tagList(t, repo); !slices.Equal(tags, []string{"keep"}) {
		t.Errorf("tags %q, want [keep]", tags)
	}
	e.checkManifest(t, repo, "keep", oci.MediaTypeImageManifest, kept, sha256Of(kept))
	// The same manifest in another repository is another manifest.
	other := e.image(t, "delete2", "doomed", oci.MediaTypeImageManifest)
	e.pushManifest(t, "delete2", "a", oci.MediaTypeImageManifest, other)
	e.checkManifest(t, "delete2", "a", oci.MediaTypeImageManifest, other, sha256Of(other))
}

// A manifest that an index lists cannot be deleted while the index is there (the index would no
// longer pull): 409 DENIED naming the index. Once the index is deleted, it can.
func TestManifestDeleteListedByIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "listed"
	index := e.index(t, repo, oci.MediaTypeImageIndex, oci.MediaTypeImageManifest)
	id := e.pushManifest(t, repo, "latest", oci.MediaTypeImageIndex, index)
	var parsed manifest
	if err := json.Unmarshal(index, &parsed); err != nil {
		t.Fatal(err)
	}
	child := parsed.Manifests[0].Digest
	r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+child.String(), nil)
	body := checkError(t, r, http.StatusConflict, oci.ErrDenied)
	if msg := body.Errors[0].Message; !strings.Contains(msg, id.String()) {
		t.Errorf("refusal %q does not name the index %s", msg, id)
	}
	if r := e.do(t, "GET", "/v2/"+repo+"/manifests/"+child.String(), nil); r.code != http.StatusOK {
		t.Fatalf("the refused delete deleted: GET %d", r.code)
	}
	// Untagged, the index still lists it.
	if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/latest", nil); r.code != http.StatusAccepted {
		t.Fatalf("DELETE tag: %d %s", r.code, r.body)
	}
	checkError(t, e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+child.String(), nil), http.StatusConflict, oci.ErrDenied)
	for _, d := range []digest.Digest{id, child} {
		if r := e.do(t, "DELETE", "/v2/"+repo+"/manifests/"+d.String(), nil); r.code != http.StatusAccepted {
			t.Fatalf("DELETE %s: %d %s", d, r.code, r.body)
		}
	}
}

func TestManifestUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "known"
	body := e.image(t, repo, "known", oci.MediaTypeImageManifest)
	e.pushManifest(t, repo, "latest", oci.MediaTypeImageManifest, body)
	d := sha256Of(body).String()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v2/known/manifests/nope"},
		{"HEAD", "/v2/known/manifests/nope"},
		{"DELETE", "/v2/known/manifests/nope"},
		{"GET", "/v2/known/manifests/" + goodD},
		{"DELETE", "/v2/known/manifests/" + goodD},
		{"GET", "/v2/known/manifests/" + sha512D},
		{"GET", "/v2/unknown/manifests/latest"},
		{"HEAD", "/v2/unknown/manifests/" + d},
		{"DELETE", "/v2/unknown/manifests/latest"},
		{"DELETE", "/v2/unknown/manifests/" + d},
		{"GET", "/v2/known/sub/manifests/latest"},
		{"GET", "/v2/know/manifests/latest"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			r := e.do(t, tc.method, tc.path, nil)
			if r.code != http.StatusNotFound {
				t.Fatalf("%d %s, want 404", r.code, r.body)
			}
			// An unknown repository may be answered NAME_UNKNOWN or MANIFEST_UNKNOWN.
			eb := checkError(t, r, http.StatusNotFound, "")
			if len(eb.Errors) > 0 && eb.Errors[0].Code != string(oci.ErrManifestUnknown) && eb.Errors[0].Code != string(oci.ErrNameUnknown) {
				t.Errorf("code %s", eb.Errors[0].Code)
			}
		})
	}
}

func TestManifestConditionalGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := e.image(t, "cond", "cond", oci.MediaTypeImageManifest)
	d := e.pushManifest(t, "cond", "latest", oci.MediaTypeImageManifest, body)
	r := e.do(t, "GET", "/v2/cond/manifests/latest", nil, "If-None-Match", `"`+d.String()+`"`)
	if r.code != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("%d %q, want 304", r.code, r.body)
	}
	r = e.do(t, "GET", "/v2/cond/manifests/latest", nil, "If-None-Match", `"`+goodD+`"`)
	if r.code != http.StatusOK {
		t.Errorf("%d, want 200", r.code)
	}
}

// TestManifestRefusedLinksNothing: an artifact whose empty config berth supplies itself, refused
// for a missing layer, must leave no trace: no repository, no linked empty blob.
func TestManifestRefusedLinksNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const repo = "ghost/artifact"
	body := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: "application/x.test",
		Config: ptr(descOf(oci.MediaTypeEmptyJSON, oci.EmptyJSON)),
		Layers: []oci.Descriptor{descOf(ociLayer, []byte("never pushed"))}}.bytes(t)
	checkError(t, e.putManifest(t, repo, "v1", oci.MediaTypeImageManifest, body), http.StatusBadRequest, oci.ErrManifestBlobUnknown)
	checkError(t, e.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil), http.StatusNotFound, oci.ErrNameUnknown)
	checkError(t, e.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+string(oci.EmptyJSONDigest), nil), http.StatusNotFound, "")

	// The same artifact without the missing layer is accepted, and its config is then served.
	ok := manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: "application/x.test",
		Config: ptr(descOf(oci.MediaTypeEmptyJSON, oci.EmptyJSON)), Layers: []oci.Descriptor{}}.bytes(t)
	e.pushManifest(t, repo, "v1", oci.MediaTypeImageManifest, ok)
	if r := e.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+string(oci.EmptyJSONDigest), nil); r.code != http.StatusOK || string(r.body) != "{}" {
		t.Fatalf("empty config: %d %q", r.code, r.body)
	}
}
