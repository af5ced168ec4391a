package oci

import (
	"encoding/json"
	"fmt"
	"strings"
)

// MaxManifestSize bounds a manifest body; larger ones are refused (the size Distribution uses).
const MaxManifestSize = 4 << 20

// Descriptor is the part of an OCI content descriptor berth reads.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       Digest            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     json.RawMessage   `json:"platform,omitempty"`
}

// manifestJSON is the union of the fields of image manifests and indexes that berth needs.
type manifestJSON struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *Descriptor       `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
	// Docker schema 1 carries these instead.
	FSLayers json.RawMessage `json:"fsLayers"`
}

// Manifest is a parsed manifest: what it references and how referrers describe it.
type Manifest struct {
	MediaType    string
	ArtifactType string // artifactType, or the config's media type for images (for referrers)
	Subject      Digest // "" when the manifest has no subject
	Annotations  map[string]string
	Blobs        []Descriptor // config and layers, which must be in the repository
	Children     []Descriptor // manifests of an index, which must be in the repository
}

// ParseManifest parses and checks a manifest body sent with Content-Type contentType. The error is a
// MANIFEST_INVALID *Error that says what is wrong.
func ParseManifest(contentType string, body []byte) (*Manifest, error) {
	var m manifestJSON
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, Errorf(ErrManifestInvalid, "manifest is not valid JSON: %v", err)
	}
	if err := checkKeys(body); err != nil {
		return nil, Errorf(ErrManifestInvalid, "manifest is ambiguous: %v", err)
	}
	if contentType == MediaTypeDockerSchema1 || contentType == MediaTypeDockerSchema1S ||
		m.MediaType == MediaTypeDockerSchema1 || m.MediaType == MediaTypeDockerSchema1S ||
		(m.SchemaVersion != nil && *m.SchemaVersion == 1) || m.FSLayers != nil {
		return nil, Errorf(ErrManifestInvalid, "Docker schema 1 manifests are not supported: "+
			"push the image as Docker schema 2 or OCI (for example: skopeo copy --format v2s2)")
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return nil, Errorf(ErrManifestInvalid, "manifest schemaVersion must be 2")
	}
	mediaType := m.MediaType
	if mediaType == "" {
		// OCI makes mediaType optional; the Content-Type then says what it is.
		mediaType = contentType
	}
	if m.MediaType != "" && contentType != "" && contentType != m.MediaType {
		return nil, Errorf(ErrManifestInvalid, "Content-Type %q does not match the manifest's mediaType %q", contentType, m.MediaType)
	}
	if mediaType == "" {
		switch {
		case m.Manifests != nil:
			mediaType = MediaTypeImageIndex
		case m.Config != nil:
			mediaType = MediaTypeImageManifest
		}
	}
	out := &Manifest{MediaType: mediaType, ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	switch mediaType {
	case MediaTypeImageManifest, MediaTypeDockerManifest:
		if m.Config == nil {
			return nil, Errorf(ErrManifestInvalid, "image manifest has no config descriptor")
		}
		if m.Manifests != nil {
			return nil, Errorf(ErrManifestInvalid, "image manifest must not list manifests")
		}
		if out.ArtifactType == "" {
			out.ArtifactType = m.Config.MediaType
		}
		out.Blobs = append(out.Blobs, *m.Config)
		out.Blobs = append(out.Blobs, m.Layers...)
	case MediaTypeImageIndex, MediaTypeDockerList:
		if m.Config != nil || m.Layers != nil {
			return nil, Errorf(ErrManifestInvalid, "index must not have a config or layers")
		}
		out.Children = m.Manifests
	default:
		return nil, Errorf(ErrManifestInvalid, "unsupported manifest media type %q", mediaType)
	}
	for _, d := range append(append([]Descriptor{}, out.Blobs...), out.Children...) {
		if err := checkDescriptor(d); err != nil {
			return nil, err
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject); err != nil {
			return nil, err
		}
		out.Subject = m.Subject.Digest
	}
	return out, nil
}

func checkDescriptor(d Descriptor) error {
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return Errorf(ErrManifestInvalid, "descriptor has an invalid digest %q", d.Digest)
	}
	if d.Size < 0 {
		return Errorf(ErrManifestInvalid, "descriptor %s has a negative size", d.Digest)
	}
	if d.MediaType == "" {
		return Errorf(ErrManifestInvalid, "descriptor %s has no mediaType", d.Digest)
	}
	return nil
}

// Foreign reports whether a layer may be absent from the registry because it is fetched from its URLs.
func (d Descriptor) Foreign() bool {
	return len(d.URLs) > 0 && (strings.Contains(d.MediaType, ".nondistributable.") || strings.Contains(d.MediaType, ".foreign."))
}

func (d Descriptor) String() string { return fmt.Sprintf("%s (%s)", d.Digest, d.MediaType) }
