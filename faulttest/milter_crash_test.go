package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// sender delivers numbered messages to Postfix's smtpd the way a real
// client does: on any failure it drops the session and retries the message
// later. It never fails the test for a refused message.
type sender struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
}

func (s *sender) close() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

func (s *sender) expect(want int) bool {
	s.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	rep, err := smtpwire.ReadReply(s.r, 1<<20)
	return err == nil && rep.Code == want
}

// send returns whether Postfix accepted message i.
func (s *sender) send(i int) bool {
	if s.c == nil {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return false
		}
		s.c, s.r = c, bufio.NewReader(c)
		if !s.expect(220) {
			s.close()
			return false
		}
		s.c.Write([]byte("EHLO client.example\r\n"))
		if !s.expect(250) {
			s.close()
			return false
		}
	}
	// Not pipelined: after a refused MAIL the session is dropped.
	for _, step := range []struct {
		cmd  string
		want int
	}{
		{"MAIL FROM:<crash@example.org>\r\n", 250},
		{fmt.Sprintf("RCPT TO:<rcpt%d@example.net>\r\n", i), 250},
		{"DATA\r\n", 354},
		{body(i, 3000) + ".\r\n", 250},
	} {
		if _, err := s.c.Write([]byte(step.cmd)); err != nil || !s.expect(step.want) {
			s.close()
			return false
		}
	}
	return true
}

// kill -9 milter_archiver while mail flows into a real Postfix with
// milter_default_action = tempfail: while it is down Postfix tempfails
// (nothing is accepted unarchived); after the restart the clients' retries
// go through, and every delivered message has an item with its bytes.
func TestCrashMilterArchiver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix and sends a thousand messages")
	}
	postfixtest.Require(t)
	bin := binary(t, "milter_archiver")
	sink := &smtpsink.Server{Dir: t.TempDir()}
	if err := sink.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	maddr := postfixtest.FreeAddr(t)
	snippet, err := postfixtest.LoadSnippet("../postfix-examples/milter/main.cf", map[string]string{"127.0.0.1:10030": maddr})
	if err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{MainCF: snippet, RelayTo: sink.Addr()})
	archDir := t.TempDir()
	logs := &archivetest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("milter_archiver log:\n%s", logs.String())
		}
	})
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "-l", "inet:"+maddr, "-d", archDir)
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, err := net.Dial("tcp", maddr); err == nil {
				c.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatalf("milter_archiver not listening:\n%s", logs.String())
			}
		}
	}
	m := start()

	const total, sessions = 1000, 5
	t0 := time.Now()
	var mu sync.Mutex
	accepted, refusals := 0, 0
	var wg sync.WaitGroup
	killed := make(chan struct{})
	for w := 0; w < sessions; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := &sender{addr: pf.SMTPAddr()}
			defer s.close()
			for i := w; i < total; i += sessions {
				for !s.send(i) {
					mu.Lock()
					refusals++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond) // the client retries later
				}
				mu.Lock()
				accepted++
				if accepted == total/3 {
					close(killed)
				}
				mu.Unlock()
			}
		}(w)
	}
	<-killed
	m.Process.Signal(syscall.SIGKILL)
	m.Wait()
	mu.Lock()
	t.Logf("killed milter_archiver after %d accepted messages (%v)", accepted, time.Since(t0).Round(time.Millisecond))
	mu.Unlock()
	time.Sleep(500 * time.Millisecond) // Postfix tempfails meanwhile
	mu.Lock()
	before := accepted
	mu.Unlock()
	start()
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	delivered, err := sink.Messages()
	if err != nil {
		t.Fatal(err)
	}
	if len(delivered) < total {
		t.Fatalf("sink got %d of %d messages", len(delivered), total)
	}
	r := checkEveryDeliveryArchived(t, delivered, archDir)
	t.Logf("%d accepted (%d before the restart), %d tempfailed attempts retried; %d deliveries (%d duplicates), %d items (%d recovered, %d more than deliveries), %v",
		total, before, refusals, len(delivered), r.dupDeliveries, r.items, r.recovered, r.extra, time.Since(t0).Round(time.Millisecond))
}
