#!/usr/bin/env bash
# mkimages.sh builds the realistic OS image pairs for the delta benchmark
# (`hil bench delta`) into one OCI image layout:
#
#   old           debootstrap --variant=minbase of Debian bookworm (the point
#                 release on deb.debian.org, no security or -updates packages)
#                 plus a few packages of a flight computer's OS, one layer
#   new           a copy of old's root upgraded with bookworm-security and
#                 bookworm-updates (apt-get upgrade in a chroot), one layer;
#                 files the upgrade does not touch keep their timestamps
#   new-layered   old's layer plus one layer holding what the upgrade changed
#   new-big       new plus several more packages (a larger change), one layer
#
# Usage (as root; needs debootstrap, umoci, and deb.debian.org):
#   hil/deltabench/mkimages.sh [OUTDIR]        (default: testdata-gen)
# The layout is OUTDIR/oci; work trees and the debootstrap cache stay in
# OUTDIR/work so that a second run reuses every finished step. The script
# prints the images it built with their sizes and the packages updated
# (also written to OUTDIR/updated-packages.txt).
set -euo pipefail

OUT=${1:-testdata-gen}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
INCLUDE=${INCLUDE:-openssh-server,curl,ca-certificates,systemd,systemd-sysv,iproute2,python3-minimal,libssl3,openssl,kmod,udev,less}
BIG_EXTRA=${BIG_EXTRA:-python3 git vim-nox tcpdump strace rsync gdb}

die() { echo "mkimages: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, umoci unpack with ownership)"
for t in debootstrap umoci chroot mount; do
	command -v "$t" >/dev/null || die "$t not installed"
done

mkdir -p "$OUT/work"
OUT=$(cd "$OUT" && pwd)
# The root trees hold Go sources (git's contrib, for one); a go.mod here makes
# OUTDIR a module of its own, so the repository's `go test ./...` and
# `go vet ./...` do not walk into it.
[ -e "$OUT/go.mod" ] || printf 'module bootorbit.invalid/testdata-gen\n' >"$OUT/go.mod"
W=$OUT/work
L=$OUT/oci
log() { printf '== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

MOUNTED=()
cleanup() {
	for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

# in_chroot ROOT CMD...: runs CMD in ROOT with /proc mounted, services kept
# from starting, and the host's resolver.
in_chroot() {
	local r=$1; shift
	mountpoint -q "$r/proc" || { mount -t proc proc "$r/proc"; MOUNTED+=("$r/proc"); }
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod 755 "$r/usr/sbin/policy-rc.d"
	cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
	local rc=0
	DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 chroot "$r" "$@" || rc=$?
	rm -f "$r/usr/sbin/policy-rc.d"
	umount "$r/proc" || true
	return $rc
}

# clean_root ROOT: drops what apt downloaded, so images hold installed files only.
clean_root() {
	local r=$1
	rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
	mkdir -p "$r/var/lib/apt/lists/partial"
}

pkglist() { chroot "$1" dpkg-query -W -f '${Package} ${Version}\n' | sort; }

APT_OPTS=(-y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef -o APT::Install-Recommends=false)

# 1. old: debootstrap without updates.
if [ ! -e "$W/old.done" ]; then
	log "debootstrap $SUITE (minbase + $INCLUDE) into $W/old"
	rm -rf "$W/old"
	mkdir -p "$W/debs"
	debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$W/debs" "$SUITE" "$W/old" "$MIRROR" >"$W/debootstrap.log" 2>&1 ||
		{ tail -30 "$W/debootstrap.log"; die "debootstrap failed (log: $W/debootstrap.log)"; }
	echo "deb $MIRROR $SUITE main" >"$W/old/etc/apt/sources.list"
	clean_root "$W/old"
	touch "$W/old.done"
fi

# 2. new: a copy of old, upgraded in place so unchanged files keep their
# timestamps (two debootstrap runs differ in hundreds of them).
if [ ! -e "$W/new.done" ]; then
	log "copy old to new and apt-get upgrade with $SUITE-security and $SUITE-updates"
	rm -rf "$W/new"
	cp -a "$W/old" "$W/new"
	cat >"$W/new/etc/apt/sources.list" <<-SRC
		deb $MIRROR $SUITE main
		deb $MIRROR $SUITE-updates main
		deb $SECURITY_MIRROR $SUITE-security main
	SRC
	in_chroot "$W/new" apt-get -q update >"$W/upgrade.log" 2>&1 || { tail -20 "$W/upgrade.log"; die "apt-get update in chroot failed"; }
	in_chroot "$W/new" apt-get "${APT_OPTS[@]}" upgrade >>"$W/upgrade.log" 2>&1 || { tail -30 "$W/upgrade.log"; die "apt-get upgrade in chroot failed (log: $W/upgrade.log)"; }
	clean_root "$W/new"
	diff <(pkglist "$W/old") <(pkglist "$W/new") | sed -n 's/^> //p' >"$OUT/updated-packages.txt" || true
	touch "$W/new.done"
fi

# 3. new-big: new plus more packages.
if [ ! -e "$W/big.done" ]; then
	log "copy new to big and install $BIG_EXTRA"
	rm -rf "$W/big"
	cp -a "$W/new" "$W/big"
	in_chroot "$W/big" apt-get -q update >"$W/big.log" 2>&1 || { tail -20 "$W/big.log"; die "apt-get update in chroot failed"; }
	# shellcheck disable=SC2086
	in_chroot "$W/big" apt-get "${APT_OPTS[@]}" install $BIG_EXTRA >>"$W/big.log" 2>&1 || { tail -30 "$W/big.log"; die "apt-get install in chroot failed (log: $W/big.log)"; }
	clean_root "$W/big"
	touch "$W/big.done"
fi

# pack TAG ROOT [BASE_TAG]: makes TAG from ROOT, as one layer on an empty
# image, or as one layer on top of BASE_TAG holding the differences.
pack() {
	local tag=$1 root=$2 base=${3:-}
	local b="$W/bundle-$tag"
	[ -e "$W/pack-$tag.done" ] && return 0
	log "umoci: pack $tag${base:+ on $base}"
	rm -rf "$b"
	if [ -z "$base" ]; then
		umoci new --image "$L:$tag"
		umoci unpack --image "$L:$tag" "$b" >/dev/null
	else
		umoci unpack --image "$L:$base" "$b" >/dev/null
		find "$b/rootfs" -mindepth 1 -delete
	fi
	cp -a "$root/." "$b/rootfs/"
	umoci repack --history.comment "mkimages $tag" --image "$L:$tag" "$b"
	rm -rf "$b"
	touch "$W/pack-$tag.done"
}

if [ ! -e "$L/index.json" ]; then
	rm -f "$W"/pack-*.done
	umoci init --layout "$L"
fi
pack old "$W/old"
pack new "$W/new"
pack new-big "$W/big"
pack new-layered "$W/new" old
umoci gc --layout "$L"

# Report.
python3 - "$L" "$OUT/updated-packages.txt" <<'PY'
import json, os, sys
lay, upd = sys.argv[1], sys.argv[2]
blob = lambda d: os.path.join(lay, "blobs", *d.split(":", 1))
idx = json.load(open(os.path.join(lay, "index.json")))
print("layout %s" % lay)
for m in idx["manifests"]:
    tag = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "?")
    man = json.load(open(blob(m["digest"])))
    sizes = [l["size"] for l in man["layers"]]
    print("  %-12s %s  %d layer(s): %s (compressed)" % (tag, m["digest"][:19], len(sizes),
          " + ".join("%.1f MB" % (s / 1e6) for s in sizes)))
pk = [l.split()[0] for l in open(upd) if l.strip()]
print("packages updated by bookworm-security/-updates (%d): %s" % (len(pk), " ".join(pk)))
PY
