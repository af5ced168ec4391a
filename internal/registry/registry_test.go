package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/registry"
	"github.com/berth/berth/internal/storage/fs"
)

// env is a registry over a real filesystem blob store and a real SQLite metadata store, served by
// httptest. The data directory is root/data; root holds nothing else the registry may touch.
type env struct {
	url  string
	root string
	data string
	c    *http.Client
	reg  *registry.Registry
	meta *sqlite.Store
	logs *lockedBuffer // what the registry logged (warnings and errors)
}

// lockedBuffer is a bytes.Buffer that a logger and a test may use at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	blobs, err := fs.New(data)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := sqlite.Open(context.Background(), filepath.Join(data, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := registry.New(blobs, meta, log)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	// ExpectContinueTimeout makes "Expect: 100-continue" work, so that a request the registry
	// refuses before reading its body never has to send it.
	tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &env{url: srv.URL, root: root, data: data, c: &http.Client{Transport: tr}, reg: reg, meta: meta, logs: logs}
}

// resp is a response read whole.
type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (r resp) get(key string) string { return r.header.Get(key) }

// do sends a request to path (relative to the server, as Location headers are) with optional
// body and header key/value pairs.
func (e *env) do(t *testing.T, method, path string, body []byte, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return e.send(t, req)
}

func (e *env) send(t *testing.T, req *http.Request) resp {
	t.Helper()
	res, err := e.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	if res.StatusCode >= 500 {
		t.Errorf("%s %s: %d %s", req.Method, req.URL, res.StatusCode, b)
	}
	return resp{code: res.StatusCode, header: res.Header, body: b}
}

// errorBody is the OCI error document.
type errorBody struct {
	Errors []struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	} `json:"errors"`
}

// checkError asserts that r is an OCI error response: status, Content-Type application/json and
// a body {"errors":[{"code","message"}]} whose first code is code (any code when code is "").
// HEAD responses have no body, so only the status and headers are checked.
func checkError(t *testing.T, r resp, status int, code oci.Code) errorBody {
	t.Helper()
	var eb errorBody
	if r.code != status {
		t.Errorf("status %d, want %d (body %s)", r.code, status, r.body)
	}
	if ct := r.get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
	if r.get("Docker-Content-Digest") != "" {
		t.Errorf("error response carries Docker-Content-Digest %q", r.get("Docker-Content-Digest"))
	}
	if len(r.body) == 0 {
		return eb // HEAD
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %s is not an OCI error document: %v", r.body, err)
	}
	if len(eb.Errors) == 0 {
		t.Fatalf("error body %s lists no errors", r.body)
	}
	for _, e := range eb.Errors {
		if e.Code == "" || e.Message == "" {
			t.Errorf("error %+v lacks a code or a message", e)
		}
	}
	if code != "" && eb.Errors[0].Code != string(code) {
		t.Errorf("error code %s, want %s (body %s)", eb.Errors[0].Code, code, r.body)
	}
	return eb
}

// checkHeaders asserts exact header values; "" asserts absence.
func checkHeaders(t *testing.T, r resp, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := r.get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func sha256Of(b []byte) digest.Digest { return digest.SHA256.FromBytes(b) }

// pushBlob uploads content to repo in one POST ?digest= and returns its digest.
func (e *env) pushBlob(t *testing.T, repo string, content []byte) digest.Digest {
	t.Helper()
	d := sha256Of(content)
	r := e.do(t, "POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content,
		"Content-Type", "application/octet-stream")
	if r.code != http.StatusCreated {
		t.Fatalf("pushing blob to %s: %d %s", repo, r.code, r.body)
	}
	return d
}

// startUpload opens an upload session in repo and returns its Location.
func (e *env) startUpload(t *testing.T, repo string) string {
	t.Helper()
	r := e.do(t, "POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if r.code != http.StatusAccepted {
		t.Fatalf("starting upload in %s: %d %s", repo, r.code, r.body)
	}
	loc := r.get("Location")
	if loc == "" {
		t.Fatal("upload has no Location")
	}
	return loc
}

// withDigest adds ?digest= to an upload Location.
func withDigest(loc string, d digest.Digest) string {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return loc + sep + "digest=" + d.String()
}

// manifest is the union of image manifest and index fields the tests write.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *oci.Descriptor   `json:"config,omitempty"`
	Layers        []oci.Descriptor  `json:"layers,omitempty"`
	Manifests     []oci.Descriptor  `json:"manifests,omitempty"`
	Subject       *oci.Descriptor   `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func (m manifest) bytes(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func descOf(mediaType string, content []byte) oci.Descriptor {
	return oci.Descriptor{MediaType: mediaType, Digest: sha256Of(content), Size: int64(len(content))}
}

const (
	ociConfig    = "application/vnd.oci.image.config.v1+json"
	ociLayer     = "application/vnd.oci.image.layer.v1.tar+gzip"
	dockerConfig = "application/vnd.docker.container.image.v1+json"
	dockerLayer  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// image pushes a config and a layer unique to seed into repo and returns an image manifest of
// mediaType (OCI or Docker schema 2) that references them.
func (e *env) image(t *testing.T, repo, seed, mediaType string) []byte {
	t.Helper()
	cfgType, layerType := ociConfig, ociLayer
	if mediaType == oci.MediaTypeDockerManifest {
		cfgType, layerType = dockerConfig, dockerLayer
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%q}`, seed))
	layer := []byte("layer of " + seed)
	e.pushBlob(t, repo, cfg)
	e.pushBlob(t, repo, layer)
	return manifest{
		SchemaVersion: 2, MediaType: mediaType,
		Config: ptr(descOf(cfgType, cfg)),
		Layers: []oci.Descriptor{descOf(layerType, layer)},
	}.bytes(t)
}

func ptr[T any](v T) *T { return &v }

// putManifest PUTs a manifest with Content-Type mediaType ("" for none).
func (e *env) putManifest(t *testing.T, repo, ref, mediaType string, body []byte) resp {
	t.Helper()
	var hdr []string
	if mediaType != "" {
		hdr = []string{"Content-Type", mediaType}
	}
	return e.do(t, "PUT", "/v2/"+repo+"/manifests/"+ref, body, hdr...)
}

// pushManifest is putManifest that must succeed; it returns the manifest's digest.
func (e *env) pushManifest(t *testing.T, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	r := e.putManifest(t, repo, ref, mediaType, body)
	if r.code != http.StatusCreated {
		t.Fatalf("pushing manifest %s:%s: %d %s", repo, ref, r.code, r.body)
	}
	return sha256Of(body)
}

// files lists the paths under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// uploadsLeft lists what is left in the blob store's upload area.
func (e *env) uploadsLeft(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.data, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

func TestBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		body         string
	}{
		{"GET", "/v2/", "{}"},
		{"GET", "/v2", "{}"},
		{"HEAD", "/v2/", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			r := e.do(t, tc.method, tc.path, nil)
			if r.code != http.StatusOK || string(r.body) != tc.body {
				t.Fatalf("%d %q, want 200 %q", r.code, r.body, tc.body)
			}
			checkHeaders(t, r, map[string]string{
				"Content-Type":                    "application/json",
				"Content-Length":                  "2",
				"Docker-Distribution-API-Version": "registry/2.0",
			})
		})
	}
}

// TestUnsupportedMethods: a known path with a method it does not serve is UNSUPPORTED (405).
func TestUnsupportedMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := sha256Of([]byte("x")).String()
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v2/"},
		{"DELETE", "/v2/"},
		{"POST", "/v2/_catalog"},
		{"HEAD", "/v2/_catalog"},
		{"DELETE", "/v2/foo/tags/list"},
		{"POST", "/v2/foo/manifests/latest"},
		{"PATCH", "/v2/foo/manifests/latest"},
		{"PUT", "/v2/foo/blobs/" + d},
		{"PATCH", "/v2/foo/blobs/" + d},
		{"GET", "/v2/foo/blobs/uploads/"},
		{"PUT", "/v2/foo/blobs/uploads/"},
		{"POST", "/v2/foo/blobs/uploads/0123456789abcdef0123456789abcdef"},
		{"PUT", "/v2/foo/referrers/" + d},
		{"DELETE", "/v2/foo/referrers/" + d},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			checkError(t, e.do(t, tc.method, tc.path, nil), http.StatusMethodNotAllowed, oci.ErrUnsupported)
		})
	}
}
