package registry

import (
	"net/http"

	"github.com/berth/berth/internal/oci"
)

// referrers serves GET /v2/<name>/referrers/<digest> (spec: "Listing referrers"): an image index of
// the manifests whose subject is the digest, filtered by artifactType when asked.
func (rg *Registry) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	at := r.URL.Query().Get("artifactType")
	descs, err := rg.meta.Referrers(r.Context(), rt.name, rt.dgst, at)
	if err != nil {
		return err
	}
	if at != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, oci.MediaTypeImageIndex, struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{2, oci.MediaTypeImageIndex, descs})
}
