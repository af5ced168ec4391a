package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// encPattern is recognizable plaintext: numbered lines.
func encPattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "TOP-SECRET-LINE-%07d;", i)
	}
	return b.Bytes()[:n]
}

func encDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// encGrep lists the files under root (the SQLite files aside: manifests are not encrypted) that
// hold any 32-byte run of secret, at 64 places, or the needle.
func encGrep(t *testing.T, root string, secret []byte, needle string) []string {
	t.Helper()
	var found []string
	scanned := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "metadata.db") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		scanned++
		if needle != "" && bytes.Contains(data, []byte(needle)) {
			found = append(found, path+" ("+needle+")")
			return nil
		}
		for i := range 64 {
			off := i * (len(secret) - 32) / 63
			if len(secret) >= 32 && bytes.Contains(data, secret[off:off+32]) {
				found = append(found, fmt.Sprintf("%s (bytes at %d)", path, off))
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned == 0 { // a search of nothing finds nothing, and proves nothing
		t.Fatalf("no file to search under %s", root)
	}
	return found
}

// encRequest sends a request and returns the response with its body read.
func encRequest(t *testing.T, method, url string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, b
}

// encStartFails runs berth serve on data with args and returns its output; it must exit with an
// error without serving.
func encStartFails(t *testing.T, data string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, append([]string{"serve", "--dev", "--addr", freeAddr(t), "--data", data}, args...)...)
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("berth serve %v did not fail at start (%v):\n%s", args, err, out)
	}
	return string(out)
}

// TestEncryptionAtRest: with a key file, what crane pushes and what is uploaded over plain HTTP
// (monolithic, and chunked across a restart) is never on disk in plaintext, not even in the
// middle of an upload; it pulls back whole and serves ranges at and across segment boundaries;
// a missing or wrong key stops berth at start with a message that says what to do; rotation to a
// new key lets the old one go.
func TestEncryptionAtRest(t *testing.T) {
	crane := tool(t, "crane")
	keys := t.TempDir()
	key1, key2 := filepath.Join(keys, "kek1"), filepath.Join(keys, "kek2")
	for _, k := range []string{key1, key2} {
		if out, err := exec.Command(berthBin, "encryption", "keygen", k).CombinedOutput(); err != nil {
			t.Fatalf("berth encryption keygen: %v\n%s", err, out)
		}
	}
	b := startBerth(t, "--encryption-key-file", key1)
	dir := t.TempDir()

	// crane pushes an image whose layer holds recognizable text.
	secret := encPattern(300_000)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "secret.txt", Mode: 0o644, Size: int64(len(secret)), Typeflag: tar.TypeReg})
	tw.Write(secret)
	tw.Close()
	if err := os.WriteFile(filepath.Join(dir, "layer.tar"), layer.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	img := b.Addr + "/enc/app:v1"
	if out, err := runEnv(dir, nil, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", img); err != nil {
		t.Fatalf("crane append: %v\n%s", err, out)
	}
	manifest, err := runEnv(dir, nil, crane, "manifest", img)
	if err != nil {
		t.Fatalf("crane manifest: %v\n%s", err, manifest)
	}
	layerDigest := ""
	if i := strings.Index(manifest, `"layers"`); i >= 0 {
		if j := strings.Index(manifest[i:], "sha256:"); j >= 0 {
			layerDigest = manifest[i+j : i+j+71]
		}
	}
	pushedLayer, err := runEnv(dir, nil, crane, "blob", b.Addr+"/enc/app@"+layerDigest)
	if err != nil || encDigest([]byte(pushedLayer)) != layerDigest {
		t.Fatalf("crane blob %s: %v (digest %s)", layerDigest, err, encDigest([]byte(pushedLayer)))
	}
	exported, err := runEnv(dir, nil, crane, "export", img, "-")
	if err != nil || !strings.Contains(exported, string(secret[:1000])) {
		t.Fatalf("crane export: %v (the secret file is not in it)", err)
	}

	// A blob of plain text, pushed in one request, and ranges of it.
	raw := encPattern(5*65536 + 4321)
	rawDigest := encDigest(raw)
	resp, body := encRequest(t, http.MethodPost, b.URL()+"/v2/enc/raw/blobs/uploads/?digest="+rawDigest, raw, "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic push: %s %s", resp.Status, body)
	}
	blobURL := b.URL() + "/v2/enc/raw/blobs/" + rawDigest
	checkRanges := func() {
		t.Helper()
		resp, body := encRequest(t, http.MethodGet, blobURL, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) {
			t.Fatalf("GET the blob: %s, %d bytes, equal %v", resp.Status, len(body), bytes.Equal(body, raw))
		}
		S := 65536
		n := len(raw)
		ranges := [][2]int{{0, 0}, {S - 1, S}, {S, 2*S - 1}, {S - 10, 3*S + 10}, {2*S - 1, 2*S - 1}, {5 * S, n - 1}, {n - 1, n - 1}}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20 {
			a := rng.IntN(n)
			ranges = append(ranges, [2]int{a, min(n-1, a+rng.IntN(3*S))})
		}
		for _, r := range ranges {
			resp, body := encRequest(t, http.MethodGet, blobURL, nil, "Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
			want := fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], n)
			if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || !bytes.Equal(body, raw[r[0]:r[1]+1]) {
				t.Fatalf("Range %d-%d: %s, Content-Range %q, %d bytes; want 206, %q, %d bytes of the blob",
					r[0], r[1], resp.Status, resp.Header.Get("Content-Range"), len(body), want, r[1]-r[0]+1)
			}
		}
		resp, body = encRequest(t, http.MethodGet, blobURL, nil, "Range", "bytes=-100")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, raw[n-100:]) {
			t.Fatalf("suffix range: %s, %d bytes", resp.Status, len(body))
		}
		resp, _ = encRequest(t, http.MethodGet, blobURL, nil, "Range", fmt.Sprintf("bytes=%d-", n+10))
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("range past the end: %s, want 416", resp.Status)
		}
		resp, _ = encRequest(t, http.MethodHead, blobURL, nil)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(n) {
			t.Fatalf("HEAD: %s, Content-Length %d, want %d", resp.Status, resp.ContentLength, n)
		}
	}
	checkRanges()

	// A chunked upload: its first chunk, then a look at the disk, a restart, and the rest.
	chunked := encPattern(3*65536 + 999)[13:]
	resp, body = encRequest(t, http.MethodPost, b.URL()+"/v2/enc/chunked/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload: %s %s", resp.Status, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = b.URL() + loc
	}
	patch := func(from, to int) {
		t.Helper()
		resp, body := encRequest(t, http.MethodPatch, loc, chunked[from:to], "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", from, to-1))
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-"+strconv.Itoa(to-1) {
			t.Fatalf("PATCH %d-%d: %s, Range %q: %s", from, to-1, resp.Status, resp.Header.Get("Range"), body)
		}
		if l := resp.Header.Get("Location"); l != "" {
			loc = l
			if !strings.HasPrefix(loc, "http") {
				loc = b.URL() + loc
			}
		}
	}
	patch(0, 100_000)
	if found := encGrep(t, b.Data, chunked, "TOP-SECRET"); len(found) > 0 {
		t.Fatalf("plaintext on disk in the middle of an upload: %v", found)
	}
	b.Restart("--encryption-key-file", key1)
	patch(100_000, 150_001)
	patch(150_001, len(chunked))
	resp, body = encRequest(t, http.MethodPut, loc+encSep(loc)+"digest="+encDigest(chunked), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT after a restart: %s %s", resp.Status, body)
	}
	if resp, body := encRequest(t, http.MethodGet, b.URL()+"/v2/enc/chunked/blobs/"+encDigest(chunked), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, chunked) {
		t.Fatalf("GET the chunked blob: %s, %d bytes", resp.Status, len(body))
	}

	// Nothing pushed is on disk in plaintext: the layer as pushed, the text in it, the blobs.
	for _, c := range []struct {
		name   string
		secret []byte
	}{{"the layer", []byte(pushedLayer)}, {"the raw blob", raw}, {"the chunked blob", chunked}} {
		if found := encGrep(t, b.Data, c.secret, "TOP-SECRET"); len(found) > 0 {
			t.Errorf("%s is on disk in plaintext: %v", c.name, found)
		}
	}

	// A missing or wrong key stops berth at start, and says what to do.
	b.Stop()
	out := encStartFails(t, b.Data)
	for _, want := range []string{"encrypted", "--encryption-key-file"} {
		if !strings.Contains(out, want) {
			t.Errorf("start without the key: output does not say %q:\n%s", want, out)
		}
	}
	out = encStartFails(t, b.Data, "--encryption-key-file", key2)
	for _, want := range []string{"not configured", "previous_key_files", "berth encryption rotate"} {
		if !strings.Contains(out, want) {
			t.Errorf("start with the wrong key: output does not say %q:\n%s", want, out)
		}
	}

	// Rotation to key2 (offline): then key2 alone serves everything.
	if out, err := exec.Command(berthBin, "encryption", "rotate", "--data", b.Data, "--key-file", key2, "--previous-key-file", key1).CombinedOutput(); err != nil {
		t.Fatalf("berth encryption rotate: %v\n%s", err, out)
	} else {
		t.Logf("berth encryption rotate: %s", bytes.TrimSpace(out))
	}
	b.start("--encryption-key-file", key2)
	checkRanges()
	if got, err := runEnv(dir, nil, crane, "blob", b.Addr+"/enc/app@"+layerDigest); err != nil || got != pushedLayer {
		t.Fatalf("crane blob after the rotation: %v", err)
	}
	encStartFails(t, t.TempDir()+"/x", "--encryption-key-file", filepath.Join(keys, "missing"))
}

func encSep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}
