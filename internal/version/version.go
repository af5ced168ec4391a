// Package version says which berth this is: the release and commit stamped in at build time
// (scripts/image.sh does), or else what the Go toolchain recorded in the binary's build info
// (a `go build` inside a git checkout records the commit; `go install module@vX` the version).
// It imports only the standard library so that any package may ask.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Release and Commit are set at build time with
//
//	-ldflags "-X github.com/berth/berth/internal/version.Release=v1.2.3
//	          -X github.com/berth/berth/internal/version.Commit=<full hash>"
//
// Empty means "not stamped": Get falls back to the build info.
var (
	Release string
	Commit  string
)

// Info is one build's identity.
type Info struct {
	// Release is a version such as v1.2.3 or a `git describe` such as v1.2.3-4-gabc1234-dirty;
	// "(devel)" when nothing says more.
	Release string `json:"release"`
	// Commit is the full VCS revision, "unknown" when neither the build nor the toolchain
	// recorded one (a build outside a checkout, or with -buildvcs=false).
	Commit string `json:"commit"`
	// CommitTime is the commit's time as the toolchain recorded it (RFC 3339), if it did.
	CommitTime string `json:"commit_time,omitempty"`
	// Modified is true when the toolchain recorded uncommitted changes in the work tree.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the Go release that built the binary.
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH of the binary.
	Platform string `json:"platform"`
}

// Get returns this binary's identity: stamped values first, the build info for what was not
// stamped.
func Get() Info {
	return get(Release, Commit, readBuildInfo)
}

var readBuildInfo = debug.ReadBuildInfo

func get(release, commit string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Release: release, Commit: commit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := read(); ok {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Release == "" && bi.Main.Version != "" {
			info.Release = bi.Main.Version
		}
		var revision string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				info.CommitTime = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
		// The toolchain's revision describes this binary only when the build stamped nothing
		// else: a stamped commit is not second-guessed.
		if info.Commit == "" {
			info.Commit = revision
		} else if revision != "" && revision != info.Commit {
			info.CommitTime, info.Modified = "", false
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

// ShortCommit is the commit's first 12 characters (what `git log --oneline` would need to
// be unambiguous in a large repository), with "-dirty" when the tree was modified.
func (i Info) ShortCommit() string {
	c := i.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if i.Modified {
		c += "-dirty"
	}
	return c
}

// String is the one line `berth version` and `berth --version` print:
// "berth v1.2.3 (commit abc123def456, go1.26.8, linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("berth %s (commit %s, %s, %s)", i.Release, i.ShortCommit(), i.GoVersion, i.Platform)
}
