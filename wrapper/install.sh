#!/bin/sh
# install.sh: install the archiver for Postfix's mailbox_command with the
# permission model of README.md, "archiver":
#
#   - a system user and group (default mailarchive) owns the archive;
#   - the archive root and its tmp/ are owned by it, mode 2750 (setgid, so
#     every file and directory made inside gets the archive group);
#   - the archiver binary is owned by it, mode 6755 (setuid and setgid): a
#     delivering user can add items, but cannot list, read, change or delete
#     any, and the archiver drops back to the user's own IDs before it runs
#     the delivery command.
#
# Usage (as root):
#   CGO_ENABLED=0 go build -trimpath -o archiver ./cmd/archiver
#   wrapper/install.sh --binary ./archiver [--user mailarchive]
#       [--archive-dir /var/spool/mailarchive] [--bindir /usr/local/bin]
#
# The archive directory is compiled into the binary (delivering users cannot
# choose it); for another one than the default, build with
#   -ldflags "-X github.com/postfix-archive/mailarchive/wrapper.DefaultArchiveDir=DIR"
#
# Idempotent: re-running it upgrades the binary and re-applies ownership and
# modes of the archive root and tmp/ (not of the items in it).
set -eu

user=mailarchive
dir=/var/spool/mailarchive
bindir=/usr/local/bin
binary=

usage() {
	sed -n '2,27s/^# \{0,1\}//p' "$0"
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--user) user=${2:?}; shift 2 ;;
	--archive-dir) dir=${2:?}; shift 2 ;;
	--bindir) bindir=${2:?}; shift 2 ;;
	--binary) binary=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (try --help)" ;;
	esac
done

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -n "$binary" ] || die "--binary FILE is required (CGO_ENABLED=0 go build -trimpath -o archiver ./cmd/archiver)"
[ -f "$binary" ] || die "$binary: no such file"
case $dir in /*) ;; *) die "--archive-dir must be absolute" ;; esac
# Delivering users cannot choose the archive (the archiver ignores their -d),
# so the binary's built-in default must be this directory.
if ! "$binary" --help | grep -qF "(default \"$dir\")"; then
	die "$binary was built for another archive directory than $dir; rebuild it with
  -ldflags \"-X github.com/postfix-archive/mailarchive/wrapper.DefaultArchiveDir=$dir\""
fi

# A set-ID binary should not depend on the dynamic loader, and glibc would
# strip variables such as TMPDIR from the delivery command's environment.
if grep -qa 'ld-linux' "$binary"; then
	echo "install.sh: warning: $binary is dynamically linked; build it with CGO_ENABLED=0" >&2
fi

if ! getent passwd "$user" >/dev/null; then
	nologin=$(command -v nologin || echo /bin/false)
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell "$nologin" --comment "mail archive owner" "$user"
	echo "install.sh: created system user $user"
fi
group=$(id -gn "$user")

# The archive: owner only; the group (auditors you add to it) may read.
for d in "$dir" "$dir/tmp"; do
	mkdir -p "$d"
	chown "$user:$group" "$d"
	chmod 2750 "$d"
done

# The binary: chown clears set-ID bits, so chmod comes after it; rename puts
# the new binary in place atomically.
mkdir -p "$bindir"
tmp="$bindir/.archiver.install.$$"
trap 'rm -f "$tmp"' EXIT
cp "$binary" "$tmp"
chown "$user:$group" "$tmp"
chmod 6755 "$tmp"
mv -f "$tmp" "$bindir/archiver"
trap - EXIT

if findmnt -n -o OPTIONS -T "$bindir" 2>/dev/null | grep -qw nosuid; then
	echo "install.sh: warning: $bindir is on a nosuid filesystem; the archiver will run without the archive owner's rights" >&2
fi
echo "install.sh: installed $bindir/archiver (owner $user:$group, mode 6755), archive $dir (mode 2750)"
