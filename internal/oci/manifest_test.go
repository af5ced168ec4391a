package oci

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	configType       = "application/vnd.oci.image.config.v1+json"
	layerType        = "application/vnd.oci.image.layer.v1.tar+gzip"
	dockerConfigType = "application/vnd.docker.container.image.v1+json"
	dockerLayerType  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerForeign    = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	ociNonDist       = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
)

type obj = map[string]any

func desc(mediaType, name string, size int) obj {
	return obj{"mediaType": mediaType, "digest": digest.FromString(name).String(), "size": size}
}

func dgst(name string) Digest { return digest.FromString(name) }

func ociImage(extra obj) obj {
	m := obj{
		"schemaVersion": 2,
		"mediaType":     MediaTypeImageManifest,
		"config":        desc(configType, "config", 100),
		"layers":        []any{desc(layerType, "layer1", 1000), desc(layerType, "layer2", 2000)},
	}
	maps.Copy(m, extra)
	return m
}

func ociIndex(extra obj) obj {
	m := obj{
		"schemaVersion": 2,
		"mediaType":     MediaTypeImageIndex,
		"manifests": []any{
			merge(desc(MediaTypeImageManifest, "amd64", 500), obj{"platform": obj{"architecture": "amd64", "os": "linux"}}),
			merge(desc(MediaTypeImageManifest, "arm64", 501), obj{"platform": obj{"architecture": "arm64", "os": "linux"}}),
		},
	}
	maps.Copy(m, extra)
	return m
}

func merge(a, b obj) obj {
	c := maps.Clone(a)
	maps.Copy(c, b)
	return c
}

// without returns m without the keys.
func without(m obj, keys ...string) obj {
	c := maps.Clone(m)
	for _, k := range keys {
		delete(c, k)
	}
	return c
}

func body(t testing.TB, m any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digests(ds []Descriptor) []Digest {
	var out []Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	return out
}

func TestParseManifest(t *testing.T) {
	type want struct {
		mediaType    string
		artifactType string
		subject      Digest
		blobs        []Digest
		children     []Digest
		annotations  map[string]string
	}
	imageBlobs := []Digest{dgst("config"), dgst("layer1"), dgst("layer2")}
	indexChildren := []Digest{dgst("amd64"), dgst("arm64")}
	for _, c := range []struct {
		name        string
		contentType string
		body        any // marshalled to JSON unless a string
		want        want
	}{
		{
			name: "OCI image", contentType: MediaTypeImageManifest, body: ociImage(nil),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs},
		},
		{
			name: "OCI image without Content-Type", body: ociImage(nil),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs},
		},
		{
			name: "OCI image without mediaType", contentType: MediaTypeImageManifest, body: without(ociImage(nil), "mediaType"),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs},
		},
		{
			name: "OCI image without mediaType nor Content-Type", body: without(ociImage(nil), "mediaType"),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs},
		},
		{
			name: "OCI image without layers", contentType: MediaTypeImageManifest, body: without(ociImage(nil), "layers"),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: []Digest{dgst("config")}},
		},
		{
			name: "annotations", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"annotations": obj{"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": ""}}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs,
				annotations: map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": ""}},
		},
		{
			name: "artifact with artifactType", contentType: MediaTypeImageManifest,
			body: ociImage(obj{
				"artifactType": "application/vnd.example.sbom",
				"config":       obj{"mediaType": MediaTypeEmptyJSON, "digest": EmptyJSONDigest, "size": 2},
				"layers":       []any{desc("application/spdx+json", "sbom", 10)},
			}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: "application/vnd.example.sbom",
				blobs: []Digest{EmptyJSONDigest, dgst("sbom")}},
		},
		{
			name: "artifact typed by its config", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"config": desc("application/vnd.example.config+json", "cfg", 5), "layers": []any{}}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: "application/vnd.example.config+json",
				blobs: []Digest{dgst("cfg")}},
		},
		{
			name: "referrer with subject", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"artifactType": "application/vnd.example.sig", "subject": desc(MediaTypeImageManifest, "subject", 700)}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: "application/vnd.example.sig", subject: dgst("subject"), blobs: imageBlobs},
		},
		{
			name: "subject with sha512", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"subject": obj{"mediaType": MediaTypeImageManifest, "digest": digest.SHA512.FromString("s").String(), "size": 1}}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, subject: digest.SHA512.FromString("s"), blobs: imageBlobs},
		},
		{
			name: "sha512 layer", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"layers": []any{obj{"mediaType": layerType, "digest": digest.SHA512.FromString("l").String(), "size": 1}}}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: []Digest{dgst("config"), digest.SHA512.FromString("l")}},
		},
		{
			name: "foreign layers are listed", contentType: MediaTypeDockerManifest,
			body: obj{
				"schemaVersion": 2, "mediaType": MediaTypeDockerManifest,
				"config": desc(dockerConfigType, "config", 100),
				"layers": []any{
					merge(desc(dockerForeign, "windows-base", 1<<30), obj{"urls": []string{"https://mcr.microsoft.com/x"}}),
					desc(dockerLayerType, "layer1", 1000),
				},
			},
			want: want{mediaType: MediaTypeDockerManifest, artifactType: dockerConfigType,
				blobs: []Digest{dgst("config"), dgst("windows-base"), dgst("layer1")}},
		},
		{
			name: "Docker schema 2", contentType: MediaTypeDockerManifest,
			body: obj{
				"schemaVersion": 2, "mediaType": MediaTypeDockerManifest,
				"config": desc(dockerConfigType, "config", 100),
				"layers": []any{desc(dockerLayerType, "layer1", 1000), desc(dockerLayerType, "layer2", 2000)},
			},
			want: want{mediaType: MediaTypeDockerManifest, artifactType: dockerConfigType, blobs: imageBlobs},
		},
		{
			name: "Docker schema 2 without Content-Type",
			body: obj{"schemaVersion": 2, "mediaType": MediaTypeDockerManifest, "config": desc(dockerConfigType, "config", 100)},
			want: want{mediaType: MediaTypeDockerManifest, artifactType: dockerConfigType, blobs: []Digest{dgst("config")}},
		},
		{
			name: "OCI index", contentType: MediaTypeImageIndex, body: ociIndex(nil),
			want: want{mediaType: MediaTypeImageIndex, children: indexChildren},
		},
		{
			name: "OCI index without mediaType", contentType: MediaTypeImageIndex, body: without(ociIndex(nil), "mediaType"),
			want: want{mediaType: MediaTypeImageIndex, children: indexChildren},
		},
		{
			name: "OCI index without mediaType nor Content-Type", body: without(ociIndex(nil), "mediaType"),
			want: want{mediaType: MediaTypeImageIndex, children: indexChildren},
		},
		{
			name: "empty index", contentType: MediaTypeImageIndex, body: ociIndex(obj{"manifests": []any{}}),
			want: want{mediaType: MediaTypeImageIndex, children: nil},
		},
		{
			name: "index with artifactType, subject and annotations", contentType: MediaTypeImageIndex,
			body: ociIndex(obj{
				"artifactType": "application/vnd.example.bundle",
				"subject":      desc(MediaTypeImageIndex, "subject", 300),
				"annotations":  obj{"a": "b"},
			}),
			want: want{mediaType: MediaTypeImageIndex, artifactType: "application/vnd.example.bundle",
				subject: dgst("subject"), children: indexChildren, annotations: map[string]string{"a": "b"}},
		},
		{
			name: "index of indexes", contentType: MediaTypeImageIndex,
			body: ociIndex(obj{"manifests": []any{desc(MediaTypeImageIndex, "inner", 10), desc(MediaTypeDockerManifest, "d", 5)}}),
			want: want{mediaType: MediaTypeImageIndex, children: []Digest{dgst("inner"), dgst("d")}},
		},
		{
			name: "Docker manifest list", contentType: MediaTypeDockerList,
			body: obj{"schemaVersion": 2, "mediaType": MediaTypeDockerList, "manifests": []any{
				desc(MediaTypeDockerManifest, "amd64", 500), desc(MediaTypeDockerManifest, "arm64", 501),
			}},
			want: want{mediaType: MediaTypeDockerList, children: indexChildren},
		},
		{
			name: "unknown fields are ignored", contentType: MediaTypeImageManifest,
			body: ociImage(obj{"somethingNew": []int{1, 2}}),
			want: want{mediaType: MediaTypeImageManifest, artifactType: configType, blobs: imageBlobs},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, ok := c.body.(string)
			if !ok {
				b = string(body(t, c.body))
			}
			m, err := ParseManifest(c.contentType, []byte(b))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			got := want{mediaType: m.MediaType, artifactType: m.ArtifactType, subject: m.Subject,
				blobs: digests(m.Blobs), children: digests(m.Children), annotations: m.Annotations}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// The descriptors come back whole: the registry needs URLs and media types of layers.
func TestParseManifestDescriptors(t *testing.T) {
	layer := merge(desc(ociNonDist, "nd", 5), obj{"urls": []string{"https://example.com/nd"}, "annotations": obj{"k": "v"}})
	m, err := ParseManifest(MediaTypeImageManifest, body(t, ociImage(obj{"layers": []any{layer}})))
	if err != nil {
		t.Fatal(err)
	}
	want := []Descriptor{
		{MediaType: configType, Digest: dgst("config"), Size: 100},
		{MediaType: ociNonDist, Digest: dgst("nd"), Size: 5, URLs: []string{"https://example.com/nd"}, Annotations: map[string]string{"k": "v"}},
	}
	if !reflect.DeepEqual(m.Blobs, want) {
		t.Errorf("Blobs = %+v, want %+v", m.Blobs, want)
	}
	if m.Blobs[0].Foreign() || !m.Blobs[1].Foreign() {
		t.Errorf("Foreign = %v, %v; want false, true", m.Blobs[0].Foreign(), m.Blobs[1].Foreign())
	}
	idx, err := ParseManifest(MediaTypeImageIndex, body(t, ociIndex(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if string(idx.Children[0].Platform) != `{"architecture":"amd64","os":"linux"}` {
		t.Errorf("platform = %s", idx.Children[0].Platform)
	}
}

func TestDescriptorForeign(t *testing.T) {
	urls := []string{"https://example.com/layer"}
	for _, c := range []struct {
		d    Descriptor
		want bool
	}{
		{Descriptor{MediaType: dockerForeign, URLs: urls}, true},
		{Descriptor{MediaType: ociNonDist, URLs: urls}, true},
		{Descriptor{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar", URLs: urls}, true},
		{Descriptor{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", URLs: urls}, true},
		// Without URLs there is nowhere else to fetch it from: it must be in the registry.
		{Descriptor{MediaType: dockerForeign}, false},
		{Descriptor{MediaType: ociNonDist, URLs: []string{}}, false},
		// URLs on an ordinary layer do not make it optional.
		{Descriptor{MediaType: layerType, URLs: urls}, false},
		{Descriptor{MediaType: dockerLayerType, URLs: urls}, false},
		{Descriptor{MediaType: "application/vnd.example.foreignish", URLs: urls}, false},
	} {
		if got := c.d.Foreign(); got != c.want {
			t.Errorf("Foreign(%s, %d urls) = %v, want %v", c.d.MediaType, len(c.d.URLs), got, c.want)
		}
	}
}

func TestParseManifestInvalid(t *testing.T) {
	image := ociImage(nil)
	index := ociIndex(nil)
	badDigest := func(d string) obj { return obj{"mediaType": layerType, "digest": d, "size": 1} }
	for _, c := range []struct {
		name        string
		contentType string
		body        any
		wantMsg     string // part of the message
	}{
		{"not JSON", MediaTypeImageManifest, "not json", "not valid JSON"},
		{"empty body", MediaTypeImageManifest, "", "not valid JSON"},
		{"JSON array", MediaTypeImageManifest, "[]", "not valid JSON"},
		{"JSON string", MediaTypeImageManifest, `"x"`, "not valid JSON"},
		{"truncated", MediaTypeImageManifest, string(body(t, image))[:50], "not valid JSON"},
		{"null", MediaTypeImageManifest, "null", "schemaVersion"},
		{"empty object", MediaTypeImageManifest, "{}", "schemaVersion"},
		{"no schemaVersion", MediaTypeImageManifest, without(image, "schemaVersion"), "schemaVersion"},
		{"schemaVersion 3", MediaTypeImageManifest, merge(image, obj{"schemaVersion": 3}), "schemaVersion"},
		{"schemaVersion string", MediaTypeImageManifest, merge(image, obj{"schemaVersion": "2"}), "not valid JSON"},
		{"schemaVersion null", MediaTypeImageManifest, merge(image, obj{"schemaVersion": nil}), "schemaVersion"},

		// Docker schema 1, however it announces itself, is refused with advice.
		{"schema 1 by Content-Type", MediaTypeDockerSchema1, image, "schema 1"},
		{"signed schema 1 by Content-Type", MediaTypeDockerSchema1S, image, "schema 1"},
		{"schema 1 by mediaType", "", merge(image, obj{"mediaType": MediaTypeDockerSchema1}), "schema 1"},
		{"signed schema 1 by mediaType", "", merge(image, obj{"mediaType": MediaTypeDockerSchema1S}), "schema 1"},
		{"schema 1 by schemaVersion", "", obj{"schemaVersion": 1, "name": "x", "tag": "latest", "architecture": "amd64",
			"fsLayers": []any{obj{"blobSum": dgst("l").String()}}, "history": []any{}}, "schema 1"},
		{"schema 1 by fsLayers", "", obj{"schemaVersion": 2, "fsLayers": []any{}}, "schema 1"},
		{"schema 1 with JWS", MediaTypeDockerSchema1S, obj{"schemaVersion": 1, "signatures": []any{}}, "skopeo"},

		// Content-Type and mediaType must agree.
		{"OCI image sent as Docker", MediaTypeDockerManifest, image, "does not match"},
		{"OCI image sent as index", MediaTypeImageIndex, image, "does not match"},
		{"index sent as image", MediaTypeImageManifest, index, "does not match"},
		{"index sent as Docker list", MediaTypeDockerList, index, "does not match"},
		{"image sent as JSON", "application/json", image, "does not match"},

		// Unknown media types.
		{"unknown mediaType", "", merge(image, obj{"mediaType": "application/vnd.example+json"}), "unsupported"},
		{"unknown Content-Type", "application/json", without(image, "mediaType"), "unsupported"},
		{"neither config nor manifests", "", obj{"schemaVersion": 2}, "unsupported"},

		// Images need a config and no manifests; indexes the reverse.
		{"image without config", MediaTypeImageManifest, without(image, "config"), "no config"},
		{"image with null config", MediaTypeImageManifest, merge(image, obj{"config": nil}), "no config"},
		{"Docker image without config", MediaTypeDockerManifest, obj{"schemaVersion": 2, "mediaType": MediaTypeDockerManifest, "layers": []any{}}, "no config"},
		{"image with manifests", MediaTypeImageManifest, merge(image, obj{"manifests": []any{}}), "must not list manifests"},
		{"index with config", MediaTypeImageIndex, merge(index, obj{"config": desc(configType, "c", 1)}), "config or layers"},
		{"index with layers", MediaTypeImageIndex, merge(index, obj{"layers": []any{}}), "config or layers"},
		{"Docker list with layers", MediaTypeDockerList, obj{"schemaVersion": 2, "mediaType": MediaTypeDockerList, "manifests": []any{}, "layers": []any{}}, "config or layers"},
		{"config and manifests without mediaType", "", without(merge(image, obj{"manifests": []any{}}), "mediaType"), "config or layers"},

		// Every descriptor is checked: config, layers, manifests, subject.
		{"config without digest", MediaTypeImageManifest, merge(image, obj{"config": obj{"mediaType": configType, "size": 1}}), "invalid digest"},
		{"empty config", MediaTypeImageManifest, merge(image, obj{"config": obj{}}), "invalid digest"},
		{"config with bad digest", MediaTypeImageManifest, merge(image, obj{"config": obj{"mediaType": configType, "digest": "sha256:abc", "size": 1}}), "invalid digest"},
		{"config without mediaType", MediaTypeImageManifest, merge(image, obj{"config": without(desc(configType, "c", 1), "mediaType")}), "no mediaType"},
		{"config with negative size", MediaTypeImageManifest, merge(image, obj{"config": desc(configType, "c", -1)}), "negative size"},
		{"layer with short hex", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("sha256:" + strings.Repeat("a", 63))}}), "invalid digest"},
		{"layer with upper-case hex", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest(strings.ToUpper(dgst("x").String()))}}), "invalid digest"},
		{"layer with upper-case hex only", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("sha256:" + strings.ToUpper(dgst("x").Encoded()))}}), "invalid digest"},
		{"layer with non-hex", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("sha256:" + strings.Repeat("g", 64))}}), "invalid digest"},
		{"layer with md5", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("md5:d41d8cd98f00b204e9800998ecf8427e")}}), "invalid digest"},
		{"layer with sha384", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("sha384:" + strings.Repeat("a", 96))}}), "invalid digest"},
		{"layer with path traversal", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest("sha256:../../etc/passwd")}}), "invalid digest"},
		{"layer without algorithm", MediaTypeImageManifest, merge(image, obj{"layers": []any{badDigest(dgst("x").Encoded())}}), "invalid digest"},
		{"layer without mediaType", MediaTypeImageManifest, merge(image, obj{"layers": []any{without(desc(layerType, "l", 1), "mediaType")}}), "no mediaType"},
		{"layer with negative size", MediaTypeImageManifest, merge(image, obj{"layers": []any{desc(layerType, "l", -5)}}), "negative size"},
		{"foreign layer with bad digest", MediaTypeDockerManifest, obj{"schemaVersion": 2, "mediaType": MediaTypeDockerManifest,
			"config": desc(dockerConfigType, "c", 1),
			"layers": []any{obj{"mediaType": dockerForeign, "digest": "sha256:x", "size": 1, "urls": []string{"https://x"}}}}, "invalid digest"},
		{"child with bad digest", MediaTypeImageIndex, merge(index, obj{"manifests": []any{obj{"mediaType": MediaTypeImageManifest, "digest": "sha256:", "size": 1}}}), "invalid digest"},
		{"child without mediaType", MediaTypeImageIndex, merge(index, obj{"manifests": []any{without(desc(MediaTypeImageManifest, "m", 1), "mediaType")}}), "no mediaType"},
		{"child with negative size", MediaTypeImageIndex, merge(index, obj{"manifests": []any{desc(MediaTypeImageManifest, "m", -1)}}), "negative size"},
		{"subject with bad digest", MediaTypeImageManifest, merge(image, obj{"subject": obj{"mediaType": MediaTypeImageManifest, "digest": "nope", "size": 1}}), "invalid digest"},
		{"subject without mediaType", MediaTypeImageManifest, merge(image, obj{"subject": without(desc(MediaTypeImageManifest, "s", 1), "mediaType")}), "no mediaType"},
		{"index subject with bad digest", MediaTypeImageIndex, merge(index, obj{"subject": obj{"mediaType": MediaTypeImageManifest, "digest": "sha256:zz", "size": 1}}), "invalid digest"},
		{"digest of wrong type", MediaTypeImageManifest, merge(image, obj{"config": obj{"mediaType": configType, "digest": 5, "size": 1}}), "not valid JSON"},
		{"size of wrong type", MediaTypeImageManifest, merge(image, obj{"config": obj{"mediaType": configType, "digest": dgst("c"), "size": "1"}}), "not valid JSON"},
		{"layers not a list", MediaTypeImageManifest, merge(image, obj{"layers": obj{}}), "not valid JSON"},
		{"annotations not strings", MediaTypeImageManifest, merge(image, obj{"annotations": obj{"k": 1}}), "not valid JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, ok := c.body.(string)
			if !ok {
				b = string(body(t, c.body))
			}
			m, err := ParseManifest(c.contentType, []byte(b))
			if err == nil {
				t.Fatalf("ParseManifest accepted it: %+v", m)
			}
			if m != nil {
				t.Errorf("ParseManifest returned %+v with its error", m)
			}
			e := AsError(err)
			if e == nil || e.Code != ErrManifestInvalid || e.HTTPStatus() != 400 {
				t.Fatalf("error %v is not a 400 MANIFEST_INVALID *Error", err)
			}
			if !strings.Contains(e.Message, c.wantMsg) {
				t.Errorf("message %q does not say %q", e.Message, c.wantMsg)
			}
		})
	}
}

func TestIsIndex(t *testing.T) {
	for mt, want := range map[string]bool{
		MediaTypeImageIndex: true, MediaTypeDockerList: true,
		MediaTypeImageManifest: false, MediaTypeDockerManifest: false, "": false, "application/json": false,
	} {
		if got := IsIndex(mt); got != want {
			t.Errorf("IsIndex(%q) = %v, want %v", mt, got, want)
		}
	}
}

func TestEmptyJSONDigest(t *testing.T) {
	if got := digest.FromBytes(EmptyJSON); got != EmptyJSONDigest {
		t.Errorf("digest of %q = %s, want %s", EmptyJSON, got, EmptyJSONDigest)
	}
}

func FuzzParseManifest(f *testing.F) {
	seed := func(contentType string, m any) { f.Add(contentType, body(f, m)) }
	seed(MediaTypeImageManifest, ociImage(nil))
	seed("", without(ociImage(nil), "mediaType"))
	seed(MediaTypeImageIndex, ociIndex(nil))
	seed("", without(ociIndex(nil), "mediaType"))
	seed(MediaTypeImageManifest, ociImage(obj{"artifactType": "a/b", "subject": desc(MediaTypeImageManifest, "s", 1), "annotations": obj{"a": "b"}}))
	seed(MediaTypeDockerManifest, obj{"schemaVersion": 2, "mediaType": MediaTypeDockerManifest, "config": desc(dockerConfigType, "c", 1),
		"layers": []any{merge(desc(dockerForeign, "f", 1), obj{"urls": []string{"https://x"}})}})
	seed(MediaTypeDockerList, obj{"schemaVersion": 2, "mediaType": MediaTypeDockerList, "manifests": []any{desc(MediaTypeDockerManifest, "m", 1)}})
	seed(MediaTypeDockerSchema1S, obj{"schemaVersion": 1, "fsLayers": []any{}})
	seed(MediaTypeImageManifest, ociImage(obj{"config": obj{"mediaType": configType, "digest": "sha256:abc", "size": -1}}))
	f.Add("", []byte("{}"))
	f.Add("application/json", []byte("null"))
	f.Add("", []byte(`{"schemaVersion":2,"config":{},"manifests":[]}`))

	f.Fuzz(func(t *testing.T, contentType string, b []byte) {
		m, err := ParseManifest(contentType, b)
		if err != nil {
			if m != nil {
				t.Fatalf("manifest %+v returned with error %v", m, err)
			}
			if e := AsError(err); e == nil || e.Code != ErrManifestInvalid {
				t.Fatalf("error %v is not MANIFEST_INVALID", err)
			}
			return
		}
		// What is accepted is well formed.
		switch m.MediaType {
		case MediaTypeImageManifest, MediaTypeDockerManifest:
			if len(m.Blobs) == 0 || len(m.Children) != 0 {
				t.Fatalf("image with %d blobs and %d children", len(m.Blobs), len(m.Children))
			}
			if m.ArtifactType == "" {
				t.Fatal("image without an artifactType (the config's media type at least)")
			}
		case MediaTypeImageIndex, MediaTypeDockerList:
			if len(m.Blobs) != 0 {
				t.Fatalf("index with %d blobs", len(m.Blobs))
			}
		default:
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if IsIndex(m.MediaType) != (m.MediaType == MediaTypeImageIndex || m.MediaType == MediaTypeDockerList) {
			t.Fatal("IsIndex disagrees")
		}
		if contentType != "" && m.MediaType != contentType {
			t.Fatalf("Content-Type %q accepted for a %q manifest", contentType, m.MediaType)
		}
		for _, d := range slices.Concat(m.Blobs, m.Children) {
			if _, err := ParseDigest(d.Digest.String()); err != nil {
				t.Fatalf("descriptor with digest %q accepted", d.Digest)
			}
			if d.Size < 0 || d.MediaType == "" {
				t.Fatalf("descriptor %+v accepted", d)
			}
		}
		if m.Subject != "" {
			if _, err := ParseDigest(m.Subject.String()); err != nil {
				t.Fatalf("subject %q accepted", m.Subject)
			}
		}
		// Parsing is deterministic.
		m2, err := ParseManifest(contentType, b)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("second parse differs: %+v, %v", m2, err)
		}
		// A schema 1 Content-Type is never accepted.
		if _, err := ParseManifest(MediaTypeDockerSchema1S, b); err == nil {
			t.Fatal("accepted as schema 1")
		}
	})
}
