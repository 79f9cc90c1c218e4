// Command filer moves complete archive items into dated directories.
// See README.md, "filer" and filer --help.
package main

import (
	"os"

	"github.com/postfix-archive/mailarchive/filer"
)

func main() {
	os.Exit(filer.Main(os.Args[1:], os.Stdout, os.Stderr))
}
