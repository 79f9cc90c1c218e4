// Package export writes archive items out for people who do not read the
// archive itself (a lawyer, an auditor, a mail client): an mboxrd file, a
// directory of ID.eml + ID.json, or a zip with both files of each item and
// a MANIFEST. The exported message bytes are the archived bytes; every
// item is streamed, so memory does not grow with the size of the export.
package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"archive/zip"

	"github.com/postfix-archive/mailarchive/archive"
)

// Format is an export format.
type Format string

const (
	MBox Format = "mbox" // mboxrd: one file, From_ lines, >From quoting
	EML  Format = "eml"  // a directory: ID.eml, ID.json, MANIFEST
	Zip  Format = "zip"  // a zip: ID.eml, ID.json, MANIFEST
)

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case MBox, EML, Zip:
		return f, nil
	}
	return "", fmt.Errorf("export: unknown format %q (mbox, eml or zip)", s)
}

// File is an extra file exported with an item (the transparency log's
// inclusion proof, for instance): written as ID+Suffix beside ID.eml and
// ID.json, and listed in the MANIFEST.
type File struct {
	Suffix string // ".proof", ...; must start with "."
	Open   func() (io.ReadCloser, error)
}

// NamedFile is a file an export adds once (see Options.Trailer).
type NamedFile struct {
	Name string // a plain file name, no directories
	Open func() (io.ReadCloser, error)
}

// Options configure a Writer.
type Options struct {
	Format Format
	// Extra, if set, returns more files to export with an item (eml and
	// zip only: an mbox holds messages only).
	Extra func(it archive.Item) ([]File, error)
	// Trailer, if set, returns files written once, after the items and
	// before the MANIFEST (eml and zip only): e.g. the checkpoint the
	// items' proofs lead to and how to check them.
	Trailer func() ([]NamedFile, error)
	// Progress, if set, is called after each item with the items and
	// bytes written so far.
	Progress func(items int, bytes int64)
}

// Writer exports items one by one. Close finishes the export (writes the
// MANIFEST, the zip's directory); an export that was not closed is
// incomplete.
type Writer struct {
	opt Options
	out io.WriteCloser // mbox and zip: the file (or stdout)
	dir string         // eml
	zw  *zip.Writer
	buf *bufio.Writer
	// manifest collects the MANIFEST lines in a file (the final one for
	// eml, a temporary one for zip), not in memory.
	manifest     *os.File
	manifestTemp bool
	items        int
	bytes        int64
	// Mismatches are items whose message did not match its envelope's size
	// or sha256 (damage in the archive): exported as they are, and listed.
	Mismatches []string
}

// Create starts an export to path: a file for mbox and zip ("-" writes
// to stdout), a new directory for eml. It never overwrites: an existing
// file, or a directory that is not empty, is an error.
func Create(path string, stdout io.Writer, opt Options) (*Writer, error) {
	w := &Writer{opt: opt}
	if (opt.Extra != nil || opt.Trailer != nil) && opt.Format == MBox {
		return nil, errors.New("export: an mbox holds messages only: extra files need --format eml or zip")
	}
	switch opt.Format {
	case EML:
		if path == "-" {
			return nil, errors.New("export: --format eml writes a directory: -o DIR")
		}
		if err := os.Mkdir(path, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("export: %w", err)
		}
		if ents, err := os.ReadDir(path); err != nil || len(ents) > 0 {
			if err == nil {
				err = fmt.Errorf("%s is not empty", path)
			}
			return nil, fmt.Errorf("export: %w", err)
		}
		w.dir = path
		f, err := os.OpenFile(filepath.Join(path, ManifestName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		w.manifest = f
		return w, nil
	case MBox, Zip:
		if path == "-" {
			w.out = nopCloser{stdout}
		} else {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
			if err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			w.out = f
		}
		w.buf = bufio.NewWriterSize(w.out, 256<<10)
		if opt.Format == Zip {
			w.zw = zip.NewWriter(w.buf)
			f, err := os.CreateTemp("", "mailarchive-manifest-")
			if err != nil {
				w.out.Close()
				return nil, fmt.Errorf("export: %w", err)
			}
			w.manifest, w.manifestTemp = f, true
		}
		return w, nil
	}
	return nil, fmt.Errorf("export: unknown format %q", opt.Format)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Add exports one item. The filer may move it meanwhile: it is located
// again through r.
func (w *Writer) Add(r *archive.Reader, it archive.Item) error {
	env, err := it.EnvelopeBytes() // not by path: the item may be in object storage
	if errors.Is(err, os.ErrNotExist) {
		if it, err = r.Locate(it.ID); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		env, err = it.EnvelopeBytes()
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	f, err := it.Open()
	if errors.Is(err, os.ErrNotExist) {
		if it, err = r.Locate(it.ID); err == nil {
			f, err = it.Open()
		}
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer f.Close()
	var e *archive.Envelope
	if e, err = it.Envelope(); err != nil {
		e = nil // a damaged envelope is exported as it is
	}
	mod := time.Now()
	if e != nil {
		mod = e.ArchivedAt
	}
	sum := sha256.New()
	msg := io.TeeReader(f, sum)
	var n int64
	switch w.opt.Format {
	case MBox:
		n, err = w.mbox(e, msg)
	default:
		n, err = w.file(it.ID+".eml", mod, msg)
		if err == nil {
			_, err = w.file(it.ID+".json", mod, strings.NewReader(string(env)))
		}
		if err == nil && w.opt.Extra != nil {
			err = w.extra(it, mod)
		}
	}
	if err != nil {
		return err
	}
	if e != nil && (e.Message.Size != n || e.Message.SHA256 != hex.EncodeToString(sum.Sum(nil))) {
		w.Mismatches = append(w.Mismatches, it.ID)
	}
	w.items++
	w.bytes += n
	if w.opt.Progress != nil {
		w.opt.Progress(w.items, w.bytes)
	}
	return nil
}

func (w *Writer) extra(it archive.Item, mod time.Time) error {
	files, err := w.opt.Extra(it)
	if err != nil {
		return fmt.Errorf("export: %s: %w", it.ID, err)
	}
	for _, x := range files {
		if !strings.HasPrefix(x.Suffix, ".") || strings.ContainsAny(x.Suffix, "/\\") {
			return fmt.Errorf("export: extra file suffix %q: want .NAME", x.Suffix)
		}
		rc, err := x.Open()
		if err != nil {
			return fmt.Errorf("export: %s%s: %w", it.ID, x.Suffix, err)
		}
		_, err = w.file(it.ID+x.Suffix, mod, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// file writes one named file into the directory or the zip, and its line
// of the MANIFEST.
func (w *Writer) file(name string, mod time.Time, r io.Reader) (int64, error) {
	h := sha256.New()
	var dst io.Writer
	var f *os.File
	if w.zw != nil {
		zh := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: mod}
		zf, err := w.zw.CreateHeader(zh)
		if err != nil {
			return 0, fmt.Errorf("export: %s: %w", name, err)
		}
		dst = zf
	} else {
		var err error
		f, err = os.OpenFile(filepath.Join(w.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			return 0, fmt.Errorf("export: %w", err)
		}
		dst = f
	}
	n, err := io.Copy(io.MultiWriter(dst, h), r)
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return n, fmt.Errorf("export: %s: %w", name, err)
	}
	if w.manifest != nil {
		if _, err := fmt.Fprintf(w.manifest, "%s %d %s\n", hex.EncodeToString(h.Sum(nil)), n, name); err != nil {
			return n, fmt.Errorf("export: %s: %w", ManifestName, err)
		}
	}
	return n, nil
}

func (w *Writer) trailer() error {
	if w.opt.Trailer == nil {
		return nil
	}
	files, err := w.opt.Trailer()
	if err != nil {
		return err
	}
	for _, x := range files {
		if x.Name == "" || x.Name == ManifestName || strings.ContainsAny(x.Name, "/\\") {
			return fmt.Errorf("export: trailer file name %q", x.Name)
		}
		rc, err := x.Open()
		if err != nil {
			return fmt.Errorf("export: %s: %w", x.Name, err)
		}
		_, err = w.file(x.Name, time.Now(), rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ManifestName is the file listing every exported file: one line
// "SHA256 SIZE NAME" each (lower-case hex, bytes), in export order.
const ManifestName = "MANIFEST"

// Close finishes the export.
func (w *Writer) Close() error {
	// A trailer that fails still lets the files be closed; the export is
	// reported incomplete.
	terr := w.trailer()
	var err error
	switch {
	case w.zw != nil:
		m := w.manifest
		w.manifest = nil // the MANIFEST does not list itself
		defer os.Remove(m.Name())
		defer m.Close()
		if _, err = m.Seek(0, io.SeekStart); err == nil {
			if _, err = w.file(ManifestName, time.Now(), m); err == nil {
				err = w.zw.Close()
			}
		}
	case w.dir != "":
		err = w.manifest.Sync()
		if cerr := w.manifest.Close(); err == nil {
			err = cerr
		}
	}
	if w.buf != nil {
		if ferr := w.buf.Flush(); err == nil {
			err = ferr
		}
	}
	if w.out != nil {
		if f, ok := w.out.(*os.File); ok {
			if serr := f.Sync(); err == nil {
				err = serr
			}
		}
		if cerr := w.out.Close(); err == nil {
			err = cerr
		}
	}
	if terr != nil {
		return terr
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// Items and Bytes say how much was exported.
func (w *Writer) Items() int   { return w.items }
func (w *Writer) Bytes() int64 { return w.bytes }
