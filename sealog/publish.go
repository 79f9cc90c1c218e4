package sealog

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/digitorus/timestamp"
)

// publish hands the current checkpoint to target when it is newer than the
// last one handed out: target is a directory (another filesystem, a
// mounted object-locked bucket) that gets checkpoint.SIZE and checkpoint,
// or else a shell command that gets the signed checkpoint on its standard
// input (with MAILARCHIVE_TREE_SIZE set), e.g. a mail to the officer.
// A failure is retried by the next seal.
func publish(ctx context.Context, dir, target string, lg *Log) (bool, error) {
	cp, signed := lg.Checkpoint()
	if signed == nil {
		return false, nil
	}
	last := int64(-1)
	if data, err := os.ReadFile(filepath.Join(dir, publishedFile)); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil {
			last = n
		}
	}
	if cp.Size == last {
		return false, nil
	}
	if fi, err := os.Stat(target); err == nil && fi.IsDir() {
		if err := writeAtomic(filepath.Join(target, fmt.Sprintf("checkpoint.%d", cp.Size)), signed, 0o644, true); err != nil {
			return false, fmt.Errorf("sealog: publish: %w", err)
		}
		if err := writeAtomic(filepath.Join(target, checkpointFile), signed, 0o644, true); err != nil {
			return false, fmt.Errorf("sealog: publish: %w", err)
		}
	} else {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", target)
		cmd.Stdin = bytes.NewReader(signed)
		cmd.Env = append(os.Environ(), "MAILARCHIVE_TREE_SIZE="+strconv.FormatInt(cp.Size, 10))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("sealog: publish command %q: %v: %s", target, err, strings.TrimSpace(string(out)))
		}
	}
	if err := writeAtomic(filepath.Join(dir, publishedFile), []byte(strconv.FormatInt(cp.Size, 10)+"\n"), 0o640, true); err != nil {
		return true, err
	}
	return true, nil
}

// timestampPath is where the RFC 3161 token of the checkpoint of a size is
// kept.
func timestampPath(size int64) string { return historyPath(size) + ".tsr" }

// timestampHistory gets an RFC 3161 token from the TSA at url for the
// current checkpoint if it has none: proof from a third party that the
// checkpoint existed at that time.
func timestampHistory(ctx context.Context, dir, url string) (int, error) {
	signed, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		return 0, nil // nothing to stamp yet
	}
	size := int64(0)
	if n, err := noteBodySize(signed); err == nil {
		size = n
	}
	p := filepath.Join(dir, timestampPath(size))
	if _, err := os.Stat(p); err == nil {
		return 0, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("sealog: %w", err)
	}
	tok, err := RequestTimestamp(ctx, url, signed)
	if err != nil {
		return 0, err
	}
	if err := writeAtomic(p, tok, 0o644, true); err != nil {
		return 0, err
	}
	return 1, nil
}

func noteBodySize(signed []byte) (int64, error) {
	body, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return 0, errors.New("not a signed note")
	}
	cp, err := ParseCheckpoint(string(body) + "\n")
	return cp.Size, err
}

// RequestTimestamp asks the TSA at url to time-stamp msg and returns the
// DER time-stamp token, checked to cover msg.
func RequestTimestamp(ctx context.Context, url string, msg []byte) ([]byte, error) {
	req, err := timestamp.CreateRequest(bytes.NewReader(msg), &timestamp.RequestOptions{Hash: crypto.SHA256, Certificates: true})
	if err != nil {
		return nil, fmt.Errorf("sealog: timestamp request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
	if err != nil {
		return nil, fmt.Errorf("sealog: TSA %s: %w", url, err)
	}
	hr.Header.Set("Content-Type", "application/timestamp-query")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("sealog: TSA: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sealog: TSA %s: HTTP %s %v", url, resp.Status, err)
	}
	ts, err := timestamp.ParseResponse(body)
	if err != nil {
		return nil, fmt.Errorf("sealog: TSA %s: %w", url, err)
	}
	if _, err := CheckTimestamp(ts.RawToken, msg, nil); err != nil {
		return nil, err
	}
	return ts.RawToken, nil
}

// CheckTimestamp checks that an RFC 3161 token is signed (by the
// certificate it carries) over the sha256 of msg, and, when roots is not
// nil, that the certificate chains to roots for time stamping. It returns
// the time the TSA vouches for.
func CheckTimestamp(token, msg []byte, roots *x509.CertPool) (time.Time, error) {
	ts, err := timestamp.Parse(token)
	if err != nil {
		return time.Time{}, fmt.Errorf("sealog: timestamp token: %w", err)
	}
	if len(ts.Certificates) == 0 {
		return time.Time{}, errors.New("sealog: timestamp token carries no certificate")
	}
	if ts.HashAlgorithm != crypto.SHA256 {
		return time.Time{}, fmt.Errorf("sealog: timestamp uses %v, not SHA-256", ts.HashAlgorithm)
	}
	sum := sha256.Sum256(msg)
	if !bytes.Equal(ts.HashedMessage, sum[:]) {
		return time.Time{}, errors.New("sealog: timestamp token is for another checkpoint")
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range ts.Certificates[1:] {
			inter.AddCert(c)
		}
		if _, err := ts.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			CurrentTime: ts.Time, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
			return time.Time{}, fmt.Errorf("sealog: timestamp certificate: %w", err)
		}
	}
	return ts.Time, nil
}
