package sealog_test

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/sealog"
)

// TestCrashChild is the seal that dies: run by TestCrashAtEachStep in a
// child process, it kills itself with SIGKILL at the named step.
func TestCrashChild(t *testing.T) {
	at := os.Getenv("SEALOG_CRASH_AT")
	if at == "" {
		t.Skip("run by TestCrashAtEachStep")
	}
	s, err := sealog.ParseSigner(os.Getenv("SEALOG_SKEY"))
	if err != nil {
		t.Fatal(err)
	}
	now, err := time.Parse(time.RFC3339, os.Getenv("SEALOG_NOW"))
	if err != nil {
		t.Fatal(err)
	}
	sealog.SetCrashHook(func(step string) {
		if step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})
	sealog.Seal(context.Background(), sealog.SealOptions{Root: os.Getenv("SEALOG_ROOT"), Signer: s,
		SealAfter: time.Hour, Now: func() time.Time { return now }, Batch: 300})
	t.Fatalf("did not reach step %s", at)
}

// TestCrashAtEachStep: a seal killed at any step of an append leaves the
// log verifiable at its last checkpoint, and the next seal completes it.
func TestCrashAtEachStep(t *testing.T) {
	for _, step := range []string{"entries", "tile", "signed", "checkpoint", "history", "manifest", "audit"} {
		t.Run(step, func(t *testing.T) {
			a := newArchive(t)
			skey, _, _ := sealog.GenerateKeys("archive.example/mail")
			a.signer, _ = sealog.ParseSigner(skey)
			a.vkey = a.signer.VKey
			// A sealed day, then a day's worth of new items, more than a
			// tile, so the crashed append writes full and partial tiles.
			for i := 0; i < 10; i++ {
				a.addItem(a.now.Add(time.Duration(i)*time.Second), "first")
			}
			a.now = a.now.Add(24 * time.Hour)
			a.file()
			a.seal()
			before := a.checkpoint()
			var ids []string
			for i := 0; i < 600; i++ {
				ids = append(ids, a.addItem(a.now.Add(time.Duration(i)*time.Second), "second"))
			}
			if err := sealog.RecordAudit(a.root, "officer", "search", "from:a@example.org", ids[:3], a.now); err != nil {
				t.Fatal(err)
			}
			a.now = a.now.Add(24 * time.Hour)
			a.file()

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SEALOG_CRASH_AT="+step, "SEALOG_SKEY="+skey,
				"SEALOG_ROOT="+a.root, "SEALOG_NOW="+a.now.Format(time.RFC3339))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errorsAs(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die at %s: %v\n%s", step, err, out)
			}
			// Verifiable as it stands: at the old checkpoint or the new.
			rep := a.verify(before)
			a.mustClean(rep)
			// The next seal completes the work.
			res := a.seal()
			rep = a.verify(before)
			a.mustClean(rep)
			if rep.Unlogged != 0 || rep.Items != 610 || rep.Days != 2 {
				t.Fatalf("after recovery: items %d days %d unlogged %d (seal %+v)", rep.Items, rep.Days, rep.Unlogged, res)
			}
			committed, pending, err := sealog.ReadAudit(a.root, time.Time{})
			if err != nil || len(committed) != 1 || len(pending) != 0 {
				t.Fatalf("audit trail after recovery: %d committed, %d pending, %v", len(committed), len(pending), err)
			}
		})
	}
}
