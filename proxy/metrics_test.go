package proxy_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/proxy"
)

// scrape fetches /metrics and returns the value of one series.
func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("series %s not in /metrics:\n%s", series, b)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestMetrics sends accepted, refused and refused-at-DATA traffic and a
// connection beyond the limit, and checks the scraped counts against it.
func TestMetrics(t *testing.T) {
	m := metrics.New("proxy")
	f := setup(t, func(cfg *proxy.Config, s *scriptServer) {
		cfg.Metrics = m
		cfg.MaxConns = 1
	})
	hs, err := m.Serve("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	url := "http://" + hs.Addr + "/metrics"

	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\n")
	c.expect(250)
	bodies := []string{"one\r\n", "second message\r\n", "third, the longest of them\r\n"}
	var size int
	for _, b := range bodies {
		c.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
		c.expect(250)
		c.expect(250)
		c.expect(354)
		c.send(b + ".\r\n")
		c.expect(250)
		size += len(b)
	}
	if got := scrape(t, url, `mailarchive_connections_active{source="proxy"}`); got != 1 {
		t.Errorf("connections_active %v while one is open", got)
	}
	// A second connection is over the limit.
	f.dial().expect(421)

	lbl := `{outcome="accepted",source="proxy"}`
	if got := scrape(t, url, "mailarchive_messages_total"+lbl); got != float64(len(bodies)) {
		t.Errorf("messages_total accepted %v, want %d", got, len(bodies))
	}
	if got := scrape(t, url, `mailarchive_archived_bytes_total{source="proxy"}`); got != float64(size) {
		t.Errorf("archived_bytes_total %v, want %d", got, size)
	}
	if got := scrape(t, url, `mailarchive_archive_commit_seconds_count{source="proxy"}`); got != float64(len(bodies)) {
		t.Errorf("commit observations %v, want %d", got, len(bodies))
	}
	if got := scrape(t, url, `mailarchive_connections_refused_total{source="proxy"}`); got != 1 {
		t.Errorf("connections_refused_total %v, want 1", got)
	}
	if n := len(f.items()); n != len(bodies) {
		t.Errorf("%d items", n)
	}
}

// TestMetricsFailures: an archive failure and a dead downstream are counted.
func TestMetricsFailures(t *testing.T) {
	m := metrics.New("proxy")
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) {
		cfg.Metrics = m
		cfg.Store = brokenStore(t)
	})
	hs, err := m.Serve("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	url := "http://" + hs.Addr + "/metrics"
	c := f.dial()
	c.expect(220)
	c.beginData()
	c.send("x\r\n.\r\n")
	c.expect(451)
	if got := scrape(t, url, `mailarchive_messages_total{outcome="tempfailed",source="proxy"}`); got != 1 {
		t.Errorf("tempfailed %v, want 1", got)
	}
	if got := scrape(t, url, `mailarchive_messages_total{outcome="accepted",source="proxy"}`); got != 0 {
		t.Errorf("accepted %v, want 0", got)
	}
	f.srv.ln.Close() // the downstream is gone
	f.dial().expect(421)
	if got := scrape(t, url, `mailarchive_downstream_connect_failures_total{source="proxy"}`); got != 1 {
		t.Errorf("downstream failures %v, want 1", got)
	}
}
