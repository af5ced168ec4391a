package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Media types of the small image, and the Accept header real clients (crane, docker, containerd)
// send for a manifest.
const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	acceptAll  = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
)

// Repositories the workload uses in every registry.
const (
	repoSmall = "bench/small" // the small image, tag latest
	repoBig   = "bench/big"   // the download blob
	repoPush  = "bench/push"  // the pushed blobs
)

// blob is content with its digest.
type blob struct {
	data   []byte
	digest string
}

func newBlob(data []byte) blob { return blob{data: data, digest: sha256Digest(data)} }

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// workload is every byte the measurements send, made before anything is timed.
type workload struct {
	config, layer blob // of the small image
	manifest      blob

	dlFile   string // the download blob, on disk: registries get it pushed, the file server serves it
	dlDigest string
	dlSize   int64

	push map[int][]blob // concurrency -> distinct random blobs pushed at it
}

// prepareWorkload builds the small image, the download blob and the push blobs the selected
// measurements need. Random content comes from seeded ChaCha8: distinct, incompressible, and the
// same in every run.
func prepareWorkload(o options, p plan, tmp string) (*workload, error) {
	start := time.Now()
	w := &workload{}
	if err := w.smallImage(); err != nil {
		return nil, err
	}
	if slices.Contains(o.only, "download") {
		data := randomBytes(1, p.dlSize)
		w.dlFile, w.dlDigest, w.dlSize = filepath.Join(tmp, "download.blob"), sha256Digest(data), p.dlSize
		if err := os.WriteFile(w.dlFile, data, 0o644); err != nil {
			return nil, err
		}
	}
	if slices.Contains(o.only, "push") {
		w.push = map[int][]blob{}
		seed := uint64(100)
		for _, c := range p.pushConc {
			for range p.pushCount[c] {
				seed++
				w.push[c] = append(w.push[c], newBlob(randomBytes(seed, p.pushSize)))
			}
		}
	}
	fmt.Printf("workload ready in %s\n", time.Since(start).Round(time.Millisecond))
	return w, nil
}

func randomBytes(seed uint64, n int64) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// smallImage makes an OCI image of a config and one small gzipped tar layer.
func (w *workload) smallImage() error {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	content := randomBytes(7, 4096)
	hdr := &tar.Header{Name: "bench/data.bin", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	tw.Write(content)
	if err := tw.Close(); err != nil {
		return err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	if err := zw.Close(); err != nil {
		return err
	}
	w.layer = newBlob(gz.Bytes())
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{sha256Digest(tarBuf.Bytes())}},
	})
	if err != nil {
		return err
	}
	w.config = newBlob(cfg)
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtManifest,
		"config":        desc{mtConfig, w.config.digest, len(w.config.data)},
		"layers":        []desc{{mtLayer, w.layer.digest, len(w.layer.data)}},
	})
	if err != nil {
		return err
	}
	w.manifest = newBlob(man)
	return nil
}

// drain reads the rest of a response body so that its connection is reused.
func drain(r io.ReadCloser) {
	io.Copy(io.Discard, r)
	r.Close()
}
