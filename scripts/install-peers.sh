#!/usr/bin/env bash
# install-peers.sh: install the real programs the end-to-end tests talk to,
# when they are missing: Postfix, swaks, miltertest, socat, python3, notmuch
# (the read side's differential search test) and versitygw (built with go
# install into a cache directory, see below).
# "install-peers.sh versitygw" does only the versitygw step.
#
# Idempotent: when everything is present it does nothing and touches no
# package database. Otherwise it runs "apt-get update" once and installs only
# what is missing. Postfix is preseeded with the debconf answer
# "No configuration", which writes no /etc/postfix/main.cf, so no system-wide
# Postfix instance is configured or started: the tests run their own private
# instances (internal/postfixtest).
#
# Needs root (or sudo) only when something has to be installed.
# Debian/Ubuntu only (apt-get).
set -euo pipefail

# program to check -> Debian package that provides it
declare -A want=(
	[/usr/sbin/postfix]=postfix
	[/usr/sbin/sendmail]=postfix
	[/usr/sbin/postqueue]=postfix
	[swaks]=swaks
	[miltertest]=miltertest
	[socat]=socat
	[python3]=python3
	[script]=bsdutils
	[notmuch]=notmuch
)

have() {
	case "$1" in
	/*) [ -x "$1" ] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

# versitygw (the S3 gateway the object-store tests run on loopback) is not a
# Debian package: build it once with the Go toolchain into a cache outside the
# clone and reuse it. The tests look for it there (objstore/s3test). The build
# takes minutes of CPU, so it happens only when the binary is missing or is
# not the pinned version.
VERSITYGW_VERSION=v1.8.0
PEER_BIN=${MAILARCHIVE_PEER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/mailarchive-peers/bin}
install_versitygw() {
	local stamp="$PEER_BIN/versitygw.version"
	if [ -x "$PEER_BIN/versitygw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSITYGW_VERSION" ]; then
		echo "install-peers: versitygw $VERSITYGW_VERSION present in $PEER_BIN"
		return 0
	fi
	if ! command -v go >/dev/null 2>&1; then
		echo "install-peers: go not found; cannot build versitygw" >&2
		return 1
	fi
	mkdir -p "$PEER_BIN"
	echo "install-peers: building versitygw $VERSITYGW_VERSION into $PEER_BIN (takes a few minutes)"
	# Outside any module so the project's go.mod does not constrain it.
	(cd / && CGO_ENABLED=0 GOBIN="$PEER_BIN" GOFLAGS=-buildvcs=false \
		go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
	echo "$VERSITYGW_VERSION" >"$stamp"
}
if [ "${1-}" = versitygw ]; then
	install_versitygw
	exit $?
fi
install_versitygw

missing=()
for prog in "${!want[@]}"; do
	if ! have "$prog"; then
		pkg=${want[$prog]}
		case " ${missing[*]-} " in
		*" $pkg "*) ;;
		*) missing+=("$pkg") ;;
		esac
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-peers: all peers present (postfix, swaks, miltertest, socat, python3, notmuch)"
	exit 0
fi

echo "install-peers: missing packages: ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-peers: apt-get not found; install these packages by hand: ${missing[*]}" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo=(sudo -n)
	else
		echo "install-peers: not root and no password-less sudo; run as root:" >&2
		echo "  sudo $0" >&2
		echo "  (or: apt-get install ${missing[*]})" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive

for pkg in "${missing[@]}"; do
	if [ "$pkg" = postfix ]; then
		# No system instance: see the header comment.
		echo "postfix postfix/main_mailer_type select No configuration" |
			"${sudo[@]}" debconf-set-selections
	fi
done

"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}"

# Verify: a package that installed but did not provide the program is an error.
failed=()
for prog in "${!want[@]}"; do
	have "$prog" || failed+=("$prog")
done
if [ ${#failed[@]} -ne 0 ]; then
	echo "install-peers: still missing after install: ${failed[*]}" >&2
	exit 1
fi
echo "install-peers: installed ${missing[*]}"
