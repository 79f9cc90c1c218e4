// Package audit records who read what from the archive: every search,
// show, export, proof, hold and disposal calls Record, which spools an
// entry that the next `mailarchive seal` appends to the signed audit trail
// under ROOT/audit/ (docs/archive-format.md, "The audit trail").
package audit

import (
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/postfix-archive/mailarchive/sealog"
)

// Actions recorded.
const (
	Search  = "search"
	Show    = "show"
	Export  = "export"
	Proof   = "proof"
	Hold    = "hold"
	Dispose = "dispose"
)

// Record spools one access: the action, the query (or argument) as typed
// and the IDs it returned. Callers treat an error as fatal: the command
// exits 2 and says so. show and proof record before they output anything;
// search and export record once their results are known (they stream), so
// there a failure to record is reported after the output.
func Record(root, action, query string, ids []string) error {
	return sealog.RecordAudit(root, User(), action, query, ids, time.Now())
}

// User names who runs the command: the login user, and the user sudo ran
// it for when run through sudo ("alice via root").
func User() string {
	name := "uid-" + strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if su := os.Getenv("SUDO_USER"); su != "" && su != name {
		name = su + " via " + name
	}
	return name
}
