package milter_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// scrape GETs url and parses the metrics.
func scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	m, err := tryScrape(url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tryScrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return readMetrics(resp.Body)
}

func healthz(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPostfixMetrics runs milter_archiver --metrics-listen behind a real
// Postfix, scrapes /metrics while mail flows (counters never go down), and
// then checks the counts against what was sent and what the archive holds:
// N messages accepted, archived_bytes_total == the sum of the .eml sizes,
// one commit observation each. /healthz turns 503 while the archive is
// broken and 200 again once it is repaired.
func TestPostfixMetrics(t *testing.T) {
	addr := postfixtest.FreeAddr(t)
	e := startE2E(t, "", "--metrics-listen", addr)
	base := "http://" + addr

	if code, body := healthz(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}

	// Scrape continuously while the messages go through.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var scrapes int
	var scrapeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := -1.0
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := tryScrape(base + "/metrics")
			if err != nil {
				scrapeErr = err
				return
			}
			scrapes++
			if v := m[outcome("accepted")]; v < last {
				scrapeErr = fmt.Errorf("messages_total{accepted} went down: %v after %v", v, last)
			} else {
				last = v
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	const n = 12
	var msgs []smtpMsg
	for i := range n {
		body := fmt.Sprintf("Subject: metrics %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 100*i))
		msgs = append(msgs, smtpMsg{From: "alice@example.org", To: []string{"bob@example.net", fmt.Sprintf("c%d@example.net", i)}, Data: []byte(body)})
	}
	// Two connections, to see connections_active go up and down.
	for _, part := range [][]smtpMsg{msgs[:n/2], msgs[n/2:]} {
		for _, r := range sendSMTP(t, e.inst.SMTPAddr(), "client.example", part...) {
			if r.Code != 250 {
				t.Fatalf("SMTP: %+v", r)
			}
		}
	}
	delivered := e.delivered(t, n)
	close(stop)
	wg.Wait()
	if scrapeErr != nil {
		t.Error(scrapeErr)
	}
	t.Logf("%d scrapes while %d messages went through", scrapes, n)

	var bytes int
	for _, msg := range delivered {
		bytes += len(e.check(t, msg).eml)
	}
	got := scrape(t, base+"/metrics")
	for k, want := range map[string]float64{
		outcome("accepted"):                                            n,
		outcome("tempfailed"):                                          0,
		outcome("not_archived"):                                        0,
		series("mailarchive_archived_bytes_total", ""):                 float64(bytes),
		series("mailarchive_archive_commit_seconds_count", ""):         n,
		series("mailarchive_archive_failures_total", `cause="other",`): 0,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if got[series("mailarchive_archive_commit_seconds_sum", "")] <= 0 {
		t.Errorf("commit_seconds_sum = %v", got[series("mailarchive_archive_commit_seconds_sum", "")])
	}
	// Postfix keeps milter connections only for the SMTP session's life.
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, base+"/metrics")[series("mailarchive_connections_active", "")] != 0 {
		if time.Now().After(deadline) {
			t.Errorf("connections_active did not return to 0")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A broken archive: /healthz says so, and a message is tempfailed.
	repair := breakArchive(t, e.dir)
	code, body := healthz(t, base+"/healthz")
	if code != 503 || !strings.Contains(body, "archive not writable") {
		t.Errorf("/healthz with tmp/ broken: %d %q", code, body)
	}
	res := sendSMTP(t, e.inst.SMTPAddr(), "client.example", msgs[0])
	if res[0].Code != 451 {
		t.Errorf("SMTP with the archive broken: %+v, want 451", res[0])
	}
	repair()
	if code, body := healthz(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz after repair: %d %q", code, body)
	}
	got = scrape(t, base+"/metrics")
	if got[outcome("tempfailed")] != 1 || got[series("mailarchive_archive_failures_total", `cause="other",`)] != 1 || got[outcome("accepted")] != n {
		t.Errorf("after the failure: tempfailed %v, failures{other} %v, accepted %v; want 1 1 %d",
			got[outcome("tempfailed")], got[series("mailarchive_archive_failures_total", `cause="other",`)], got[outcome("accepted")], n)
	}
	// The one line per message names everything an operator greps for.
	var lines int
	for _, line := range strings.Split(e.archiver.log.String(), "\n") {
		if !strings.Contains(line, `msg="message archived"`) {
			continue
		}
		lines++
		for _, key := range []string{" id=", " queue_id=", " client=127.0.0.1 ", " from=alice@example.org ", " rcpts_accepted=2 ", " size=", " outcome=accepted", " duration="} {
			if !strings.Contains(line, key) {
				t.Errorf("log line lacks %q: %s", key, line)
			}
		}
	}
	if lines != n {
		t.Errorf("%d \"message archived\" lines, want %d", lines, n)
	}
}
