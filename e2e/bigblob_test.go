package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The big blob: past 4 GiB (2^32), so that every offset, length, Range and Content-Range beyond
// it needs more than 32 bits, and not a multiple of a segment (64 KiB) or a page.
const (
	bigSize  = int64(1)<<32 + 3<<20 + 12345
	bigBlock = 4096 // a marker every bigBlock bytes
	two32    = int64(1) << 32
)

// bigFill writes the big blob's bytes from offset off into p: zeros, but every 4 KiB block starts
// with a 16-byte marker (its offset, and a hash of it), so that any misplaced, shifted or
// truncated range shows, and the whole costs no disk to make and little time to hash.
func bigFill(p []byte, off int64) {
	clear(p)
	end := off + int64(len(p))
	for bs := off - off%bigBlock; bs < end; bs += bigBlock {
		var m [16]byte
		binary.BigEndian.PutUint64(m[:8], uint64(bs))
		binary.BigEndian.PutUint64(m[8:], bigMix(uint64(bs)))
		for i := range int64(len(m)) {
			if pos := bs + i; pos >= off && pos < end {
				p[pos-off] = m[i]
			}
		}
	}
}

// bigMix is splitmix64's finalizer.
func bigMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// bigBytes is the big blob's bytes [from, to).
func bigBytes(from, to int64) []byte {
	p := make([]byte, to-from)
	bigFill(p, from)
	return p
}

// bigReader reads the big blob's bytes [off, end).
type bigReader struct{ off, end int64 }

func (r *bigReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.end-r.off)]
	bigFill(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

var bigDigestOnce = sync.OnceValue(func() string {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, &bigReader{0, bigSize}, make([]byte, 1<<20)); err != nil {
		panic(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
})

var bigClient = &http.Client{Timeout: 10 * time.Minute}

// bigDo sends a request whose body is the big blob's bytes [from, to) (none when from == to) with
// hdr, and returns the response with its body read (the body of a 200 or 206 is discarded).
func bigDo(t *testing.T, method, u string, from, to int64, hdr ...string) authResp {
	t.Helper()
	var body io.Reader
	if to > from {
		body = &bigReader{from, to}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = to - from
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := bigClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return authResp{resp.StatusCode, resp.Header, b}
}

// bigRange is "0-<end>" for an upload holding n bytes.
func bigRange(n int64) string { return fmt.Sprintf("0-%d", n-1) }

// TestBigBlob: a blob past 4 GiB, unencrypted and encrypted at rest (where its segments lie past
// 2^32 bytes of the file). It is pushed in chunks whose Content-Range goes past 2^32; a chunk is
// cut off by the client disconnecting past 2^32, the session keeps what arrived and says so, a
// chunk at a wrong offset (also at the offset truncated to 32 bits) is refused with 416, and the
// upload resumes and commits with the last chunk in the PUT. Then HEAD gives its size, ranges near
// and past the 2^32 boundary and across segments there come back byte for byte, ranges past the
// end are 416, the whole blob downloads to its digest, and a manifest lists it with its size.
func TestBigBlob(t *testing.T) {
	var st unix.Statfs_t
	dir := t.TempDir()
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < bigSize+2<<30 {
		t.Fatalf("TestBigBlob needs %d GiB free in %s, there are %.1f GiB", (bigSize+2<<30)>>30, dir, float64(free)/(1<<30))
	}
	began := time.Now()
	d := bigDigestOnce()
	t.Logf("the %d-byte blob hashes to %s (%v)", bigSize, d, time.Since(began).Round(time.Millisecond))

	t.Run("plain", func(t *testing.T) { bigBlobCase(t, startBerth(t), d) })
	t.Run("encrypted", func(t *testing.T) {
		key := filepath.Join(t.TempDir(), "kek")
		if out, err := exec.Command(berthBin, "encryption", "keygen", key).CombinedOutput(); err != nil {
			t.Fatalf("berth encryption keygen: %v\n%s", err, out)
		}
		bigBlobCase(t, startBerth(t, "--encryption-key-file", key), d)
	})
}

func bigBlobCase(t *testing.T, b *berth, d string) {
	began := time.Now()
	repo := "big/blob"
	r := bigDo(t, http.MethodPost, b.URL()+"/v2/"+repo+"/blobs/uploads/", 0, 0)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %s", r)
	}
	loc := b.URL() + r.Header.Get("Location")
	patch := func(from, to int64) {
		t.Helper()
		r := bigDo(t, http.MethodPatch, loc, from, to, "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", from, to-1))
		if r.Status != http.StatusAccepted || r.Header.Get("Range") != bigRange(to) {
			t.Fatalf("PATCH %d-%d: %s, Range %q, want 202 and %q", from, to-1, r, r.Header.Get("Range"), bigRange(to))
		}
		loc = b.URL() + r.Header.Get("Location")
	}
	// Two chunks: up to 2 GiB, then across 2^32.
	cut1, cut2 := int64(1)<<31, two32+1<<20+5
	patch(0, cut1)
	patch(cut1, cut2)

	// A chunk cut off past 2^32: the client sends sent bytes of it and goes away.
	const sent = 1<<20 + 77
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = bigSize - cut2
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", cut2, bigSize-1))
	errc := make(chan error, 1)
	go func() {
		resp, err := bigClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the cut-off PATCH got an answer: %s", resp.Status)
		}
		errc <- err
	}()
	if _, err := io.Copy(pw, &bigReader{cut2, cut2 + sent}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // for the server to take in what was sent
	cancel()
	pw.CloseWithError(context.Canceled)
	if err := <-errc; ctx.Err() == nil || err == nil {
		t.Fatalf("the cut-off PATCH: %v", err)
	}
	r = bigDo(t, http.MethodGet, loc, 0, 0)
	kept, ok := crashParseRange(r.Header.Get("Range"))
	kept++
	if r.Status != http.StatusNoContent || !ok || kept < cut2 || kept > cut2+sent {
		t.Fatalf("upload status after the client went away: %s, Range %q; want 204 and between %d and %d bytes",
			r, r.Header.Get("Range"), cut2, cut2+sent)
	}
	t.Logf("the client went away after sending %d bytes past offset %d: the session kept %d of them", sent, cut2, kept-cut2)
	loc = b.URL() + r.Header.Get("Location")

	// Chunks at a wrong offset are refused and change nothing: past the end, and at the end
	// truncated to 32 bits (what a 32-bit offset would take for the end).
	for _, at := range []int64{kept + 1, kept & (two32 - 1)} {
		r := bigDo(t, http.MethodPatch, loc, at, at+1000, "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", at, at+999))
		if r.Status != http.StatusRequestedRangeNotSatisfiable || r.Header.Get("Range") != bigRange(kept) {
			t.Fatalf("PATCH at offset %d of an upload of %d bytes: %s, Range %q; want 416 and %q", at, kept, r, r.Header.Get("Range"), bigRange(kept))
		}
	}
	// Resume from where the session is; the last chunk goes with the PUT.
	last := bigSize - 1000
	patch(kept, last)
	r = bigDo(t, http.MethodPut, loc+encSep(loc)+"digest="+d, last, bigSize, "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", last, bigSize-1))
	if r.Status != http.StatusCreated || r.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("PUT with the last chunk: %s", r)
	}
	pushed := time.Since(began)

	blobURL := b.URL() + "/v2/" + repo + "/blobs/" + d
	r = bigDo(t, http.MethodHead, blobURL, 0, 0)
	if r.Status != http.StatusOK || r.Header.Get("Content-Length") != strconv.FormatInt(bigSize, 10) || r.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("HEAD: %s, Content-Length %q, want 200 and %d", r, r.Header.Get("Content-Length"), bigSize)
	}

	// Ranges near and past 2^32, across segments there, at the chunk and cut-off points.
	seg := int64(64 << 10)
	ranges := [][2]int64{
		{0, 4095}, {cut1 - 5, cut1 + 5}, {two32 - 16, two32 + 15}, {two32, two32}, {two32 - 1, two32 - 1},
		{two32 + 3*seg - 7, two32 + 5*seg + 9}, {cut2 - 3, cut2 + 3}, {kept - 10, kept + 10},
		{bigSize - 100_000, bigSize - 1}, {bigSize - 1, bigSize - 1},
	}
	rng := rand.New(rand.NewPCG(4, 32))
	for range 12 {
		a := two32 - 1<<20 + rng.Int64N(bigSize-two32+1<<20)
		ranges = append(ranges, [2]int64{a, min(bigSize-1, a+rng.Int64N(200<<10))})
	}
	for _, rg := range ranges {
		r := bigDo(t, http.MethodGet, blobURL, 0, 0, "Range", fmt.Sprintf("bytes=%d-%d", rg[0], rg[1]))
		want := fmt.Sprintf("bytes %d-%d/%d", rg[0], rg[1], bigSize)
		if r.Status != http.StatusPartialContent || r.Header.Get("Content-Range") != want || !bytes.Equal(r.Body, bigBytes(rg[0], rg[1]+1)) {
			t.Fatalf("Range %d-%d: %d, Content-Range %q, %d bytes (equal: %v); want 206, %q, %d bytes",
				rg[0], rg[1], r.Status, r.Header.Get("Content-Range"), len(r.Body), bytes.Equal(r.Body, bigBytes(rg[0], rg[1]+1)), want, rg[1]-rg[0]+1)
		}
	}
	for _, h := range []struct{ rg, want string }{
		{"bytes=-70000", fmt.Sprintf("bytes %d-%d/%d", bigSize-70000, bigSize-1, bigSize)},
		{fmt.Sprintf("bytes=%d-", bigSize-5000), fmt.Sprintf("bytes %d-%d/%d", bigSize-5000, bigSize-1, bigSize)},
	} {
		r := bigDo(t, http.MethodGet, blobURL, 0, 0, "Range", h.rg)
		if r.Status != http.StatusPartialContent || r.Header.Get("Content-Range") != h.want || !bytes.Equal(r.Body, bigBytes(bigSize-int64(len(r.Body)), bigSize)) {
			t.Fatalf("Range %q: %d, Content-Range %q, %d bytes; want 206, %q", h.rg, r.Status, r.Header.Get("Content-Range"), len(r.Body), h.want)
		}
	}
	for _, rg := range []string{fmt.Sprintf("bytes=%d-", bigSize), fmt.Sprintf("bytes=%d-%d", bigSize+two32, bigSize+two32+10)} {
		r := bigDo(t, http.MethodGet, blobURL, 0, 0, "Range", rg)
		if r.Status != http.StatusRequestedRangeNotSatisfiable || r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", bigSize) {
			t.Fatalf("Range %q past the end: %s, Content-Range %q; want 416 and bytes */%d", rg, r, r.Header.Get("Content-Range"), bigSize)
		}
	}

	// The whole blob, by its digest.
	dl := time.Now()
	resp, err := bigClient.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 1<<20))
	resp.Body.Close()
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); err != nil || resp.StatusCode != http.StatusOK || n != bigSize || got != d {
		t.Fatalf("GET the blob: %s, %d bytes hashing to %s (%v); want %d bytes, %s", resp.Status, n, got, err, bigSize, d)
	}
	downloaded := time.Since(dl)

	// A manifest lists it with its size.
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDigest := clDigest(cfg)
	if r := authDo(t, http.MethodPost, b.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+cfgDigest, "", cfg, "Content-Type", "application/octet-stream"); r.Status != http.StatusCreated {
		t.Fatalf("POST config: %s", r)
	}
	m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		clOCIManifest, clOCIConfig, cfgDigest, len(cfg), clOCILayerGzip, d, bigSize))
	if r := authPutManifest(t, b, "", repo, "v1", m); r.Status != http.StatusCreated {
		t.Fatalf("PUT a manifest with the big layer: %s", r)
	}
	if r := authGetManifest(t, b, "", repo, "v1"); r.Status != http.StatusOK || !bytes.Equal(r.Body, m) {
		t.Fatalf("GET the manifest: %s", r)
	}
	t.Logf("pushed %d bytes in chunks with a resume in %v; ranges checked; downloaded and verified in %v",
		bigSize, pushed.Round(time.Millisecond), downloaded.Round(time.Millisecond))
}
