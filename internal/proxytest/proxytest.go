// Package proxytest runs proxy_archiver in process for end-to-end tests
// that put it in front of a real Postfix.
package proxytest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/proxy"
)

// Proxy is a proxy_archiver a test runs. Its log lines go to Logs, which
// the test's output shows if the test fails.
type Proxy struct {
	*proxy.Server
	Logs *archivetest.SyncBuffer
	// Stop shuts the proxy down and waits for its connections; t's
	// cleanup calls it too.
	Stop func()
}

// Serve runs a proxy on ln in front of server, archiving into store, with
// the given --timeout.
func Serve(t testing.TB, ln net.Listener, server string, store archive.Archive, timeout time.Duration) *Proxy {
	t.Helper()
	p := &Proxy{Logs: &archivetest.SyncBuffer{}}
	srv, err := proxy.New(proxy.Config{Server: server, Store: store, Timeout: timeout,
		Logger: slog.New(slog.NewTextHandler(p.Logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p.Server = srv
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	var once sync.Once
	p.Stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
		})
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.Logs.String())
		}
	})
	return p
}

// Start runs a proxy on addr in front of server, archiving into store, and
// returns its Stop. The address may still be in use a moment after an
// earlier proxy stopped: Start retries for five seconds.
func Start(t testing.TB, addr, server string, store archive.Archive) (stop func()) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, ln, server, store, time.Minute).Stop
}
