package milter_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/milter"
)

// parseMetrics reads Prometheus' text format into series -> value, the
// series written as exposed: name{label="v",...}.
func parseMetrics(t testing.TB, r io.Reader) map[string]float64 {
	t.Helper()
	m, err := readMetrics(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// scrapeHandler scrapes m through its handler, as Prometheus would.
func scrapeHandler(t testing.TB, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return parseMetrics(t, rec.Body)
}

func series(name, labels string) string {
	return name + `{` + labels + `source="milter"}`
}

func outcome(o string) string {
	return series("mailarchive_messages_total", `outcome="`+o+`",`)
}

// TestMetrics checks each counter at the place it is counted: a message
// archived, one aborted after data started, one whose archive failed under
// each policy, and the connection gauge.
func TestMetrics(t *testing.T) {
	m := metrics.New("milter")
	ts := startServer(t, milter.Config{Metrics: m})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	body := "hello\r\n"
	sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "one"}}, body)
	items := ts.items(t)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	// Aborted after the body started: counted as aborted; a second abort
	// (Postfix may send two) and an abort with no data are not counted.
	cont(t)(s.Mail("a@example.org", nil))
	cont(t)(s.Rcpt("b@example.net", nil))
	cont(t)(s.HeaderField("Subject", "aborted"))
	cont(t)(s.HeaderEnd())
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	cont(t)(s.Mail("a@example.org", nil))
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	ts.waitTmpEmpty(t)

	got := scrapeHandler(t, m)
	want := map[string]float64{
		outcome("accepted"):                                            1,
		outcome("aborted"):                                             1,
		outcome("tempfailed"):                                          0,
		series("mailarchive_archived_bytes_total", ""):                 float64(len(items[0].eml)),
		series("mailarchive_archive_commit_seconds_count", ""):         1,
		series("mailarchive_connections_active", ""):                   1,
		series("mailarchive_archive_failures_total", `cause="other",`): 0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}

	// The archive breaks: tempfail counts a failure and a tempfailed message.
	repair := breakArchive(t, ts.dir)
	_, act := sendMessage(t, s, "Q2", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, body)
	if act.Code != gomilter.ActReplyCode {
		t.Fatalf("reply %+v, want 451", act)
	}
	repair()
	got = scrapeHandler(t, m)
	// tmp/ is a regular file: ENOTDIR, not one of the named causes.
	for k, v := range map[string]float64{
		outcome("tempfailed"): 1,
		outcome("accepted"):   1,
		series("mailarchive_archive_failures_total", `cause="other",`): 1,
		series("mailarchive_archived_bytes_total", ""):                 float64(len(items[0].eml)),
	} {
		if got[k] != v {
			t.Errorf("after a failure: %s = %v, want %v", k, got[k], v)
		}
	}

	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for scrapeHandler(t, m)[series("mailarchive_connections_active", "")] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connections_active did not drop to 0 after the MTA closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMetricsNotArchived(t *testing.T) {
	m := metrics.New("milter")
	ts := startServer(t, milter.Config{Metrics: m, OnArchiveError: archive.PolicyPass})
	breakArchive(t, ts.dir)
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n")
	got := scrapeHandler(t, m)
	if got[outcome("not_archived")] != 1 || got[outcome("accepted")] != 0 {
		t.Errorf("not_archived %v accepted %v, want 1 0", got[outcome("not_archived")], got[outcome("accepted")])
	}
}
