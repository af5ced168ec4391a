package main

import (
	"bytes"
	"encoding/json"
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
