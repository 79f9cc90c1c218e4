// Package logging gives the daemons the same --log-format and --log-level
// flags and builds their *slog.Logger from them.
//
// text is slog's key=value format, which journald and grep handle well;
// json is one object per line for log shippers (Loki, Elasticsearch).
// Both carry the same keys, so a query written for one works on the other.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Options are the parsed logging flags.
type Options struct {
	Format string // text or json
	Level  string // debug, info, warn, error
	// NoTime leaves out each record's time, for a destination that stamps
	// lines itself (syslog).
	NoTime bool
}

// AddFlags registers --log-format and --log-level on fs and returns where
// their values land.
func AddFlags(fs *pflag.FlagSet) *Options {
	o := &Options{}
	fs.StringVar(&o.Format, "log-format", "text", "log `FORMAT`: text (key=value) or json (one object per line)")
	fs.StringVar(&o.Level, "log-level", "info", "log `LEVEL`: debug, info, warn, error")
	return o
}

// Logger builds the logger that writes to w, or says which flag is wrong.
func (o *Options) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.Level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := strings.ToLower(o.Format)
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if o.NoTime && len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		// JSON: durations as text ("1.5ms", as in the text format), not
		// nanoseconds.
		if format == "json" && a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.Format)
}
