package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/logging"
)

func parse(t *testing.T, args ...string) *logging.Options {
	t.Helper()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	o := logging.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDefaults(t *testing.T) {
	var buf bytes.Buffer
	log, err := parse(t).Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("message archived", "id", "X", "size", 3)
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `level=INFO msg="message archived" id=X size=3`) {
		t.Errorf("text log: %q", got)
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	log, err := parse(t, "--log-format=json", "--log-level", "debug").Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("message archived", "queue_id", "4DC0A00004", "rcpts", 2, "duration", 1500*time.Microsecond)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	if m["level"] != "DEBUG" || m["msg"] != "message archived" || m["queue_id"] != "4DC0A00004" || m["rcpts"] != 2.0 || m["duration"] != "1.5ms" {
		t.Errorf("json log: %v", m)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--log-format=xml"}, {"--log-level=loud"}} {
		if _, err := parse(t, args...).Logger(&bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := parse(t, "--log-level=WARN").Logger(&bytes.Buffer{}); err != nil {
		t.Errorf("WARN: %v", err)
	}
}

func TestNoTime(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		o := parse(t, "--log-format", format)
		o.NoTime = true
		log, err := o.Logger(&buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", "duration", time.Second)
		if got := buf.String(); strings.Contains(got, "time") || !strings.Contains(got, "1s") {
			t.Errorf("%s: %q, want no time and the duration", format, got)
		}
	}
}
