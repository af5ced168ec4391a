package enginetest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A forwarder passes requests and answers through, counts the bytes the server sent, and refuses
// connections once cut.
func TestForwarderCounts(t *testing.T) {
	body := strings.Repeat("x", 100_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	f := Forward(t, strings.TrimPrefix(srv.URL, "http://"))
	resp, err := http.Get("http://" + f.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != body {
		t.Fatalf("through the forwarder: %d bytes, %v; want the server's %d", len(got), err, len(body))
	}
	// The body and the response's head, not much more.
	if n := f.Served(); n < int64(len(body)) || n > int64(len(body))+1000 {
		t.Errorf("Served() = %d after a %d-byte body", n, len(body))
	}
	f.Cut()
	if _, err := http.Get("http://" + f.Addr() + "/"); err == nil {
		t.Error("a request through a cut forwarder succeeded")
	}
}
