#!/usr/bin/env bash
# fetch-kernel.sh [OUTDIR]: fetch Debian's arm64 kernel package for the
# virtual board (hil/vm) and extract it into OUTDIR (default: _kernel-cache
# beside this script, git-ignored): OUTDIR/boot/vmlinuz-VERSION and
# OUTDIR/lib/modules/VERSION.
#
# It uses apt with a private state directory that knows only arm64, so the
# host's dpkg is left alone (no dpkg --add-architecture) and the host's
# package lists are not touched. The sources are the host's own (Debian).
# Idempotent: a complete OUTDIR (stamp file .complete) is left as it is;
# a half-done one is replaced. Needs apt-get, apt-cache, dpkg-deb and
# timeout (coreutils). It never hangs: every apt step is bounded by
# BOOTORBIT_VM_FETCH_TIMEOUT seconds (default 600), and a mirror that stops
# sending fails a transfer after 30 s (3 retries); an update that fetched
# no package index fails with a message saying so.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/_kernel-cache}
pkg=${BOOTORBIT_VM_KERNEL_PKG:-linux-image-arm64}

case "$out" in "" | / | "$HOME") echo "fetch-kernel: refusing OUTDIR '$out'" >&2; exit 2 ;; esac
mkdir -p "$(dirname "$out")"

if [ -f "$out/.complete" ] && ls "$out"/boot/vmlinuz-* >/dev/null 2>&1; then
	echo "fetch-kernel: $out already holds $(cat "$out/.complete")"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bootorbit-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb" "$work/root"
touch "$work/status"
# apt's sandbox user must be able to write the download directory.
chmod 755 "$work" "$work/deb"
if id _apt >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then chown _apt "$work/deb" "$work/lists/partial" "$work/cache/archives/partial"; fi
apt=(-o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Dir::State::status="$work/status"
	-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
	-o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30 -o Acquire::Retries=3)
limit=${BOOTORBIT_VM_FETCH_TIMEOUT:-600}

# bounded CMD...: run CMD under the time limit; a step that overruns is
# killed and named.
bounded() {
	local rc=0
	timeout --kill-after=10 "$limit" "$@" || rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "fetch-kernel: $1 ${*: -1} did not finish in $limit s (mirror unreachable or too slow? BOOTORBIT_VM_FETCH_TIMEOUT)" >&2
	fi
	return "$rc"
}

bounded apt-get "${apt[@]}" -qq update
if ! ls "$work"/lists/*_Packages* >/dev/null 2>&1; then
	echo "fetch-kernel: apt-get update fetched no arm64 package index from the host's sources (mirror unreachable? see the warnings above)" >&2
	exit 1
fi
# linux-image-arm64 is a metapackage; the kernel is the package it depends on.
deps=$(bounded apt-cache "${apt[@]}" depends "$pkg")
real=$(awk '/Depends: linux-image-[0-9]/ {print $2; exit}' <<<"$deps")
[ -n "$real" ] || real=$pkg
(cd "$work/deb" && bounded apt-get "${apt[@]}" -qq download "$real:arm64")
deb=$(ls "$work"/deb/*.deb)
dpkg-deb -x "$deb" "$work/root"
ls "$work"/root/boot/vmlinuz-* >/dev/null

# Swap in the complete tree: a failed fetch never leaves a half tree that
# looks complete.
rm -rf "$out.tmp"
mv "$work/root" "$out.tmp"
basename "$deb" >"$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "fetch-kernel: $out holds $(cat "$out/.complete")"
