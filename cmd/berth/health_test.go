package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealth: `berth health` exits zero on a 200 and names the status and body otherwise.
func TestHealth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			http.Error(w, "storage unreachable", http.StatusServiceUnavailable)
		case "/healthz":
			w.Write([]byte("ok\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	run := func(args ...string) (string, error) {
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	if out, err := run("health", "--url", srv.URL); err != nil || out != "ok\n" {
		t.Errorf("health = %q, %v; want ok", out, err)
	}
	if _, err := run("health", "--ready", "--url", srv.URL+"/"); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "storage unreachable") {
		t.Errorf("health --ready on a 503 = %v", err)
	}
	srv.Close()
	if _, err := run("health", "--url", srv.URL); err == nil {
		t.Error("health against a closed server succeeded")
	}
}
