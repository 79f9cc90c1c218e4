package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics (the private registry, in Prometheus' text or
// OpenMetrics format) and /healthz: 200 "ok" while health returns nil, 503
// with the error's text otherwise. A nil health is always healthy.
func (m *Metrics) Handler(health func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{
		// A failing collector shows as an error in the scrape, not a 500
		// that hides every other series.
		ErrorHandling: promhttp.ContinueOnError,
		// OpenMetrics when the scraper asks for it (Accept:
		// application/openmetrics-text), Prometheus' text format otherwise.
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr (host:port) and serves Handler(health) there in
// the background. The listen error comes back at once; stop the server
// with its Shutdown or Close. The address it listens on is srv.Addr.
func (m *Metrics) Serve(addr string, health func() error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Addr:              ln.Addr().String(),
		Handler:           m.Handler(health),
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	go srv.Serve(ln) // returns ErrServerClosed after Shutdown
	return srv, nil
}

// All combines health checks: healthy when every check is; otherwise the
// errors of all failing checks, joined (each on its own line).
func All(checks ...func() error) func() error {
	return func() error {
		var errs []error
		for _, c := range checks {
			if c == nil {
				continue
			}
			if err := c(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

// SMTPReady checks that the SMTP server at addr greets with 220, then says
// QUIT, so that Postfix logs a clean "disconnect ... quit=1" rather than a
// lost connection.
func SMTPReady(addr string, timeout time.Duration) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return fmt.Errorf("downstream %s unreachable: %w", addr, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return fmt.Errorf("downstream %s: no greeting: %w", addr, err)
			}
			if len(line) < 4 || !strings.HasPrefix(line, "220") {
				return fmt.Errorf("downstream %s not ready: %s", addr, strings.TrimSpace(line))
			}
			if line[3] == ' ' {
				break
			}
		}
		c.Write([]byte("QUIT\r\n"))
		br.ReadString('\n') // 221; its absence is no failure
		return nil
	}
}
