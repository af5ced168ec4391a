package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	info := func(main string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/berth/berth", Version: main}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	const rev = "0123456789abcdef0123456789abcdef01234567"
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name            string
		release, commit string
		read            func() (*debug.BuildInfo, bool)
		want            Info
		line            string
	}{
		{"stamped wins over build info", "v1.2.3", rev, info("v0.0.0-x", "vcs.revision", rev, "vcs.time", "2026-12-04T20:00:00Z"),
			Info{Release: "v1.2.3", Commit: rev, CommitTime: "2026-12-04T20:00:00Z", GoVersion: "go1.99.1", Platform: platform},
			"berth v1.2.3 (commit 0123456789ab, go1.99.1, " + platform + ")"},
		{"build info alone, dirty tree", "", "", info("v0.0.0-20261204-0123456789ab+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			Info{Release: "v0.0.0-20261204-0123456789ab+dirty", Commit: rev, Modified: true, GoVersion: "go1.99.1", Platform: platform},
			"berth v0.0.0-20261204-0123456789ab+dirty (commit 0123456789ab-dirty, go1.99.1, " + platform + ")"},
		// The toolchain's time and dirty flag describe its revision, not a different stamped one.
		{"stamped commit differs from the toolchain's", "v2", "feedface", info("", "vcs.revision", rev, "vcs.modified", "true", "vcs.time", "t"),
			Info{Release: "v2", Commit: "feedface", GoVersion: "go1.99.1", Platform: platform},
			"berth v2 (commit feedface, go1.99.1, " + platform + ")"},
		{"nothing known", "", "", none,
			Info{Release: "(devel)", Commit: "unknown", GoVersion: runtime.Version(), Platform: platform},
			"berth (devel) (commit unknown, " + runtime.Version() + ", " + platform + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(tc.release, tc.commit, tc.read)
			if got != tc.want {
				t.Errorf("get = %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.line {
				t.Errorf("String = %q, want %q", got.String(), tc.line)
			}
		})
	}
}
