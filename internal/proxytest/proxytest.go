// Package proxytest runs proxy_archiver in process for end-to-end tests
// that need it on a fixed address (a Postfix content_filter points there).
package proxytest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/proxy"
)

// Start runs a proxy on addr in front of server, archiving into store. The
// function returned stops it (waiting for its connections); t's cleanup
// stops it too. The address may still be in use a moment after an earlier
// proxy stopped: Start retries for five seconds.
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
	srv, err := proxy.New(proxy.Config{Server: server, Store: store, Timeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}
