package hubemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// Seeding: the Push helpers write to the backend registry in-process, through its own API, with no
// auth and without touching the counts or the quota. Images are OCI, as Docker Hub's official
// images are today; PushManifest takes any media type the backend stores (Docker's too).

// Media types of what PushImage builds.
const (
	MediaTypeConfig = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer  = "application/vnd.oci.image.layer.v1.tar" // uncompressed, so diff_id = digest
)

// Image is what a Push helper stored.
type Image struct {
	Repo      string
	Tag       string // "" for a manifest pushed by digest only
	Digest    string // of the manifest
	MediaType string
	Manifest  []byte
	Platform  string   // os/arch[/variant]
	Config    string   // config blob digest (image manifests)
	Layers    []string // layer digests (image manifests)
	Children  []Image  // platform manifests (indexes)
}

type descriptor struct {
	MediaType string            `json:"mediaType"`
	Digest    string            `json:"digest"`
	Size      int64             `json:"size"`
	Platform  map[string]string `json:"platform,omitempty"`
}

// do sends one request to the backend in-process.
func (h *Hub) do(method, path, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.backend.ServeHTTP(rec, req)
	return rec
}

func (h *Hub) markRepo(repo string) {
	h.mu.Lock()
	h.repos[repo] = true
	h.mu.Unlock()
}

// PushBlob stores content as a blob of repo and returns its digest.
func (h *Hub) PushBlob(repo string, content []byte) (string, error) {
	d := digest.FromBytes(content).String()
	rec := h.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d, "application/octet-stream", content)
	if rec.Code != http.StatusCreated {
		return "", fmt.Errorf("hubemu: push blob to %s: %d %s", repo, rec.Code, rec.Body)
	}
	h.markRepo(repo)
	return d, nil
}

// PushManifest stores a manifest under ref (a tag, or "" or its digest to push by digest only)
// and returns its digest. Its blobs and children must be in repo already.
func (h *Hub) PushManifest(repo, ref, mediaType string, body []byte) (string, error) {
	d := digest.FromBytes(body).String()
	if ref == "" {
		ref = d
	}
	rec := h.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, mediaType, body)
	if rec.Code != http.StatusCreated {
		return "", fmt.Errorf("hubemu: push manifest %s:%s: %d %s", repo, ref, rec.Code, rec.Body)
	}
	h.markRepo(repo)
	return d, nil
}

// PushImage stores a linux/amd64 OCI image of the given layers (any bytes; with none, one small
// layer made from repo and tag) and tags it. The config lists the layers' digests as diff_ids.
func (h *Hub) PushImage(repo, tag string, layers ...[]byte) (Image, error) {
	if len(layers) == 0 {
		layers = [][]byte{[]byte(repo + ":" + tag)}
	}
	return h.pushImage(repo, tag, "linux/amd64", layers)
}

func (h *Hub) pushImage(repo, tag, platform string, layers [][]byte) (Image, error) {
	img := Image{Repo: repo, Tag: tag, MediaType: oci.MediaTypeImageManifest, Platform: platform}
	var descs []descriptor
	for _, l := range layers {
		d, err := h.PushBlob(repo, l)
		if err != nil {
			return Image{}, err
		}
		img.Layers = append(img.Layers, d)
		descs = append(descs, descriptor{MediaType: MediaTypeLayer, Digest: d, Size: int64(len(l))})
	}
	cfg := map[string]any{"config": map[string]any{}, "rootfs": map[string]any{"type": "layers", "diff_ids": img.Layers}}
	for k, v := range parsePlatform(platform) {
		cfg[k] = v
	}
	config, _ := json.Marshal(cfg)
	var err error
	if img.Config, err = h.PushBlob(repo, config); err != nil {
		return Image{}, err
	}
	img.Manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     img.MediaType,
		"config":        descriptor{MediaType: MediaTypeConfig, Digest: img.Config, Size: int64(len(config))},
		"layers":        descs,
	})
	img.Digest, err = h.PushManifest(repo, tag, img.MediaType, img.Manifest)
	return img, err
}

// PushIndex stores a multi-arch OCI index with one image per platform ("linux/amd64",
// "linux/arm64/v8"; with none, those two), each with one small layer made from repo, tag and
// platform, and tags the index. The platform images are pushed by digest only.
func (h *Hub) PushIndex(repo, tag string, platforms ...string) (Image, error) {
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64", "linux/arm64/v8"}
	}
	idx := Image{Repo: repo, Tag: tag, MediaType: oci.MediaTypeImageIndex}
	var descs []descriptor
	for _, p := range platforms {
		child, err := h.pushImage(repo, "", p, [][]byte{[]byte(repo + ":" + tag + " " + p)})
		if err != nil {
			return Image{}, err
		}
		idx.Children = append(idx.Children, child)
		descs = append(descs, descriptor{MediaType: child.MediaType, Digest: child.Digest,
			Size: int64(len(child.Manifest)), Platform: parsePlatform(p)})
	}
	idx.Manifest, _ = json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": idx.MediaType, "manifests": descs})
	var err error
	idx.Digest, err = h.PushManifest(repo, tag, idx.MediaType, idx.Manifest)
	return idx, err
}

func parsePlatform(p string) map[string]string {
	parts := strings.SplitN(p, "/", 3)
	m := map[string]string{"os": parts[0]}
	if len(parts) > 1 {
		m["architecture"] = parts[1]
	}
	if len(parts) > 2 {
		m["variant"] = parts[2]
	}
	return m
}

// SetTag points tag at the manifest dgst, which must be in repo (the upstream moved a tag).
func (h *Hub) SetTag(repo, tag, dgst string) error {
	rec := h.do(http.MethodGet, "/v2/"+repo+"/manifests/"+dgst, "", nil)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("hubemu: get manifest %s@%s: %d %s", repo, dgst, rec.Code, rec.Body)
	}
	_, err := h.PushManifest(repo, tag, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	return err
}

// DeleteTag removes a tag (the manifest stays, by digest).
func (h *Hub) DeleteTag(repo, tag string) error {
	rec := h.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+tag, "", nil)
	if rec.Code != http.StatusAccepted {
		return fmt.Errorf("hubemu: delete tag %s:%s: %d %s", repo, tag, rec.Code, rec.Body)
	}
	return nil
}
