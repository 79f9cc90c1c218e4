package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/cli"
)

func TestDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	if got := run(nil, nil, &out, &errb); got != cli.ExitError || !strings.Contains(errb.String(), "Usage: mailarchive") {
		t.Errorf("no args: %d %q", got, errb.String())
	}
	out.Reset()
	if got := run([]string{"--help"}, nil, &out, &errb); got != cli.ExitOK || !strings.Contains(out.String(), "Commands:") {
		t.Errorf("--help: %d %q", got, out.String())
	}
	for _, c := range commands {
		if !strings.Contains(out.String(), "  "+c.Name+" ") {
			t.Errorf("--help does not list %s", c.Name)
		}
	}
	errb.Reset()
	if got := run([]string{"frobnicate"}, nil, &out, &errb); got != cli.ExitError || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown: %d %q", got, errb.String())
	}
	out.Reset()
	if got := run([]string{"--version"}, nil, &out, &errb); got != cli.ExitOK || !strings.HasPrefix(out.String(), "mailarchive") {
		t.Errorf("--version: %d %q", got, out.String())
	}
}
