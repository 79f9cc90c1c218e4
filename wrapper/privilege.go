package wrapper

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// creds are the process's user and group IDs at start. Installed setuid and
// setgid mailarchive (README.md, "archiver", install.sh), the archiver runs with
// the real IDs of the delivering user and the effective IDs of the archive's
// owner: it writes the item as the owner, then drops to the real IDs for
// good before COMMAND starts.
type creds struct {
	ruid, euid int
	rgid, egid int
}

func currentCreds() creds {
	return creds{
		ruid: syscall.Getuid(), euid: syscall.Geteuid(),
		rgid: syscall.Getgid(), egid: syscall.Getegid(),
	}
}

// privileged reports whether the process runs with IDs its caller does not
// have: installed setuid (or setgid).
func (c creds) privileged() bool { return c.ruid != c.euid || c.rgid != c.egid }

// checkArchiveDir refuses a caller's --archive-dir while privileged: an
// unprivileged caller must not make the archive owner create directories
// and files wherever it can write. Root may choose any directory.
func (c creds) checkArchiveDir(cfg config) error {
	if !c.privileged() || c.ruid == 0 || !cfg.archiveDirSet {
		return nil
	}
	if filepath.Clean(cfg.archiveDir) == DefaultArchiveDir {
		return nil
	}
	return fmt.Errorf("--archive-dir may only be changed by root when the archiver runs setuid (uid %d, euid %d)", c.ruid, c.euid)
}

// hygiene prepares a privileged process: files and directories it creates
// must not be widened by the caller's umask. The store sets item modes
// explicitly; this covers directories it may create.
func (c creds) hygiene() {
	syscall.Umask(0o027)
}

// drop gives up the borrowed IDs for good: real, effective and saved IDs all
// become the real ones. syscall.Setresuid applies to every thread of the
// process (Go >= 1.16). The caller's supplementary groups were never changed
// (a setuid program keeps them), so they are kept as they are: COMMAND runs
// with exactly the credentials Postfix gave the archiver.
func (c creds) drop() error {
	if !c.privileged() {
		return nil
	}
	if err := syscall.Setresgid(c.rgid, c.rgid, c.rgid); err != nil {
		return fmt.Errorf("setresgid(%d): %w", c.rgid, err)
	}
	if err := syscall.Setresuid(c.ruid, c.ruid, c.ruid); err != nil {
		return fmt.Errorf("setresuid(%d): %w", c.ruid, err)
	}
	if syscall.Geteuid() != c.ruid || syscall.Getuid() != c.ruid ||
		syscall.Getegid() != c.rgid || syscall.Getgid() != c.rgid {
		return errors.New("IDs unchanged after setresuid")
	}
	// Paranoia: the saved ID must be gone too. Root can always switch back,
	// so the check means something only for other callers.
	if c.ruid != 0 && c.euid != c.ruid {
		if err := syscall.Setresuid(-1, c.euid, -1); err == nil {
			return fmt.Errorf("could switch back to euid %d after dropping it", c.euid)
		}
	}
	return nil
}
