package milter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// Listen opens a listener for a milter address written the way Postfix
// writes it in smtpd_milters: "inet:HOST:PORT" ("inet:[::1]:PORT" for
// IPv6), or "unix:/path/to/socket". Sendmail's "inet:PORT@HOST" is accepted
// too. A unix socket gets mode (e.g. 0660), and a stale socket left by a
// crashed run is replaced; a live one is an error.
func Listen(addr string, mode os.FileMode) (net.Listener, error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, fmt.Errorf("milter: listen address %q: want inet:HOST:PORT or unix:PATH", addr)
	}
	switch kind {
	case "inet", "inet6", "tcp":
		if port, host, ok := strings.Cut(rest, "@"); ok {
			rest = net.JoinHostPort(host, port)
		}
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return nil, fmt.Errorf("milter: listen address %q: %w", addr, err)
		}
		network := "tcp"
		if kind == "inet6" {
			network = "tcp6"
		}
		ln, err := net.Listen(network, rest)
		if err != nil {
			return nil, fmt.Errorf("milter: %w", err)
		}
		return ln, nil
	case "unix", "local":
		return listenUnix(rest, mode)
	}
	return nil, fmt.Errorf("milter: listen address %q: unknown type %q (want inet or unix)", addr, kind)
}

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("milter: listen address unix: empty path")
	}
	ln, err := net.Listen("unix", path)
	if errors.Is(err, syscall.EADDRINUSE) {
		// Replace the socket only if nobody answers on it.
		if fi, serr := os.Lstat(path); serr == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, derr := net.Dial("unix", path); derr == nil {
				c.Close()
				return nil, fmt.Errorf("milter: %s: another milter is listening there", path)
			}
			if rerr := os.Remove(path); rerr != nil {
				return nil, fmt.Errorf("milter: remove stale socket: %w", rerr)
			}
			ln, err = net.Listen("unix", path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("milter: chmod socket: %w", err)
	}
	return ln, nil
}
