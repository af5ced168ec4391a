package main

import (
	"encoding/json"
	"testing"

	"github.com/berth/berth/internal/version"
)

// `berth version`, `berth --version` and `berth version --json` say the same thing.
func TestVersion(t *testing.T) {
	want := version.Get()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := runBerth(t, "", args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if out != want.String()+"\n" {
			t.Errorf("%v printed %q, want %q", args, out, want.String()+"\n")
		}
	}
	out, _, err := runBerth(t, "", "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got version.Info
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version --json printed %q: %v", out, err)
	}
	if got != want {
		t.Errorf("version --json = %+v, want %+v", got, want)
	}
}
