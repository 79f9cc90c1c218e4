package milter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Socket says how a unix socket is made.
type Socket struct {
	Mode os.FileMode // e.g. 0660
	// GID, if not negative, is the socket's group: one that user postfix
	// is in, so that smtpd and cleanup may connect with Mode 0660.
	GID int
}

// LookupGroup returns the ID of a group given by name or number.
func LookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("milter: socket group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// Listen opens a listener for a milter address written the way Postfix
// writes it in smtpd_milters: "inet:HOST:PORT" ("inet:[::1]:PORT" for
// IPv6), or "unix:/path/to/socket". Sendmail's "inet:PORT@HOST" is accepted
// too. A unix socket is made as sock says; its directory is created when
// missing, and a stale socket left by a crashed run is replaced (a live one
// is an error).
func Listen(addr string, sock Socket) (net.Listener, error) {
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
		return listenUnix(rest, sock)
	}
	return nil, fmt.Errorf("milter: listen address %q: unknown type %q (want inet or unix)", addr, kind)
}

func listenUnix(path string, sock Socket) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("milter: listen address unix: empty path")
	}
	if err := makeSocketDir(filepath.Dir(path), sock.GID); err != nil {
		return nil, err
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
	if sock.GID >= 0 {
		if err := os.Chown(path, -1, sock.GID); err != nil {
			ln.Close()
			return nil, fmt.Errorf("milter: give socket %s group %d: %w (the archiver's user must be in that group, or the socket's directory must belong to it and be set-group-ID: install -d -o USER -g GROUP -m 2750 %s)",
				path, sock.GID, err, filepath.Dir(path))
		}
	}
	if err := os.Chmod(path, sock.Mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("milter: chmod socket: %w", err)
	}
	return ln, nil
}

// makeSocketDir creates the socket's directory when it is missing, such as
// /var/spool/postfix/milter on a fresh Debian. With a group it is made
// 2750 in that group (set-group-ID, so that a socket made there gets the
// group), otherwise 0755: user postfix must be able to reach the socket.
func makeSocketDir(dir string, gid int) error {
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil // there, or a problem net.Listen reports better
	}
	mode := os.FileMode(0o755)
	if gid >= 0 {
		mode = 0o750 | os.ModeSetgid
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("milter: create the socket's directory: %w (as root: install -d -o USER -g postfix -m 2750 %s)", err, dir)
	}
	if gid >= 0 {
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("milter: give %s group %d: %w", dir, gid, err)
		}
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("milter: chmod %s: %w", dir, err)
	}
	return nil
}
