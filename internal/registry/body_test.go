package registry_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/oci"
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
		// Then nothing: a stalled client. It gives up after 30 s, so that a missing idle
		// timeout fails the test instead of hanging it.
		time.Sleep(30 * time.Second)
		pw.CloseWithError(errors.New("the client gave up"))
	}()
	req, _ := http.NewRequest(http.MethodPatch, e.url+loc, pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := e.c.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if took := time.Since(start); took > 20*time.Second { // a hang bound: the body never ends
		t.Fatalf("a stalled body held the request for %v; the idle timeout is 300ms", took)
	}
	r := e.do(t, http.MethodGet, loc, nil)
	if r.code != http.StatusNoContent || r.get("Range") != "0-999" {
		t.Fatalf("upload status after the stall: %d Range %q, want 204 with 0-999", r.code, r.get("Range"))
	}
}

// TestTricklingUploadBody: a body that sends a byte now and then, never stalling for the idle
// timeout, is cut off all the same: only progress (minBodyProgress bytes) keeps it going.
func TestTricklingUploadBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.reg.SetBodyIdleTimeout(300 * time.Millisecond)
	loc := e.startUpload(t, "slow/trickle")

	pr, pw := io.Pipe()
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				pw.Close()
				return
			case <-time.After(30 * time.Millisecond): // well within the idle timeout each time
			}
			if _, err := pw.Write([]byte("x")); err != nil {
				return
			}
			n++
		}
	}()
	req, _ := http.NewRequest(http.MethodPatch, e.url+loc, pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan resp, 1)
	go func() {
		res, err := e.c.Do(req)
		if err != nil {
			done <- resp{}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- resp{code: res.StatusCode, body: b}
	}()
	select {
	case r := <-done:
		close(stop)
		if r.code != 0 && r.code != http.StatusRequestTimeout {
			t.Errorf("a trickling body: %d %s, want 408 or a closed connection", r.code, r.body)
		}
	case <-time.After(20 * time.Second):
		close(stop)
		t.Fatal("a body trickling a byte every 30ms was not cut off within 20s (idle timeout 300ms)")
	}
	n := <-sent
	// What arrived stays in the upload.
	r := e.do(t, http.MethodGet, loc, nil)
	var end int
	if _, err := fmt.Sscanf(r.get("Range"), "0-%d", &end); r.code != http.StatusNoContent || err != nil || end+1 > n {
		t.Errorf("upload status after the cut: %d Range %q, %d bytes sent", r.code, r.get("Range"), n)
	}
	t.Logf("cut off after %d bytes", n)
}

// TestBrokenOffUploadBody: a client that breaks its chunked body off is the client's doing, not
// an internal error: berth logs no error for it, and keeps what arrived.
func TestBrokenOffUploadBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	loc := e.startUpload(t, "broken/client")
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n", loc, u.Host)
	fmt.Fprintf(conn, "400\r\n%s\r\n", strings.Repeat("z", 0x400)) // one 1 KiB chunk, then nothing
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	var r resp
	for range 100 { // the server notices the closed connection in its own time
		if r = e.do(t, http.MethodGet, loc, nil); r.get("Range") == "0-1023" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.code != http.StatusNoContent || r.get("Range") != "0-1023" {
		t.Errorf("upload status after the broken body: %d Range %q, want 204 0-1023", r.code, r.get("Range"))
	}
	if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("a broken-off body was logged as an error:\n%s", logs)
	}
}

func TestMaxBlobSize(t *testing.T) {
	e := newEnv(t)
	e.reg.SetMaxBlobSize(1000)
	fits := bytes.Repeat([]byte("a"), 1000)
	over := bytes.Repeat([]byte("b"), 1001)

	// Monolithic: exactly the limit is fine, one byte more is 413, with or without Content-Length.
	r := e.do(t, http.MethodPost, "/v2/big/blobs/uploads/?digest="+sha256Of(fits).String(), fits)
	if r.code != http.StatusCreated {
		t.Fatalf("blob of the maximum size: %d %s", r.code, r.body)
	}
	r = e.do(t, http.MethodPost, "/v2/big/blobs/uploads/?digest="+sha256Of(over).String(), over)
	checkError(t, r, http.StatusRequestEntityTooLarge, oci.ErrSizeInvalid)
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v2/big/blobs/uploads/?digest="+sha256Of(over).String(),
		io.MultiReader(bytes.NewReader(over))) // no Content-Length: caught while reading
	req.ContentLength = -1
	checkError(t, e.send(t, req), http.StatusRequestEntityTooLarge, oci.ErrSizeInvalid)
	if r := e.do(t, http.MethodHead, "/v2/big/blobs/"+sha256Of(over).String(), nil); r.code != http.StatusNotFound {
		t.Fatalf("refused blob is visible: %d", r.code)
	}

	// Chunked: the limit counts what the session already holds.
	loc := e.startUpload(t, "big")
	r = e.do(t, http.MethodPatch, loc, over[:600], "Content-Range", "0-599")
	if r.code != http.StatusAccepted {
		t.Fatalf("first chunk: %d %s", r.code, r.body)
	}
	r = e.do(t, http.MethodPatch, r.get("Location"), over[600:], "Content-Range", "600-1000")
	checkError(t, r, http.StatusRequestEntityTooLarge, oci.ErrSizeInvalid)
	// Whatever of the refused chunk was taken, the session never holds more than the limit.
	r = e.do(t, http.MethodGet, loc, nil)
	var end int
	if _, err := fmt.Sscanf(r.get("Range"), "0-%d", &end); err != nil || end > 999 {
		t.Fatalf("upload status after the refused chunk: %d Range %q", r.code, r.get("Range"))
	}
}
