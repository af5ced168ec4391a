package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth/berth/internal/version"
)

// TestVersion: `berth version` and `berth --version` print the same line, and --json the same
// identity in full.
func TestVersion(t *testing.T) {
	run := func(args ...string) string {
		t.Helper()
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("berth %v: %v", args, err)
		}
		return out.String()
	}
	want := version.Get().String() + "\n"
	if got := run("version"); got != want {
		t.Errorf("berth version = %q, want %q", got, want)
	}
	if got := run("--version"); got != want {
		t.Errorf("berth --version = %q, want %q", got, want)
	}
	var got version.Info
	if err := json.Unmarshal([]byte(run("version", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got != version.Get() {
		t.Errorf("berth version --json = %+v, want %+v", got, version.Get())
	}
}

// TestHealth: `berth health` exits zero on a 200 and names the status and body otherwise.
func TestHealth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			http.Error(w, "storage unreachable", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/healthz" {
			w.Write([]byte("ok\n"))
			return
		}
		http.NotFound(w, r)
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
