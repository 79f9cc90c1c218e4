//go:build !linux || !(amd64 || arm64)

package filer

// sysRenameat2 is 0 where this package does not know renameat2's number:
// renameNoReplace then checks and renames.
const sysRenameat2 = 0
