package objstore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/s3test"
	"github.com/postfix-archive/mailarchive/objstore"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, prefix, err string
	}{
		{"s3://arch", "arch", "", ""},
		{"s3://arch/", "arch", "", ""},
		{"s3://arch/mail/host1/", "arch", "mail/host1", ""},
		{"s3://my.bucket-1/p", "my.bucket-1", "p", ""},
		{"http://arch/p", "", "", "want s3://"},
		{"s3://", "", "", "bucket name"},
		{"s3://ab", "", "", "bucket name"},
		{"s3://Arch", "", "", "bucket name"},
		{"s3://-arch", "", "", "bucket name"},
		{"s3://arch/a//b", "", "", "empty"},
		{"s3://arch/a/../b", "", "", ".."},
		{"s3://arch/a\nb", "", "", "control"},
	} {
		b, p, err := objstore.ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || b != tc.bucket || p != tc.prefix {
			t.Errorf("%q: %q %q %v", tc.in, b, p, err)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("s3://bucket/prefix/x")
	f.Add("s3://a.b-c/../x")
	f.Fuzz(func(t *testing.T, u string) {
		b, p, err := objstore.ParseURL(u)
		if err != nil {
			return
		}
		// What parses names a key prefix that is safe to join.
		if strings.Contains("/"+p+"/", "/../") || strings.Contains(p, "//") || strings.HasPrefix(p, "/") {
			t.Fatalf("%q: prefix %q", u, p)
		}
		b2, p2, err := objstore.ParseURL("s3://" + b + "/" + p)
		if err != nil || b2 != b || p2 != p {
			t.Fatalf("%q: does not round-trip: %q %q %v", u, b2, p2, err)
		}
	})
}

func file(t *testing.T, content string) (string, []byte) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return p, sum[:]
}

// The server itself keeps the promises: a COMPLIANCE-locked version cannot
// be deleted, overwritten (If-None-Match), shortened or relaxed, and a legal
// hold blocks deletion after retain-until.
func TestWORM(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "worm", true)
	st := srv.Store(t, "s3://worm/p")
	ctx := context.Background()
	locked, err := st.CheckBucket(ctx)
	if err != nil || !locked {
		t.Fatalf("CheckBucket: %v %v", locked, err)
	}

	path, sum := file(t, "Subject: x\r\n\r\nbody\r\n")
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	key := "p/2026/11/24/a.eml"
	ver, err := st.Put(ctx, key, path, sum, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: until})
	if err != nil || ver == "" {
		t.Fatalf("Put: %q %v", ver, err)
	}
	info, err := st.Head(ctx, key, ver)
	if err != nil {
		t.Fatal(err)
	}
	if info.Lock.Mode != "COMPLIANCE" || !info.Lock.RetainUntil.Equal(until) || info.SHA256 == "" || info.VersionID != ver {
		t.Errorf("Head: %+v, want COMPLIANCE until %v", info, until)
	}
	// A wrong checksum is refused by the server.
	bad := sha256.Sum256([]byte("other"))
	if _, err := st.Put(ctx, "p/wrong.eml", path, bad[:], objstore.Lock{}); err == nil {
		t.Error("a PUT with a wrong SHA-256 was accepted")
	}
	// No overwrite.
	if _, err := st.Put(ctx, key, path, sum, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: until}); !errors.Is(err, objstore.ErrExists) {
		t.Errorf("second Put: %v, want ErrExists", err)
	}
	// No deletion of the version, no shortening, no mode change.
	if err := st.DeleteVersion(ctx, key, ver); !s3test.IsDenied(err) {
		t.Errorf("delete locked version: %v, want 403", err)
	}
	if err := st.SetRetention(ctx, key, ver, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: until.Add(-time.Minute)}); !s3test.IsDenied(err) {
		t.Errorf("shorten: %v, want 403", err)
	}
	if err := st.SetRetention(ctx, key, ver, objstore.Lock{Mode: "GOVERNANCE", RetainUntil: until}); !s3test.IsDenied(err) {
		t.Errorf("to GOVERNANCE: %v, want 403", err)
	}
	if err := st.SetRetention(ctx, key, ver, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: until.Add(time.Hour)}); err != nil {
		t.Errorf("extend: %v", err)
	}
	body, err := st.GetObject(ctx, key, ver)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("GetObject: %q", b)
	}

	// A legal hold blocks deletion of a version that has no retention.
	hkey := "p/held.eml"
	hver, err := st.Put(ctx, hkey, path, sum, objstore.Lock{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetLegalHold(ctx, hkey, hver, true); err != nil {
		t.Fatal(err)
	}
	if hi, err := st.Head(ctx, hkey, hver); err != nil || !hi.LegalHold {
		t.Errorf("held version: %+v %v", hi, err)
	}
	if err := st.DeleteVersion(ctx, hkey, hver); !s3test.IsDenied(err) {
		t.Errorf("delete held version: %v, want 403", err)
	}
	if err := st.SetLegalHold(ctx, hkey, hver, false); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteVersion(ctx, hkey, hver); err != nil {
		t.Errorf("delete released version: %v", err)
	}
	if _, err := st.Head(ctx, hkey, hver); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("deleted version: %v", err)
	}

	// A legal hold after retain-until. S3 refuses this deletion; versitygw
	// v1.8.0 does not: its checkObject (auth/object_lock.go) returns early
	// for an expired retention and never looks at the hold. So retention
	// apply checks the archive's holds itself before deleting (tested in
	// package retention); here the server's answer is only reported.
	short := time.Now().Add(1500 * time.Millisecond).UTC()
	skey := "p/held-expired.eml"
	sver, err := st.Put(ctx, skey, path, sum, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: short})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetLegalHold(ctx, skey, sver, true); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteVersion(ctx, skey, sver); !s3test.IsDenied(err) {
		t.Errorf("delete held version under retention: %v, want 403", err)
	}
	time.Sleep(time.Until(short) + time.Second)
	if err := st.DeleteVersion(ctx, skey, sver); err == nil {
		t.Logf("known server gap: versitygw deleted a held version once its retain-until had passed")
	} else if !s3test.IsDenied(err) {
		t.Errorf("delete held, expired version: %v", err)
	}
}

func TestCheckBucket(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "plain", false)
	ctx := context.Background()
	if locked, err := srv.Store(t, "s3://plain").CheckBucket(ctx); err != nil || locked {
		t.Errorf("unlocked bucket: %v %v", locked, err)
	}
	if _, err := srv.Store(t, "s3://missing").CheckBucket(ctx); !errors.Is(err, objstore.ErrDenied) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := srv.Store(t, "s3://plain").CheckBucket(ctx); !errors.Is(err, objstore.ErrDenied) {
		t.Errorf("bad credentials: %v", err)
	}
	srv.Kill()
	if _, err := srv.Store(t, "s3://plain").CheckBucket(ctx); !errors.Is(err, objstore.ErrUnavailable) {
		t.Errorf("server down: %v", err)
	}
}
