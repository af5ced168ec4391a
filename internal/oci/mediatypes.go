package oci

// Media types berth recognizes in manifests (image-spec and Docker's image manifest v2).
const (
	MediaTypeImageManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeEmptyJSON      = "application/vnd.oci.empty.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1  = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1S = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// EmptyJSON is the content of the OCI empty descriptor ("{}"), which artifacts use as config.
var EmptyJSON = []byte("{}")

// EmptyJSONDigest is the digest of EmptyJSON.
const EmptyJSONDigest Digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

// IsIndex reports whether a manifest media type lists other manifests.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeImageIndex || mediaType == MediaTypeDockerList
}
