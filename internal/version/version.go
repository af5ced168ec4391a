// Package version says which berth this is: the release and commit stamped at build time with
// -ldflags, or else what the Go toolchain recorded in the binary (the module version when built with
// `go install module@version`, the VCS revision when built from a checkout).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Release and Commit are set at build time (scripts/image.sh does):
//
//	go build -ldflags "-X github.com/berth/berth/internal/version.Release=v0.3.0 \
//	  -X github.com/berth/berth/internal/version.Commit=$(git rev-parse HEAD)" ./cmd/berth
//
// Empty means "read the build info".
var (
	Release string
	Commit  string
)

// Info is one build of berth.
type Info struct {
	Release   string `json:"release"`   // a tag such as v0.3.0, a git describe, or "(devel)"
	Commit    string `json:"commit"`    // the full VCS revision, or "unknown"
	GoVersion string `json:"goVersion"` // the toolchain that built the binary, e.g. go1.26.8
	Modified  bool   `json:"modified"`  // built from a tree with uncommitted changes (build info only)
}

// Get returns the running binary's Info: the -ldflags values where set, the build info otherwise.
func Get() Info {
	bi, _ := debug.ReadBuildInfo() // absent only in binaries built without module support
	return fromBuild(Release, Commit, bi)
}

// fromBuild is Get with its inputs spelled out, for the tests.
func fromBuild(release, commit string, bi *debug.BuildInfo) Info {
	info := Info{Release: release, Commit: commit, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Release == "" && bi.Main.Version != "" {
			info.Release = bi.Main.Version // "(devel)" when built from a checkout
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.modified":
				// Only trusted when the commit came from the build info too: an -ldflags commit
				// says nothing about the tree it was built from.
				info.Modified = s.Value == "true" && commit == ""
			}
		}
	}
	if info.Release == "" {
		info.Release = "(devel)"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// Short is the commit abbreviated to 7 characters as git does, with "-dirty" when Modified.
func (i Info) Short() string {
	c := i.Commit
	if len(c) > 7 && c != "unknown" {
		c = c[:7]
	}
	if i.Modified {
		c += "-dirty"
	}
	return c
}

// Detail is the release, commit and Go version in one phrase: "v0.3.0 (commit 1a2b3c4, go1.26.8)",
// as the console's footer shows it after "berth".
func (i Info) Detail() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Release, i.Short(), i.GoVersion)
}

// String is the one line `berth version` prints: "berth v0.3.0 (commit 1a2b3c4, go1.26.8)".
func (i Info) String() string { return "berth " + i.Detail() }
