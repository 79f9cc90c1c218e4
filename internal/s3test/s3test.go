// Package s3test runs a real S3 server for tests: versitygw (posix backend
// with versioning, so Object Lock works) on a loopback port, built once by
// scripts/install-peers.sh into the user's cache directory.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/objstore"
)

// Credentials of the test server.
const (
	AccessKey = "mailarchive-test"
	SecretKey = "mailarchive-test-secret-key"
)

// Binary finds versitygw: $MAILARCHIVE_PEER_BIN, the cache directory that
// install-peers.sh builds into, then PATH.
func Binary() (string, error) {
	var dirs []string
	if d := os.Getenv("MAILARCHIVE_PEER_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache")
		}
	}
	if cache != "" {
		dirs = append(dirs, filepath.Join(cache, "mailarchive-peers", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw not found in %s or PATH", strings.Join(dirs, ", "))
}

// Server is one versitygw process.
type Server struct {
	t        testing.TB
	bin      string
	Addr     string // 127.0.0.1:PORT
	Endpoint string // http://127.0.0.1:PORT
	data     string
	versions string
	mu       sync.Mutex
	cmd      *exec.Cmd
	log      *os.File
}

// Start starts a server for the test; it is killed when the test ends.
// Without versitygw the test is skipped, or fails under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		postfixtest.SkipOrFatal(t, "s3test: %v; run scripts/install-peers.sh versitygw", err)
	}
	dir := t.TempDir()
	s := &Server{t: t, bin: bin, data: filepath.Join(dir, "data"), versions: filepath.Join(dir, "versions")}
	os.Mkdir(s.data, 0o750)
	os.Mkdir(s.versions, 0o750)
	s.Addr = postfixtest.FreeAddr(t)
	s.Endpoint = "http://" + s.Addr
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server (again) on the same address and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("s3test: server already running")
	}
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(s.data), "versitygw.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "--port", s.Addr, "--access", AccessKey, "--secret", SecretKey, "--quiet",
		"posix", "--versioning-dir", s.versions, s.data)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("s3test: start versitygw: %v", err)
	}
	s.cmd, s.log = cmd, logf
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			s.t.Fatalf("s3test: versitygw did not listen on %s: %v\n%s", s.Addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL (as a crash or a power cut would).
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.log.Close()
	s.cmd = nil
}

// Env points the AWS configuration of this process at the server, with
// the shared config files made unreachable, for the rest of the test.
func (s *Server) Env(t testing.TB) {
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           AccessKey,
		"AWS_SECRET_ACCESS_KEY":       SecretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  "us-east-1",
		"AWS_ENDPOINT_URL":            s.Endpoint,
		"AWS_ENDPOINT_URL_S3":         "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             "/nonexistent/aws-config",
		"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

// Store opens a client for s3://BUCKET/PREFIX on this server (after Env).
func (s *Server) Store(t testing.TB, url string) *objstore.Store {
	t.Helper()
	st, err := objstore.Open(context.Background(), objstore.Config{URL: url, Endpoint: s.Endpoint, MaxAttempts: 1, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Bucket creates a bucket, with Object Lock (and so versioning) when locked.
func (s *Server) Bucket(t testing.TB, name string, locked bool) {
	t.Helper()
	st := s.Store(t, "s3://"+name)
	_, err := st.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{
		Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(locked)})
	if err != nil {
		t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
}

// Stall listens on a loopback port and accepts connections without ever
// answering: a server that hangs. It returns its http:// endpoint.
func Stall(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + ln.Addr().String()
}

// IsDenied says whether a request failed with 403 (or the S3 code
// AccessDenied), as an Object Lock refusal does.
func IsDenied(err error) bool {
	return err != nil && errors.Is(err, objstore.ErrDenied)
}
