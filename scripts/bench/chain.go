package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// chainCost is the figure an operator feels: the Postfix content_filter
// chain of postfix-examples/content_filter (smtp-source → Postfix →
// filter hop → reinjection smtpd → smtp-sink) with proxy_archiver as the
// filter, its archive on the disk, against the same chain with haproxy in
// its place. Two Postfix instances, alternately, timed until each queue is
// empty.
func (b *bench) chainCost() (err error) {
	t := &benchTB{work: b.work}
	defer t.done()
	defer catch(&err)
	sink, err := b.sink()
	if err != nil {
		return err
	}
	type chain struct {
		name string
		pf   *postfixtest.Instance
	}
	var chains []chain
	for _, name := range []string{"haproxy", "proxy_archiver"} {
		reinject := freeAddr()
		var filter string
		if name == "haproxy" {
			filter, _, err = b.haproxy(reinject)
		} else {
			filter, _, err = b.proxyArchiver(reinject, filepath.Join(b.work, "archive-chain"))
		}
		if err != nil {
			return err
		}
		port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
		repl := map[string]string{"10025": port(filter), "10026": port(reinject), "10027": port(freeAddr())}
		mainCF, err := postfixtest.LoadSnippet("postfix-examples/content_filter/main.cf", repl)
		if err != nil {
			return err
		}
		masterCF, err := postfixtest.LoadSnippet("postfix-examples/content_filter/master.cf", repl)
		if err != nil {
			return err
		}
		chains = append(chains, chain{name, postfixtest.Start(t, postfixtest.Options{MainCF: mainCF, MasterCF: masterCF, RelayTo: sink})})
	}
	n := b.n(2000, 100)
	times := make([][]time.Duration, len(chains))
	for round := 0; round < b.rounds; round++ {
		for k := range chains {
			i := (k + round) % len(chains)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			t0 := time.Now()
			_, err := timed("/usr/sbin/smtp-source", "-d", "-s", "10", "-m", strconv.Itoa(n), "-l", "10240",
				"-f", "bench@example.org", "-t", "sink@example.net", chains[i].pf.SMTPAddr())
			if err == nil {
				err = chains[i].pf.WaitQueueEmpty(ctx)
			}
			cancel()
			if err != nil {
				return fmt.Errorf("%s chain: %w", chains[i].name, err)
			}
			d := time.Since(t0)
			log.Printf("chain round %d %s: %v", round, chains[i].name, d.Round(time.Millisecond))
			times[i] = append(times[i], d)
		}
		clearItems(filepath.Join(b.work, "archive-chain"))
	}
	what := fmt.Sprintf("content_filter chain, %d × 10 KiB, 10 sessions, smtp-source to smtp-sink", n)
	r0 := float64(n) / medianDur(times[0]).Seconds()
	r1 := float64(n) / medianDur(times[1]).Seconds()
	b.add(row{what: what, setup: "filter hop: haproxy mode tcp", figure: fmt.Sprintf("%.0f msg/s", r0)})
	b.add(row{what: what, setup: "filter hop: proxy_archiver, durable archive (disk)", figure: fmt.Sprintf("%.0f msg/s", r1),
		ratio: fmt.Sprintf("%.2f × haproxy chain", r1/r0), target: "≥ 0.95 × haproxy chain", verdict: verdict(r1/r0 >= 0.95)})
	return nil
}
