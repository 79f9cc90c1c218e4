// Command archiver is a drop-in for Postfix's mailbox_command: it archives
// the message, then runs the real delivery command on the archived bytes.
// See README.md, "archiver" and archiver --help.
package main

import (
	"os"

	"github.com/postfix-archive/mailarchive/wrapper"
)

func main() {
	os.Exit(wrapper.Main(os.Args[1:], wrapper.IO{
		Stdin:   os.Stdin,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Environ: os.Environ(),

		ExecInPlace: true,
	}))
}
