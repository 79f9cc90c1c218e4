package milter

import (
	"context"
	"log/slog"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Recover runs the store's recovery sweep once and logs what it did. Items
// that a crashed writer (of any process) left under tmp/ become items
// marked recovered; the store logs each one itself.
func Recover(store *archive.Store, log *slog.Logger) archive.RecoverReport {
	return sweep(store, log, slog.LevelInfo)
}

// sweep logs a sweep that found nothing at level quiet.
func sweep(store *archive.Store, log *slog.Logger, quiet slog.Level) archive.RecoverReport {
	rep := store.Recover()
	lvl := quiet
	if len(rep.Recovered) > 0 || len(rep.Removed) > 0 || len(rep.Foreign) > 0 || len(rep.Errors) > 0 {
		lvl = slog.LevelInfo
	}
	log.Log(context.Background(), lvl, "recovery sweep",
		"recovered", len(rep.Recovered), "removed", len(rep.Removed),
		"busy", rep.Busy, "foreign", len(rep.Foreign), "errors", len(rep.Errors))
	return rep
}

// RecoverEvery runs the sweep every interval until ctx is done; sweeps that
// find nothing are logged at debug level only.
func RecoverEvery(ctx context.Context, store *archive.Store, log *slog.Logger, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sweep(store, log, slog.LevelDebug)
		}
	}
}
