package milter_test

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestMeasureThroughput compares Postfix accepting mail with and without
// the archiver, using Postfix's own load generator. It only runs when asked:
//
//	MILTER_MEASURE=1 go test -run TestMeasureThroughput -v ./milter/
func TestMeasureThroughput(t *testing.T) {
	if os.Getenv("MILTER_MEASURE") == "" {
		t.Skip("set MILTER_MEASURE=1 to measure")
	}
	source := "/usr/sbin/smtp-source"
	if _, err := os.Stat(source); err != nil {
		t.Skip(err)
	}
	e := startE2E(t, "")
	const sessions, messages, size = 4, 1000, 10000
	run := func(label string) {
		start := time.Now()
		out, err := exec.Command(source, "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages), "-l", strconv.Itoa(size),
			"-f", "load@example.org", "-t", "sink@example.net", e.inst.SMTPAddr()).CombinedOutput()
		if err != nil {
			t.Fatalf("smtp-source: %v\n%s", err, out)
		}
		d := time.Since(start)
		t.Logf("%s: %d messages of %d bytes over %d sessions in %v: %.0f msg/s", label, messages, size, sessions, d, messages/d.Seconds())
		e.delivered(t, messages)
	}
	// Each archived message costs four fsyncs (the .eml, the .json, tmp/
	// and the root), all before Postfix may answer 250.
	run("with milter_archiver")
	for _, kv := range []string{"smtpd_milters =", "non_smtpd_milters ="} {
		if _, err := e.inst.Postconf("-e", kv); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.inst.Reload(); err != nil {
		t.Fatal(err)
	}
	run("without milter")
}
