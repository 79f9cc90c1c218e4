// Package buildinfo holds the version and commit every command reports with
// --version. The Makefile sets them at link time with -X.
package buildinfo

import "fmt"

var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the --version line of the named program.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s)", program, Version, Commit)
}
