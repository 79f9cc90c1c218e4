// Package daemontest holds what the daemons' command tests share: building
// the binary, reading its exit status, and checking its flag handling.
package daemontest

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build builds the command in the current directory (a cmd/NAME test's)
// into a temporary directory and returns the binary's path.
func Build(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// ExitCode is the exit status behind a Run or Wait error (-1: not an exit).
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// FlagCase is one command line and what it must give: the exit status and
// a piece of the combined output.
type FlagCase struct {
	Args []string
	Code int
	Out  string
}

// CheckFlags runs bin with each case's arguments.
func CheckFlags(t *testing.T, bin string, cases []FlagCase) {
	t.Helper()
	for _, tc := range cases {
		out, err := exec.Command(bin, tc.Args...).CombinedOutput()
		if c := ExitCode(err); c != tc.Code || !strings.Contains(string(out), tc.Out) {
			t.Errorf("%v: exit %d, output %q; want exit %d with %q", tc.Args, c, out, tc.Code, tc.Out)
		}
	}
}
