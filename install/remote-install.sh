#!/bin/bash
# Install CanBridge on a GX device from a PC, in one command:
#
#   install/remote-install.sh [--bundle FILE] [--user USER] [--port N] <gx-address> [installer options]
#
# e.g.  install/remote-install.sh 192.168.1.50
#       install/remote-install.sh venus.local --services superb,sma,web --sma-port can1
#       install/remote-install.sh 192.168.1.50 --uninstall
#
# The release bundle (default: the newest dist/canbridge-*.tar.gz next to this checkout, or the
# bundle this script is part of) is checked against its .sha256 file, streamed to the GX over
# one ssh connection (one password prompt), unpacked in a temporary directory under /data,
# installed with install/install.sh and the options given, and the temporary directory removed.
# The GX needs SSH access: Settings > General > Access & Security (Venus 3.70+; Settings > General
# before): access level "Superuser", a root password, "SSH on LAN" on.
set -euo pipefail

SSH=${CANBRIDGE_SSH:-ssh}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")

die() { printf 'remote-install: %s\n' "$*" >&2; exit 1; }

BUNDLE=""
USER_NAME=root
PORT=22
while [ $# -gt 0 ]; do
    case $1 in
        --bundle) BUNDLE=${2:?--bundle needs a file}; shift ;;
        --user) USER_NAME=${2:?--user needs a name}; shift ;;
        --port) PORT=${2:?--port needs a number}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
                     exit 0 ;;
        -*) die "unknown option '$1' before the GX address (see --help)" ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] || die "which GX? usage: remote-install.sh [--bundle FILE] <gx-address> [installer options]"
GX=$1
shift

TMP=""
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT

if [ -z "$BUNDLE" ]; then
    if [ -f "$TOP/SHA256SUMS" ] && [ -f "$TOP/VERSION" ]; then
        # running from an unpacked bundle: pack it up again
        TMP=$(mktemp -d)
        BUNDLE=$TMP/$(basename "$TOP").tar.gz
        tar czf "$BUNDLE" -C "$(dirname "$TOP")" "$(basename "$TOP")"
    else
        BUNDLE=$(find "$TOP/dist" -maxdepth 1 -name 'canbridge-*.tar.gz' ! -name '*-novendor.tar.gz' \
            2>/dev/null | sort -V | tail -n 1)
        [ -n "$BUNDLE" ] || die "no release bundle in $TOP/dist: run 'make dist' first, or give --bundle"
    fi
fi
[ -f "$BUNDLE" ] || die "$BUNDLE not found"
if [ -f "$BUNDLE.sha256" ]; then
    (cd "$(dirname "$BUNDLE")" && sha256sum -c "$(basename "$BUNDLE").sha256" >/dev/null) ||
        die "$BUNDLE does not match $BUNDLE.sha256"
fi

args=""
for a in "$@"; do args="$args $(printf '%q' "$a")"; done
# Runs on the GX. (CANBRIDGE_ROOT only exists in the tests' simulated GX.)
# shellcheck disable=SC2016
remote='set -e
d=$(mktemp -d "${CANBRIDGE_ROOT:-}/data/.canbridge-install.XXXXXX")
trap "rm -rf \"$d\"" EXIT
tar xzf - -C "$d"
set -- "$d"/canbridge-*/install/install.sh
bash "$1"'"$args"

echo "remote-install: installing $(basename "$BUNDLE") on $USER_NAME@$GX"
"$SSH" -p "$PORT" -o ConnectTimeout=15 "$USER_NAME@$GX" "$remote" <"$BUNDLE"
