package wrapper

import (
	"bytes"
	"os"
	"regexp"
	"testing"
)

// TestHelpExampleIsDocumented: the mailbox_command line in --help is the
// one the README and postfix-examples/mailbox_command/main.cf (which the
// end-to-end test loads) give, so a reader copying any of them gets the
// tested configuration.
func TestHelpExampleIsDocumented(t *testing.T) {
	var out bytes.Buffer
	if code := Main([]string{"--help"}, IO{Stdout: &out, Stderr: &out}); code != ExitOK {
		t.Fatalf("--help: exit %d", code)
	}
	line := regexp.MustCompile(`(?m)^\s*(mailbox_command = .*)$`)
	m := line.FindSubmatch(out.Bytes())
	if m == nil {
		t.Fatalf("--help has no mailbox_command example:\n%s", out.String())
	}
	example := string(m[1])
	for _, doc := range []string{"../README.md", "../postfix-examples/mailbox_command/main.cf"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, d := range line.FindAllSubmatch(b, -1) {
			found = found || string(d[1]) == example
		}
		if !found {
			t.Errorf("%s lacks the --help example %q", doc, example)
		}
	}
}
