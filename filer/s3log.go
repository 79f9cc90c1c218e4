package filer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/objstore"
)

// The sealed log and the audit trail (package sealog) go to the bucket
// too, under PREFIX/log/ and PREFIX/audit/, so that the bucket alone
// proves what the archive held: the tiles, entry bundles, day MANIFESTs
// and every signed checkpoint (checkpoints/SIZE). These files never change
// once written, so each is uploaded once, like an item (If-None-Match,
// SHA-256, Object Lock), and listed in ROOT/remote/log-uploaded. The
// mutable files (the latest "checkpoint", which checkpoints/ holds as
// well, the lock, caches, pending audit entries) stay local.

// logDirs are the root directories uploaded, by their name in the bucket.
var logDirs = []string{"log", "audit"}

// logImmutable says whether a path under a log directory is a file that
// never changes.
func logImmutable(rel string) bool {
	for _, p := range []string{"tile/", "checkpoints/", "manifest/"} {
		if strings.HasPrefix(rel, p) && !strings.Contains(rel, "/.") && !strings.HasSuffix(rel, ".tmp") {
			return true
		}
	}
	return false
}

const logUploaded = "log-uploaded"

// uploadLog uploads the log files not uploaded yet. The longest period the
// policy can give is their retention, from now.
func (d *S3) uploadLog(ctx context.Context, t *Tally) {
	listPath := filepath.Join(d.root, archive.RemoteDir, logUploaded)
	done := map[string]bool{}
	if f, err := os.Open(listPath); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			done[sc.Text()] = true
		}
		f.Close()
	}
	var todo []string
	for _, dir := range logDirs {
		base := filepath.Join(d.root, dir)
		err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == base {
					return filepath.SkipDir
				}
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			rel, _ := filepath.Rel(base, p)
			rel = filepath.ToSlash(rel)
			if logImmutable(rel) && !done[dir+"/"+rel] {
				todo = append(todo, dir+"/"+rel)
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Problem(fmt.Errorf("listing %s/ for the bucket: %w", dir, err))
			return
		}
	}
	if len(todo) == 0 {
		return
	}
	sort.Strings(todo)
	lock := objstore.Lock{}
	if d.locked {
		lock = objstore.Lock{Mode: d.o.LockMode, RetainUntil: d.o.Policy.Longest().After(d.o.Now()).UTC().Truncate(time.Second).Add(time.Second)}
	}
	if err := os.MkdirAll(filepath.Dir(listPath), 0o750); err != nil {
		t.Problem(fmt.Errorf("log upload: %w", err))
		return
	}
	list, err := os.OpenFile(listPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		t.Problem(fmt.Errorf("log upload: %w", err))
		return
	}
	defer list.Close()
	n := 0
	for _, rel := range todo {
		if ctx.Err() != nil {
			break
		}
		p := filepath.Join(d.root, filepath.FromSlash(rel))
		sum, size, err := fileSHA256(p)
		if err != nil {
			t.Problem(fmt.Errorf("log upload: %w", err))
			continue
		}
		key := rel
		if d.o.Store.Prefix != "" {
			key = d.o.Store.Prefix + "/" + rel
		}
		if _, err := d.putOnce(ctx, key, p, sum, size, lock); err != nil {
			err = destErr(err)
			t.Problem(fmt.Errorf("log upload %s: %w; the next run retries", rel, err))
			if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRefused) {
				break
			}
			continue
		}
		if _, err := list.WriteString(rel + "\n"); err != nil {
			t.Problem(fmt.Errorf("log upload: %w", err))
			break
		}
		n++
	}
	// Losing the list costs only requests (the next run finds the objects
	// there): one fsync for the run.
	if err := list.Sync(); err != nil {
		t.Problem(fmt.Errorf("log upload: %w", err))
	}
	t.Verbose("uploaded %d files of the sealed log and audit trail", n)
}
