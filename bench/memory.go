package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
)

// memoryServerCmd is the hidden subcommand that makes the bench binary the "memory" server: the
// least a registry can do to answer a manifest request, in a process of its own so that its CPU
// is measured exactly like a registry's. berth's manifest GET is compared with it (berth/memory).
const memoryServerCmd = "__memory"

// memoryManifest is one stored manifest with the headers it is answered with.
type memoryManifest struct {
	content                     []byte
	mediaType, digest, etag, cl string
}

// runMemoryServer serves ADDR: PUT /v2/<name>/manifests/<ref> stores the body in a map (by tag,
// and by digest), GET and HEAD answer it with the headers berth sends (Content-Type,
// Docker-Content-Digest, ETag, Content-Length, Docker-Distribution-API-Version), GET /v2/ answers
// 200. Nothing else: no blobs, no checks of what a manifest references, no Accept negotiation.
func runMemoryServer(args []string) {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: bench", memoryServerCmd, "ADDR")
		os.Exit(2)
	}
	var (
		mu        sync.RWMutex
		manifests = map[string]*memoryManifest{} // "name:ref" -> manifest
	)
	err := http.ListenAndServe(args[0], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Docker-Distribution-API-Version", "registry/2.0")
		if r.URL.Path == "/v2/" {
			h.Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
			return
		}
		name, ref, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
		if !ok || !strings.HasPrefix(r.URL.Path, "/v2/") {
			http.NotFound(w, r)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			mu.RLock()
			m := manifests[name+":"+ref]
			mu.RUnlock()
			if m == nil {
				http.NotFound(w, r)
				return
			}
			h.Set("Content-Type", m.mediaType)
			h.Set("Docker-Content-Digest", m.digest)
			h.Set("ETag", m.etag)
			h.Set("Content-Length", m.cl)
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				w.Write(m.content)
			}
		case http.MethodPut:
			body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := sha256.Sum256(body)
			d := "sha256:" + hex.EncodeToString(sum[:])
			m := &memoryManifest{content: body, mediaType: r.Header.Get("Content-Type"), digest: d,
				etag: `"` + d + `"`, cl: strconv.Itoa(len(body))}
			mu.Lock()
			manifests[name+":"+ref], manifests[name+":"+d] = m, m
			mu.Unlock()
			h.Set("Location", "/v2/"+name+"/manifests/"+d)
			h.Set("Docker-Content-Digest", d)
			w.WriteHeader(http.StatusCreated)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	}))
	fmt.Fprintln(os.Stderr, "memory:", err)
	os.Exit(1)
}
