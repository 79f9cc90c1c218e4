// Package buildinfo holds the version and commit every command reports with
// --version. The Makefile sets them at link time with -X; a binary built
// without the Makefile (go build, go install) falls back to what the Go
// toolchain recorded: the module version and the VCS revision.
package buildinfo

import (
	"fmt"
	"regexp"
	"runtime/debug"
	"sync"
)

// Set at link time:
//
//	-X github.com/postfix-archive/mailarchive/internal/buildinfo.Version=0.1.0
//	-X github.com/postfix-archive/mailarchive/internal/buildinfo.Commit=46e69e8
var (
	Version = DevVersion
	Commit  = ""
)

// DevVersion is the version of a build from an untagged tree.
const DevVersion = "0.1.0-dev"

var fill sync.Once

// pseudo matches the pseudo-versions Go 1.24+ stamps on a build from a
// checkout (v0.0.0-20261125005037-546c334c86fc+dirty): the commit says that
// better, so the version stays DevVersion.
var pseudo = regexp.MustCompile(`\d{14}-[0-9a-f]{12}|\+dirty`)

// String is the --version line of the named program, e.g.
// "proxy_archiver 0.1.0-dev (commit 46e69e8)".
func String(program string) string {
	v, c := Get()
	return fmt.Sprintf("%s %s (commit %s)", program, v, c)
}

// Get returns the version and the commit, with the toolchain's values
// filled in where the linker set none. Use it rather than the variables.
func Get() (version, commit string) {
	fill.Do(fromBuildInfo)
	return Version, Commit
}

// fromBuildInfo fills in what the linker did not set.
func fromBuildInfo() {
	bi, _ := debug.ReadBuildInfo()
	Version, Commit = resolve(Version, Commit, bi)
}

// resolve prefers the values set at link time, then the toolchain's: the
// module version when built with go install MODULE@VERSION, and vcs.revision
// (short, "-dirty" for a modified tree) when built inside a checkout.
func resolve(version, commit string, bi *debug.BuildInfo) (string, string) {
	if bi != nil {
		if v := bi.Main.Version; version == DevVersion && v != "" && v != "(devel)" && !pseudo.MatchString(v) {
			version = bi.Main.Version
		}
		if commit == "" {
			var rev, modified string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if len(rev) > 7 {
				rev = rev[:7]
			}
			if rev != "" && modified == "true" {
				rev += "-dirty"
			}
			commit = rev
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}
