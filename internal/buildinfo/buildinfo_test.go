package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{
			Main:     debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}},
		}
	}
	for _, c := range []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		wantV, wantC    string
	}{
		{"Makefile", "0.2.0", "46e69e8", vcs("ff417f5aaaa", "true"), "0.2.0", "46e69e8"},
		{"go build in a checkout", DevVersion, "", vcs("46e69e8b7d1c", "false"), DevVersion, "46e69e8"},
		{"go build, modified tree", DevVersion, "", vcs("46e69e8b7d1c", "true"), DevVersion, "46e69e8-dirty"},
		{"Go 1.24+ pseudo-version", DevVersion, "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261125005037-546c334c86fc+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "546c334c86fc"}, {Key: "vcs.modified", Value: "true"}}}, DevVersion, "546c334-dirty"},
		{"go install @version", DevVersion, "", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.1"}}, "v0.3.1", "unknown"},
		{"-buildvcs=false", DevVersion, "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, DevVersion, "unknown"},
		{"no build info", DevVersion, "", nil, DevVersion, "unknown"},
	} {
		v, cm := resolve(c.version, c.commit, c.bi)
		if v != c.wantV || cm != c.wantC {
			t.Errorf("%s: got %q %q, want %q %q", c.name, v, cm, c.wantV, c.wantC)
		}
	}
}

func TestString(t *testing.T) {
	if got := String("filer"); got != "filer "+Version+" (commit "+Commit+")" || Commit == "" {
		t.Errorf("String: %q", got)
	}
}
