package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// scriptServer is a downstream SMTP server for tests that answers like
// Postfix's reinjection smtpd, with hooks to misbehave, and records every
// byte it receives.
type scriptServer struct {
	ln net.Listener

	hooks // set under mu; each connection takes a copy

	mu       sync.Mutex
	raw      bytes.Buffer // everything received, all connections
	messages [][]byte     // unstuffed DATA content
	sizes    []int64
	wg       sync.WaitGroup
	quit     chan struct{} // closed when the test ends
}

func newScriptServer(t *testing.T) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{ln: ln, quit: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); close(s.quit); s.wg.Wait() })
	return s
}

func (s *scriptServer) addr() string { return s.ln.Addr().String() }

func (s *scriptServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

func (s *scriptServer) msgs() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.messages...)
}

type hooks struct {
	finalReply  string // reply to the end of data; default queued as
	dropInData  bool   // close the connection after the first data bytes
	dropAtEnd   bool   // close the connection instead of replying to the end of data
	discardData bool   // don't keep message bytes (large messages)
	stallData   bool   // after 354, stop reading (and hold the connection)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

const ehloReply = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n250-8BITMIME\r\n250 CHUNKING\r\n"

func (s *scriptServer) serve(c net.Conn) {
	defer c.Close()
	s.mu.Lock()
	h := s.hooks
	s.mu.Unlock()
	var in io.Reader = c
	if !h.discardData {
		in = io.TeeReader(c, lockedWriter{&s.mu, &s.raw})
	}
	r := bufio.NewReader(in)
	w := bufio.NewWriter(c)
	reply := func(s string) {
		w.WriteString(s)
		if r.Buffered() == 0 {
			w.Flush()
		}
	}
	reply("220 mx.test ESMTP scripted\r\n")
	rcpts, queued := 0, 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := smtpwire.ParseCommand([]byte(line))
		switch cmd.Verb {
		case "EHLO":
			reply(ehloReply)
		case "HELO", "XFORWARD", "NOOP":
			reply("250 2.0.0 Ok\r\n")
		case "MAIL":
			rcpts = 0
			reply("250 2.1.0 Ok\r\n")
		case "RCPT":
			if strings.Contains(cmd.Arg(), "reject") {
				reply("550 5.1.1 <" + strings.Join(cmd.Args, "") + ">: Recipient address rejected\r\n")
				continue
			}
			rcpts++
			reply("250 2.1.5 Ok\r\n")
		case "RSET":
			rcpts = 0
			reply("250 2.0.0 Ok\r\n")
		case "AUTH":
			reply("334 VXNlcm5hbWU6\r\n")
			if l, err := r.ReadString('\n'); err != nil || l == "*\r\n" {
				reply("501 5.7.0 Authentication aborted\r\n")
				continue
			}
			reply("235 2.7.0 Authentication successful\r\n")
		case "QUIT":
			reply("221 2.0.0 Bye\r\n")
			w.Flush()
			return
		case "DATA":
			if rcpts == 0 {
				reply("554 5.5.1 Error: no valid recipients\r\n")
				continue
			}
			reply("354 End data with <CR><LF>.<CR><LF>\r\n")
			w.Flush()
			if h.dropInData {
				r.Peek(1)
				return
			}
			if h.stallData {
				// Hold the connection, reading nothing, until the test
				// ends: the proxy must give up on its own.
				c.(*net.TCPConn).SetReadBuffer(4096)
				<-s.quit
				return
			}
			var buf bytes.Buffer
			var dst io.Writer = &buf
			if h.discardData {
				dst = io.Discard
			}
			n, err := smtpwire.ReadData(r, dst)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.messages = append(s.messages, buf.Bytes())
			s.sizes = append(s.sizes, n)
			s.mu.Unlock()
			if h.dropAtEnd {
				return
			}
			queued++
			fr := h.finalReply
			if fr == "" {
				fr = fmt.Sprintf("250 2.0.0 Ok: queued as ABC%03d\r\n", queued)
			}
			reply(fr)
		default:
			reply("502 5.5.2 Error: command not recognized\r\n")
		}
	}
}
