package cli

import (
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// TestCheckOwnerNamesUser: as root on another user's archive, a command
// refuses and says which user to run as, by name (by number only when the
// owner has no name).
func TestCheckOwnerNamesUser(t *testing.T) {
	if os.Geteuid() != 0 {
		postfixtest.SkipOrFatal(t, "the refusal is for root only: needs root")
	}
	owner, err := user.Lookup("daemon") // on every Debian system
	if err != nil {
		postfixtest.SkipOrFatal(t, "no user daemon")
	}
	uid, _ := strconv.Atoi(owner.Uid)
	for _, tc := range []struct {
		uid  int
		want string
	}{
		{uid, "belongs to daemon: run filer as that user (runuser -u daemon -- filer ...)"},
		{4242424, "belongs to uid 4242424: run filer as that user (runuser -u 4242424 -- filer ...)"},
	} {
		dir := t.TempDir()
		if err := os.Chown(dir, tc.uid, -1); err != nil {
			t.Fatal(err)
		}
		err := CheckOwner("filer", dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("uid %d: %v, want %q", tc.uid, err, tc.want)
		}
	}
	if err := CheckOwner("filer", t.TempDir()); err != nil {
		t.Errorf("root's own archive: %v", err)
	}
}
