package registry_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStalledUploadBody: a client that stops sending in the middle of a chunk is cut off after the
// idle timeout; the bytes it did send stay, and the upload can go on from there.
func TestStalledUploadBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.reg.SetBodyIdleTimeout(300 * time.Millisecond)
	loc := e.startUpload(t, "slow/client")

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		pw.Write([]byte(strings.Repeat("x", 1000)))
		time.Sleep(5 * time.Second) // then nothing: a stalled client
	}()
	req, _ := http.NewRequest(http.MethodPatch, e.url+loc, pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := e.c.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a stalled body held the request for %v; the idle timeout is 300ms", took)
	}
	r := e.do(t, http.MethodGet, loc, nil)
	if r.code != http.StatusNoContent || r.get("Range") != "0-999" {
		t.Fatalf("upload status after the stall: %d Range %q, want 204 with 0-999", r.code, r.get("Range"))
	}
}
