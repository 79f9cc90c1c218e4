package postfixtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// QueueEntry is one message in the queue, from "postqueue -j".
type QueueEntry struct {
	QueueName  string `json:"queue_name"` // maildrop, incoming, active, deferred, hold
	QueueID    string `json:"queue_id"`
	ArrivalSec int64  `json:"arrival_time"`
	Size       int64  `json:"message_size"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason,omitempty"`
	} `json:"recipients"`
}

// Queue lists the messages in the instance's queues (postqueue -j).
func (i *Instance) Queue() ([]QueueEntry, error) {
	out, err := i.run(nil, PostqueueCmd, "-c", i.confDir, "-j")
	if err != nil {
		return nil, fmt.Errorf("postfixtest: %w", err)
	}
	var q []QueueEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("postfixtest: postqueue -j: %w in %q", err, sc.Text())
		}
		q = append(q, e)
	}
	return q, sc.Err()
}

// QueueIDs returns the queue IDs of the messages in the queue.
func (i *Instance) QueueIDs() ([]string, error) {
	q, err := i.Queue()
	if err != nil {
		return nil, err
	}
	// postqueue walks the queue directories one after the other, so a
	// message the queue manager moves meanwhile (deferred to active, as a
	// retry starts) can be listed twice: it is one message.
	var ids []string
	seen := map[string]bool{}
	for _, e := range q {
		if !seen[e.QueueID] {
			seen[e.QueueID] = true
			ids = append(ids, e.QueueID)
		}
	}
	return ids, nil
}

// QueueEmpty reports whether no message is queued.
func (i *Instance) QueueEmpty() (bool, error) {
	q, err := i.Queue()
	return len(q) == 0, err
}

// WaitQueueEmpty waits until no message is queued. On timeout the error
// lists what is still queued and why.
func (i *Instance) WaitQueueEmpty(ctx context.Context) error {
	for {
		q, err := i.Queue()
		if err != nil {
			return err
		}
		if len(q) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for _, e := range q {
				fmt.Fprintf(&b, "\n  %s %s from=<%s>", e.QueueName, e.QueueID, e.Sender)
				for _, r := range e.Recipients {
					fmt.Fprintf(&b, " to=<%s> (%s)", r.Address, r.DelayReason)
				}
			}
			return fmt.Errorf("postfixtest: queue not empty: %w:%s", ctx.Err(), b.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// procStat is what we need from /proc/PID/stat.
type procStat struct {
	pid     int
	state   byte
	session int
	comm    string
}

func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// "PID (COMM) STATE PPID PGRP SESSION ...": COMM may contain spaces and
	// parentheses, so split at the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 4 {
		return procStat{}, false
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return procStat{}, false
	}
	return procStat{pid: pid, state: f[0][0], session: sid, comm: s[open+1 : end]}, true
}

// sessionProcs lists the live (not zombie) processes of session sid.
func sessionProcs(sid int) []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var ps []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readProcStat(pid)
		if ok && st.session == sid && st.state != 'Z' && st.state != 'X' {
			ps = append(ps, st)
		}
	}
	return ps
}

// masterAlive reports whether pid is a live session leader: the master we
// started (it calls setsid), not a reused PID.
func masterAlive(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.session == pid && st.state != 'Z' && st.state != 'X'
}

// reapSession waits until no live process is left in session sid, sending
// SIGKILL to those still there after grace; it gives up after limit.
func reapSession(sid int, grace, limit time.Duration) error {
	start := time.Now()
	for {
		ps := sessionProcs(sid)
		if len(ps) == 0 {
			return nil
		}
		elapsed := time.Since(start)
		if elapsed > limit {
			var names []string
			for _, p := range ps {
				names = append(names, fmt.Sprintf("%d(%s)", p.pid, p.comm))
			}
			return fmt.Errorf("processes of the Postfix instance (session %d) still running: %s", sid, strings.Join(names, " "))
		}
		if elapsed > grace {
			for _, p := range ps {
				syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
