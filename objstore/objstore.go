// Package objstore is the archive's object-storage tier: an S3 bucket with
// Object Lock (aws-sdk-go-v2), configured the way the AWS tools are. The
// filer moves items into it (filer --to s3://BUCKET/PREFIX); readers open
// items from it through archive's read API, for which this package
// registers the "s3" scheme.
package objstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/postfix-archive/mailarchive/archive"
)

func init() {
	archive.RegisterRemote("s3", func(d *archive.Destination) (archive.ObjectReader, error) {
		return Open(context.Background(), ConfigFrom(d))
	})
}

// Config says which bucket and how to reach it. Credentials and, unless
// set here, the region come from the environment and the shared files
// (~/.aws/config, ~/.aws/credentials; AWS_PROFILE etc.), as for the AWS CLI.
type Config struct {
	URL       string // s3://BUCKET/PREFIX
	Endpoint  string // default AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS
	Region    string // default from the environment; us-east-1 for a custom endpoint without one
	PathStyle bool   // forced on; otherwise on for an IP address or localhost endpoint
	Timeout   time.Duration
	// MaxAttempts per request (the SDK's retries); default 3.
	MaxAttempts int
}

// ConfigFrom is the Config of an archive's .destination.
func ConfigFrom(d *archive.Destination) Config {
	return Config{URL: d.URL, Endpoint: d.Endpoint, Region: d.Region, PathStyle: d.PathStyle}
}

// ParseURL splits s3://BUCKET/PREFIX. The prefix has no leading or trailing
// slash; it may be empty.
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("destination %q: want s3://BUCKET/PREFIX", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if !validBucket(bucket) {
		return "", "", fmt.Errorf("destination %q: bucket name %q: want 3-63 characters of a-z, 0-9, '.', '-'", u, bucket)
	}
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == "..") {
			return "", "", fmt.Errorf("destination %q: prefix has an empty, . or .. component", u)
		}
	}
	if strings.ContainsAny(prefix, "\x00\r\n\\") {
		return "", "", fmt.Errorf("destination %q: prefix has a control character or backslash", u)
	}
	return bucket, prefix, nil
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return b[0] != '.' && b[0] != '-' && b[len(b)-1] != '.' && b[len(b)-1] != '-'
}

// Store is one bucket and prefix.
type Store struct {
	c        *s3.Client
	Bucket   string
	Prefix   string
	endpoint string
	region   string
	path     bool
}

// Open makes a client for cfg. It sends no request.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	bucket, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	endpoint := cfg.Endpoint
	for _, v := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if endpoint == "" {
			endpoint = os.Getenv(v)
		}
	}
	pathStyle := cfg.PathStyle
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("objstore: endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", endpoint)
		}
		// Virtual-host addressing needs DNS names BUCKET.HOST, which
		// an IP address or localhost never has.
		h := u.Hostname()
		if net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost") {
			pathStyle = true
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = 3
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(timeout)),
		config.WithRetryMaxAttempts(attempts),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("objstore: AWS configuration: %w", err)
	}
	if ac.Region == "" {
		if endpoint == "" {
			return nil, errors.New("objstore: no region: set AWS_REGION, a region in ~/.aws/config, or --region")
		}
		ac.Region = "us-east-1" // what self-hosted servers expect by default
	}
	c := s3.NewFromConfig(ac, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle
	})
	return &Store{c: c, Bucket: bucket, Prefix: prefix, endpoint: endpoint, region: ac.Region, path: pathStyle}, nil
}

// Destination is what the archive root remembers of this store.
func (s *Store) Destination(url string) archive.Destination {
	return archive.Destination{URL: url, Endpoint: s.endpoint, Region: s.region, PathStyle: s.path}
}

// Client is the SDK client, for tests that play the attacker.
func (s *Store) Client() *s3.Client { return s.c }

// Key is the object key of an item's file: PREFIX/YYYY/MM/DD/ID.EXT (UTC).
func (s *Store) Key(id string, stamp time.Time, ext string) string {
	k := stamp.UTC().Format("2006/01/02") + "/" + id + ext
	if s.Prefix != "" {
		k = path.Join(s.Prefix, k)
	}
	return k
}

// URL is s3://BUCKET/KEY.
func (s *Store) URL(key string) string { return "s3://" + s.Bucket + "/" + key }

// Lock is an object's Object Lock retention.
type Lock struct {
	Mode        string // COMPLIANCE or GOVERNANCE; "" for none
	RetainUntil time.Time
}

// Info is what HeadObject says of one object version.
type Info struct {
	VersionID   string
	Size        int64
	SHA256      string // base64, as S3 sends it; "" when the server has none
	Lock        Lock
	LegalHold   bool
	LastChanged time.Time
}

// Errors the caller acts on.
var (
	// ErrExists: the key has an object already (If-None-Match: * refused).
	ErrExists = errors.New("object exists")
	// ErrUnavailable: the server could not be reached or did not answer
	// in time; nothing is known to have changed. Try again later.
	ErrUnavailable = errors.New("object store unavailable")
	// ErrDenied: the server refused us: credentials, permissions, a
	// missing bucket.
	ErrDenied = errors.New("object store refused")
	// ErrNotFound: no such object or version.
	ErrNotFound = errors.New("no such object")
)

// classify wraps err with the Err above that says what the caller can do.
func classify(op, what string, err error) error {
	if err == nil {
		return nil
	}
	var kind error
	var ae smithy.APIError
	var re *awshttp.ResponseError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			kind = ErrExists
		case "NoSuchKey", "NotFound", "NoSuchVersion":
			kind = ErrNotFound
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket",
			"InvalidBucketName", "AllAccessDisabled", "ExpiredToken", "InvalidToken":
			kind = ErrDenied
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
			kind = ErrUnavailable
		}
	}
	if kind == nil && errors.As(err, &re) {
		kind = byStatus(re.HTTPStatusCode())
	}
	if kind == nil {
		// No HTTP response at all: refused, reset, timed out.
		var ne net.Error
		var oe *net.OpError
		if errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
			kind = ErrUnavailable
		}
	}
	msg := fmt.Sprintf("%s %s: %s", op, what, shortError(err))
	if kind == nil {
		return fmt.Errorf("objstore: %s", msg)
	}
	return &Error{Kind: kind, Msg: msg, Err: err}
}

func byStatus(code int) error {
	switch {
	case code == 412:
		return ErrExists
	case code == 404:
		return ErrNotFound
	case code == 401 || code == 403:
		return ErrDenied
	case code >= 500 || code == 408 || code == 429:
		return ErrUnavailable
	}
	return nil
}

// Error is a classified failure of a request.
type Error struct {
	Kind error
	Msg  string
	Err  error
}

func (e *Error) Error() string        { return "objstore: " + e.Msg }
func (e *Error) Unwrap() []error      { return []error{e.Kind, e.Err} }
func (e *Error) Is(target error) bool { return target == e.Kind }

// shortError is the SDK's error without its long operation prefix.
func shortError(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error() // "dial tcp 10.0.0.5:7070: connect: connection refused"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time (" + err.Error() + ")"
	}
	return err.Error()
}

// CheckBucket says whether the bucket exists, we may use it, and it has
// Object Lock enabled.
func (s *Store) CheckBucket(ctx context.Context) (locked bool, err error) {
	// A GET, not HeadBucket: an answer to HEAD has no body, so its error
	// says "Forbidden" where this one says SignatureDoesNotMatch,
	// InvalidAccessKeyId or NoSuchBucket.
	out, err := s.c.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &s.Bucket})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "ObjectLockConfigurationNotFoundError":
				return false, nil
			case "NoSuchBucket":
				return false, &Error{Kind: ErrDenied, Msg: fmt.Sprintf("bucket %s does not exist", s.Bucket), Err: err}
			}
		}
		err = classify("GetObjectLockConfiguration", s.Bucket, err)
		if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrDenied) {
			// Whatever else the server says (versitygw answers an
			// unknown access key with XAdminUserNotFound), we cannot
			// use the bucket.
			err = &Error{Kind: ErrDenied, Msg: strings.TrimPrefix(err.Error(), "objstore: "), Err: err}
		}
		return false, err
	}
	return out.ObjectLockConfiguration != nil &&
		out.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled, nil
}

// Put uploads a local file under key, never replacing an object there
// (If-None-Match: *; ErrExists), with its SHA-256 (raw digest) for the
// server to check, and Object Lock retention when lock.Mode is set.
func (s *Store) Put(ctx context.Context, key, file string, sum []byte, lock Lock) (versionID string, err error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	in := &s3.PutObjectInput{
		Bucket:         &s.Bucket,
		Key:            &key,
		Body:           f,
		ContentLength:  aws.Int64(fi.Size()),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
		IfNoneMatch:    aws.String("*"),
	}
	if lock.Mode != "" {
		in.ObjectLockMode = types.ObjectLockMode(lock.Mode)
		in.ObjectLockRetainUntilDate = aws.Time(lock.RetainUntil)
	}
	out, err := s.c.PutObject(ctx, in)
	if err != nil {
		return "", classify("PutObject", s.URL(key), err)
	}
	return aws.ToString(out.VersionId), nil
}

// Head reads an object version's metadata, with its checksum.
func (s *Store) Head(ctx context.Context, key, versionID string) (Info, error) {
	in := &s3.HeadObjectInput{Bucket: &s.Bucket, Key: &key, ChecksumMode: types.ChecksumModeEnabled}
	if versionID != "" {
		in.VersionId = &versionID
	}
	out, err := s.c.HeadObject(ctx, in)
	if err != nil {
		return Info{}, classify("HeadObject", s.URL(key), err)
	}
	return Info{
		VersionID:   aws.ToString(out.VersionId),
		Size:        aws.ToInt64(out.ContentLength),
		SHA256:      aws.ToString(out.ChecksumSHA256),
		Lock:        Lock{Mode: string(out.ObjectLockMode), RetainUntil: aws.ToTime(out.ObjectLockRetainUntilDate)},
		LegalHold:   out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn,
		LastChanged: aws.ToTime(out.LastModified),
	}, nil
}

// GetObject opens an object version for reading (archive.ObjectReader).
func (s *Store) GetObject(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: &s.Bucket, Key: &key}
	if versionID != "" {
		in.VersionId = &versionID
	}
	out, err := s.c.GetObject(ctx, in)
	if err != nil {
		return nil, classify("GetObject", s.URL(key), err)
	}
	return out.Body, nil
}

// SetLegalHold sets or clears the legal hold of an object version.
func (s *Store) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	st := types.ObjectLockLegalHoldStatusOff
	if on {
		st = types.ObjectLockLegalHoldStatusOn
	}
	in := &s3.PutObjectLegalHoldInput{Bucket: &s.Bucket, Key: &key,
		LegalHold: &types.ObjectLockLegalHold{Status: st}}
	if versionID != "" {
		in.VersionId = &versionID
	}
	_, err := s.c.PutObjectLegalHold(ctx, in)
	return classify("PutObjectLegalHold", s.URL(key), err)
}

// SetRetention sets an object version's retention (the server refuses to
// shorten it or change its mode under COMPLIANCE).
func (s *Store) SetRetention(ctx context.Context, key, versionID string, lock Lock) error {
	in := &s3.PutObjectRetentionInput{Bucket: &s.Bucket, Key: &key,
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionMode(lock.Mode),
			RetainUntilDate: aws.Time(lock.RetainUntil)}}
	if versionID != "" {
		in.VersionId = &versionID
	}
	_, err := s.c.PutObjectRetention(ctx, in)
	return classify("PutObjectRetention", s.URL(key), err)
}

// DeleteVersion deletes one object version for good (the server refuses
// while it is locked or held).
func (s *Store) DeleteVersion(ctx context.Context, key, versionID string) error {
	in := &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: &key}
	if versionID != "" {
		in.VersionId = &versionID
	}
	_, err := s.c.DeleteObject(ctx, in)
	return classify("DeleteObject", s.URL(key), err)
}
