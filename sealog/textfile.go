package sealog

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// WriteTextfile records the result of a verify in the Prometheus node
// exporter's textfile collector format, atomically (the collector may read
// at any time). ok is false when verify could not run at all.
func WriteTextfile(path string, rep *Report, ok bool, at time.Time) error {
	var b strings.Builder
	gauge := func(name, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	okv := 0
	if ok {
		okv = 1
	}
	gauge("mailarchive_verify_last_run_timestamp_seconds", "When mailarchive verify last ran (Unix time).", at.Unix())
	gauge("mailarchive_verify_completed", "1 if the last verify could check the archive, 0 if it could not.", okv)
	if rep != nil {
		clean := 0
		if ok && rep.Clean() {
			clean = 1
		}
		gauge("mailarchive_verify_clean", "1 if the last verify found nothing wrong.", clean)
		gauge("mailarchive_verify_tree_size", "Entries in the item log at its checkpoint.", rep.TreeSize)
		gauge("mailarchive_verify_items_checked", "Items re-hashed by the last verify.", rep.Items)
		gauge("mailarchive_verify_unlogged_items", "Items not in the log yet (not sealed).", rep.Unlogged)
		gauge("mailarchive_verify_duration_seconds", "How long the last verify took.", fmt.Sprintf("%.3f", rep.Seconds))
		counts := map[string]int{}
		for _, k := range []string{FindAlteredEML, FindAlteredJSON, FindRemoved, FindDayRemoved, FindInserted, FindLate,
			FindManifest, FindTruncated, FindRollback, FindRewritten, FindCorrupt, FindDamaged} {
			counts[k] = 0
		}
		for _, f := range rep.Findings {
			counts[f.Kind]++
		}
		kinds := make([]string, 0, len(counts))
		for k := range counts {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		b.WriteString("# HELP mailarchive_verify_findings Findings of the last verify, by kind.\n# TYPE mailarchive_verify_findings gauge\n")
		for _, k := range kinds {
			fmt.Fprintf(&b, "mailarchive_verify_findings{kind=%q} %d\n", k, counts[k])
		}
	}
	// The atomic write replaces what is at path: refuse anything but a
	// regular file (as root, "--textfile /dev/null" would otherwise turn
	// the device into a file).
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("sealog: textfile %s exists and is not a regular file; not replacing it", path)
	}
	return writeAtomic(path, []byte(b.String()), 0o644, false)
}
