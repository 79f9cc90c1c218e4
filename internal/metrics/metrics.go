// Package metrics is what the archiving daemons (proxy_archiver,
// milter_archiver) tell Prometheus, and their health check. Each daemon
// makes one *Metrics with New and calls its methods at the points named in
// docs/operations.md; a nil *Metrics is a valid receiver that does nothing,
// so code paths and tests without metrics need no checks.
//
// Every series carries a constant label source="proxy" or "milter", the
// envelope's source, so the two hook points can be scraped into one
// Prometheus and told apart.
package metrics

import (
	"errors"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
)

// Namespace prefixes every metric name.
const Namespace = "mailarchive"

// Outcomes of a message, the values of messages_total's outcome label.
// They say what the client (Postfix) was told and whether the archive has
// the message.
const (
	// OutcomeAccepted: the message was archived (committed) and accepted.
	OutcomeAccepted = "accepted"
	// OutcomeRejected: the downstream server refused it with 5xx (proxy).
	OutcomeRejected = "rejected"
	// OutcomeTempfailed: the client was told to retry (4xx), because the
	// archive failed (--on-archive-error=tempfail) or the downstream server
	// answered 4xx.
	OutcomeTempfailed = "tempfailed"
	// OutcomeUnknown: the downstream server never answered the end of data;
	// the copy is archived with outcome unknown (proxy).
	OutcomeUnknown = "unknown"
	// OutcomeNotArchived: the message went through WITHOUT an archive copy
	// (--on-archive-error=pass/accept). Alert on any increase.
	OutcomeNotArchived = "not_archived"
	// OutcomeAborted: the transaction ended before the end of the message
	// (RSET, QUIT, a lost connection, shutdown) after data had started;
	// nothing was archived and nothing was accepted.
	OutcomeAborted = "aborted"
)

// Outcomes lists every outcome label value; each is exported from the start
// (as 0) so that rate() and alerts work before the first event.
var Outcomes = []string{OutcomeAccepted, OutcomeRejected, OutcomeTempfailed, OutcomeUnknown, OutcomeNotArchived, OutcomeAborted}

// Causes lists every value Cause returns.
var Causes = []string{"enospc", "edquot", "eacces", "erofs", "eio", "emfile", "other"}

// CommitBuckets suit fsync latencies: from 0.5 ms (a fast SSD with a
// write cache) to 2 s (a saturated disk or a stalled network filesystem).
var CommitBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2}

// Metrics holds one daemon's metrics in a private registry (nothing is
// registered globally, so tests can make as many as they like).
type Metrics struct {
	reg        *prometheus.Registry
	messages   *prometheus.CounterVec
	bytes      prometheus.Counter
	failures   *prometheus.CounterVec
	commit     prometheus.Histogram
	active     prometheus.Gauge
	refused    prometheus.Counter
	downstream prometheus.Counter
}

// New returns the metrics of one daemon; source is "proxy" or "milter" and
// becomes the constant label source on every series.
func New(source string) *Metrics {
	cl := prometheus.Labels{"source": source}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "messages_total", ConstLabels: cl,
			Help: "Messages that reached the end of their transaction, by outcome (accepted: archived and accepted; not_archived: passed WITHOUT an archive copy).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "archived_bytes_total", ConstLabels: cl,
			Help: "Bytes of message content (.eml) in committed archive items.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "archive_failures_total", ConstLabels: cl,
			Help: "Messages that could not be archived (create, write, fsync or commit failed), by the error's cause.",
		}, []string{"cause"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "archive_commit_seconds", ConstLabels: cl,
			Help:    "Time to make a message durable: fsync of the message and tmp/, the envelope written and fsynced, the renames and the root fsync.",
			Buckets: CommitBuckets,
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "connections_active", ConstLabels: cl,
			Help: "Connections from Postfix being served now.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_refused_total", ConstLabels: cl,
			Help: "Connections turned away because the connection limit was reached (421 4.7.0).",
		}),
		downstream: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "downstream_connect_failures_total", ConstLabels: cl,
			Help: "Connections to the downstream (reinjection) server that failed; the client was told to retry (proxy only).",
		}),
	}
	version, commit := buildinfo.Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"source": source, "version": version, "commit": commit},
	})
	info.Set(1)
	m.reg.MustRegister(m.messages, m.bytes, m.failures, m.commit, m.active, m.refused, m.downstream, info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range Outcomes {
		m.messages.WithLabelValues(o)
	}
	for _, c := range Causes {
		m.failures.WithLabelValues(c)
	}
	return m
}

// Registry is the private registry (for tests and for extra collectors).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return prometheus.NewRegistry()
	}
	return m.reg
}

// MessageDone counts a message that reached the end of its transaction
// with one of the Outcome values. size is added to archived_bytes_total
// when the message was archived (accepted, and rejected/tempfailed/unknown
// items the proxy keeps); pass 0 when nothing was committed.
func (m *Metrics) MessageDone(outcome string, size int64) {
	if m == nil {
		return
	}
	m.messages.WithLabelValues(outcome).Inc()
	if size > 0 {
		m.bytes.Add(float64(size))
	}
}

// ArchiveFailed counts an archive error (Create, Write, Sync or Commit) by
// Cause(err). Call it once per message, with the first error.
func (m *Metrics) ArchiveFailed(err error) {
	if m == nil || err == nil {
		return
	}
	m.failures.WithLabelValues(Cause(err)).Inc()
}

// CommitObserved records how long making one message durable took.
func (m *Metrics) CommitObserved(d time.Duration) {
	if m == nil {
		return
	}
	m.commit.Observe(d.Seconds())
}

// ConnOpened counts a connection from Postfix that is now being served.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.active.Inc()
	}
}

// ConnClosed counts the end of a connection ConnOpened counted.
func (m *Metrics) ConnClosed() {
	if m != nil {
		m.active.Dec()
	}
}

// ConnRefused counts a connection turned away over the connection limit.
func (m *Metrics) ConnRefused() {
	if m != nil {
		m.refused.Inc()
	}
}

// DownstreamFailed counts a failed connection to the downstream server.
func (m *Metrics) DownstreamFailed() {
	if m != nil {
		m.downstream.Inc()
	}
}

// Cause names what an archive error means for the operator, from the
// errno it wraps: enospc (disk full), edquot (quota), eacces (permissions:
// EACCES or EPERM), erofs (read-only filesystem), eio (I/O error: the disk
// or the network filesystem), emfile (out of file descriptors: EMFILE or
// ENFILE) or other.
func Cause(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "other"
	}
	switch errno {
	case syscall.ENOSPC:
		return "enospc"
	case syscall.EDQUOT:
		return "edquot"
	case syscall.EACCES, syscall.EPERM:
		return "eacces"
	case syscall.EROFS:
		return "erofs"
	case syscall.EIO:
		return "eio"
	case syscall.EMFILE, syscall.ENFILE:
		return "emfile"
	}
	return "other"
}
