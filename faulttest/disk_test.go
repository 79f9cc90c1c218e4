package faulttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/archive"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// The archive lives on a 2 MiB tmpfs that fills up mid-run: once it is
// full, messages are tempfailed (451) and never reach the server
// unarchived; after space is freed, mail flows again. Every message the
// server took has an item with its bytes (after a recovery sweep, for one
// whose commit failed after the server took it).
func TestArchiveDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		postfixtest.SkipOrFatal(t, "mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		postfixtest.SkipOrFatal(t, "cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	root := filepath.Join(dir, "archive")
	rec := newRecorder(t, nil)
	p := startInProxy(t, rec.addr(), root, nil)

	// moved holds the bytes of items taken off the tmpfs to free space.
	var moved []string
	freeSpace := func() {
		for _, it := range archivetest.ReadItems(t, root) {
			moved = append(moved, string(it.EML))
			os.Remove(filepath.Join(root, it.Env.ID+".eml"))
			os.Remove(filepath.Join(root, it.Env.ID+".json"))
		}
	}
	send := func(i int) (int, string) {
		c := dial(t, p.addr)
		c.expect(220)
		c.send("EHLO x\r\n")
		c.expect(250)
		c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
		c.expect(250)
		c.expect(250)
		c.expect(354)
		c.send(body(i, 300<<10) + ".\r\n")
		code, text := c.reply()
		c.Close()
		return code, text
	}
	accepted, tempfailed := 0, 0
	for i := 0; i < 12 && tempfailed == 0; i++ {
		switch code, text := send(i); code {
		case 250:
			accepted++
		case 451:
			tempfailed++
			if !strings.Contains(text, "4.3.0") {
				t.Errorf("451 without 4.3.0: %q", text)
			}
		default:
			t.Fatalf("message %d: %d %q", i, code, text)
		}
	}
	if tempfailed == 0 || accepted == 0 {
		t.Fatalf("%d accepted, %d tempfailed: the disk never filled up", accepted, tempfailed)
	}
	if n := len(rec.messages()); n != accepted {
		t.Fatalf("the server took %d messages, the client was told %d were accepted", n, accepted)
	}
	// Still full: still tempfailed.
	if code, text := send(100); code != 451 {
		t.Fatalf("on a full disk: %d %q", code, text)
	}
	freeSpace()
	if code, text := send(101); code != 250 {
		t.Fatalf("after freeing space: %d %q", code, text)
	}
	accepted++
	st, err := archive.Open(root, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep := st.Recover(); len(rep.Recovered) > 0 {
		t.Logf("recovered %d items whose commit failed on the full disk", len(rep.Recovered))
	}
	for _, it := range archivetest.ReadItems(t, root) {
		moved = append(moved, string(it.EML))
	}
	have := map[string]bool{}
	for _, m := range moved {
		have[m] = true
	}
	msgs := rec.messages()
	if len(msgs) != accepted {
		t.Fatalf("the server took %d messages, %d accepted", len(msgs), accepted)
	}
	for i, m := range msgs {
		if !have[string(m)] {
			t.Errorf("message %d taken by the server has no archived item", i)
		}
	}
	t.Logf("%d accepted, %d tempfailed before space was freed", accepted-1, tempfailed+1)
}
