package filer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/postfix-archive/mailarchive/archive"
	"golang.org/x/sys/unix"
)

// fsOps are the filesystem operations the filer performs, so tests can
// inject failures (EXDEV, crashes between steps).
type fsOps struct {
	// rename moves old to new without ever replacing new: it fails with
	// EEXIST when new exists, and with EXDEV across filesystems.
	rename  func(oldpath, newpath string) error
	remove  func(name string) error
	syncDir func(dir string) error
}

var osOps = fsOps{
	rename:  renameNoReplace,
	remove:  os.Remove,
	syncDir: archive.SyncDir,
}

// renameNoReplace is rename(2) that never replaces the target:
// renameat2(RENAME_NOREPLACE), atomic. Where the kernel or the filesystem
// lacks it, it falls back to a check then a rename; that leaves a window in
// which a file created at newpath by someone else is replaced, but within an
// archive only a filer creates files in the dated tree, and filers of one
// root exclude each other with the lock.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
	}
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EEXIST}
	}
	return os.Rename(oldpath, newpath)
}

// copyNoReplace copies src to dst on another filesystem without ever
// replacing dst: it writes a temporary file beside dst (created with
// O_EXCL), fsyncs it, and renames it into place with renameNoReplace, so a
// crash never leaves a partial file under the item's name (which the next
// run would take for a conflicting item). The source is left in place: the
// caller removes it once the destination directory is synced.
func (o fsOps) copyNoReplace(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), ".filer-"+filepath.Base(dst)+".part")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if errors.Is(err, os.ErrExist) {
		// Left by a filer that crashed mid-copy; only filers of this
		// root write such names, and they hold the lock.
		os.Remove(tmp)
		out, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	}
	if err != nil {
		return err
	}
	fail := func(err error) error {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Chmod(fi.Mode().Perm()); err != nil { // despite the umask
		return fail(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		return fail(err)
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := o.rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// sameContent reports whether two files hold the same bytes.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	if os.SameFile(sa, sb) {
		return true, nil
	}
	if sa.Size() != sb.Size() {
		return false, nil
	}
	ba := make([]byte, 64<<10)
	bb := make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		aEOF := ea == io.EOF || ea == io.ErrUnexpectedEOF
		bEOF := eb == io.EOF || eb == io.ErrUnexpectedEOF
		switch {
		case aEOF && bEOF:
			return true, nil
		case ea != nil && !aEOF:
			return false, fmt.Errorf("read %s: %w", a, ea)
		case eb != nil && !bEOF:
			return false, fmt.Errorf("read %s: %w", b, eb)
		case aEOF != bEOF:
			return false, nil
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
