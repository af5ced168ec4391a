package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuild(t *testing.T) {
	const rev = "1a2b3c4d5e6f77889900aabbccddeeff00112233"
	vcs := func(modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/berth/berth", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, c := range []struct {
		name            string
		release, commit string
		bi              *debug.BuildInfo
		want            Info
		line            string
	}{
		{name: "ldflags win over build info", release: "v0.3.0", commit: "ffffffffffffffffffffffffffffffffffffffff", bi: vcs("true"),
			want: Info{Release: "v0.3.0", Commit: "ffffffffffffffffffffffffffffffffffffffff", GoVersion: "go1.26.8"},
			line: "berth v0.3.0 (commit fffffff, go1.26.8)"},
		{name: "checkout build", bi: vcs("false"),
			want: Info{Release: "(devel)", Commit: rev, GoVersion: "go1.26.8"},
			line: "berth (devel) (commit 1a2b3c4, go1.26.8)"},
		{name: "dirty checkout", bi: vcs("true"),
			want: Info{Release: "(devel)", Commit: rev, GoVersion: "go1.26.8", Modified: true},
			line: "berth (devel) (commit 1a2b3c4-dirty, go1.26.8)"},
		{name: "go install module@version", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.4.1"}},
			want: Info{Release: "v0.4.1", Commit: "unknown", GoVersion: "go1.26.8"},
			line: "berth v0.4.1 (commit unknown, go1.26.8)"},
		{name: "no build info", want: Info{Release: "(devel)", Commit: "unknown", GoVersion: runtime.Version()},
			line: "berth (devel) (commit unknown, " + runtime.Version() + ")"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := fromBuild(c.release, c.commit, c.bi)
			if got != c.want {
				t.Errorf("fromBuild = %+v, want %+v", got, c.want)
			}
			if got.String() != c.line {
				t.Errorf("String = %q, want %q", got.String(), c.line)
			}
		})
	}
}

// The test binary has build info of its own: Get reads it and never returns empty fields.
func TestGet(t *testing.T) {
	got := Get()
	if got.Release == "" || got.Commit == "" || got.GoVersion != runtime.Version() {
		t.Errorf("Get = %+v", got)
	}
}
