package oci

import (
	"strings"
	"testing"
)

// Manifests that parsers would read differently are refused (issue 8, item 12): duplicate keys
// anywhere, and keys that match a field berth reads only up to case.
func TestParseManifestAmbiguousKeys(t *testing.T) {
	cfg := `{"mediaType":"` + configType + `","digest":"` + dgst("config").String() + `","size":100}`
	l1 := `{"mediaType":"` + layerType + `","digest":"` + dgst("layer1").String() + `","size":1000}`
	l2 := `{"mediaType":"` + layerType + `","digest":"` + dgst("secret").String() + `","size":2000}`
	head := `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":` + cfg
	for _, c := range []struct{ what, body, says string }{
		{"layers then LAYERS", head + `,"layers":[` + l1 + `],"LAYERS":[` + l2 + `]}`, `"LAYERS"`},
		{"only Layers", head + `,"Layers":[` + l2 + `]}`, `"Layers"`},
		{"layers twice", head + `,"layers":[` + l1 + `],"layers":[` + l2 + `]}`, `"layers" appears twice`},
		{"config twice", head + `,"config":` + cfg + `,"layers":[]}`, `"config" appears twice`},
		{"schemaVersion twice", `{"schemaVersion":2,"schemaVersion":1,"mediaType":"` + MediaTypeImageManifest + `","config":` + cfg + `,"layers":[]}`, "twice"},
		{"digest twice in a layer", head + `,"layers":[{"mediaType":"` + layerType + `","digest":"` + dgst("layer1").String() + `","digest":"` + dgst("secret").String() + `","size":1}]}`, `"digest" appears twice`},
		{"Digest in a layer", head + `,"layers":[{"mediaType":"` + layerType + `","Digest":"` + dgst("secret").String() + `","digest":"` + dgst("layer1").String() + `","size":1}]}`, `"Digest"`},
		{"SIZE in the config", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":{"mediaType":"` + configType + `","digest":"` + dgst("config").String() + `","size":1,"SIZE":2},"layers":[]}`, `"SIZE"`},
		{"an annotation twice", head + `,"layers":[],"annotations":{"a":"1","a":"2"}}`, `"a" appears twice`},
		{"Manifests in an index", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[],"Manifests":[` + l1 + `]}`, `"Manifests"`},
		{"subject twice", head + `,"layers":[],"subject":` + l1 + `,"subject":` + l2 + `}`, `"subject" appears twice`},
		{"deep nesting", head + `,"layers":[],"annotations":{"a":"b"},"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "nested"},
	} {
		_, err := ParseManifest(MediaTypeImageManifest, []byte(c.body))
		if c.what == "Manifests in an index" {
			_, err = ParseManifest(MediaTypeImageIndex, []byte(c.body))
		}
		e := AsError(err)
		if e == nil || e.Code != ErrManifestInvalid || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s: %v, want MANIFEST_INVALID saying %s", c.what, err, c.says)
		}
	}
	// Keys that only look alike are fine where berth reads no fields: annotations are case-sensitive.
	ok := head + `,"layers":[` + l1 + `],"annotations":{"Foo":"1","foo":"2","FOO":"3"},"x-extension":{"layers":1,"LAYERS":2}}`
	if _, err := ParseManifest(MediaTypeImageManifest, []byte(ok)); err != nil {
		t.Errorf("annotations differing in case, unknown fields: %v", err)
	}
}
