package sealog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is the body of a C2SP tlog-checkpoint: the log's origin, the
// tree size and the root hash.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Body is the checkpoint text that is signed.
func (c Checkpoint) Body() []byte {
	return []byte(fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:])))
}

// ParseCheckpoint parses a checkpoint body (the text of a signed note).
// Extension lines after the root hash are allowed by C2SP and ignored.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return Checkpoint{}, errors.New("sealog: checkpoint: fewer than three lines")
	}
	var c Checkpoint
	c.Origin = strings.TrimSuffix(lines[0], "\n")
	size := strings.TrimSuffix(lines[1], "\n")
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != size {
		return Checkpoint{}, fmt.Errorf("sealog: checkpoint: bad tree size %q", size)
	}
	c.Size = n
	h, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(h) != tlog.HashSize || c.Origin == "" {
		return Checkpoint{}, errors.New("sealog: checkpoint: bad origin or root hash")
	}
	copy(c.Root[:], h)
	return c, nil
}

// ErrWrongKey says a checkpoint is not signed by the verifier key given:
// the log was rebuilt by someone else, or the wrong key was given.
var ErrWrongKey = errors.New("checkpoint not signed by the verifier key")

// OpenCheckpoint checks a signed checkpoint against the verifier and
// returns its body. A note signed only by other keys yields ErrWrongKey.
func OpenCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return Checkpoint{}, fmt.Errorf("sealog: %w (%v)", ErrWrongKey, err)
		}
		return Checkpoint{}, fmt.Errorf("sealog: checkpoint: %w", err)
	}
	return ParseCheckpoint(n.Text)
}

// signCheckpoint signs c as a C2SP signed note.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: string(c.Body())}, s)
	if err != nil {
		return nil, fmt.Errorf("sealog: sign checkpoint: %w", err)
	}
	return msg, nil
}

// Keys: the signer key is the signed-note private key
// ("PRIVATE+KEY+name+hash+base64"), the verifier key its public half
// ("name+hash+base64"), both as x/mod/sumdb/note writes them.

// GenerateKeys makes an ed25519 key pair named name.
func GenerateKeys(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("sealog: generate key %q: %w", name, err)
	}
	return skey, vkey, nil
}

// Signer is a loaded signer key with its verifier.
type Signer struct {
	note.Signer
	Verifier note.Verifier
	VKey     string
}

// ParseSigner parses a signer key and derives its verifier, so an appender
// can check its own log before extending it.
func ParseSigner(skey string) (*Signer, error) {
	skey = strings.TrimSpace(skey)
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("sealog: signer key: %w", err)
	}
	// PRIVATE+KEY+name+hash+base64(alg || seed)
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		return nil, errors.New("sealog: signer key: not an ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, fmt.Errorf("sealog: signer key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("sealog: signer key: %w", err)
	}
	return &Signer{Signer: s, Verifier: v, VKey: vkey}, nil
}

// LoadSigner reads a signer key file. It refuses a file that others than
// its owner may read: the key is what makes the log's history binding.
func LoadSigner(path string) (*Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealog: signer key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sealog: signer key %s has mode %04o: make it 0600 (only the archive user may read it)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealog: signer key: %w", err)
	}
	s, err := ParseSigner(string(data))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return s, nil
}

// LoadVerifier reads a verifier key: a file holding one line, or the key
// itself when arg is not a file.
func LoadVerifier(arg string) (note.Verifier, error) {
	text := arg
	if data, err := os.ReadFile(arg); err == nil {
		text = string(data)
	} else if !strings.Contains(arg, "+") {
		return nil, fmt.Errorf("sealog: verifier key: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(bytes.TrimPrefix([]byte(text), []byte("\ufeff")))))
	if err != nil {
		return nil, fmt.Errorf("sealog: verifier key %s: %w", arg, err)
	}
	return v, nil
}
