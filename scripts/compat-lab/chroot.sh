#!/usr/bin/env bash
# chroot.sh SUITE - build (once) and print the root of a Debian chroot holding another
# generation of Ceph, for the compatibility labs:
#
#   bullseye  ceph-common 14.2 (Nautilus): the client generation of XCP-ng 8.2/8.3 dom0
#   trixie    ceph-common, ceph-mon, ceph-mgr, ceph-osd 18.2 (Reef)
#   forky     ceph-common, ceph-mon, ceph-mgr, ceph-osd 20.2 (Tentacle)
#
# stdout: ONLY the chroot's root directory. Progress: stderr.
#
# The chroot is `debootstrap --variant=minbase` from the machine's own Debian mirror (as
# scripts/ceph-lab/install-deps.sh finds it), then apt-get inside the chroot, whose apt
# configuration is its own: /etc/apt of the host is never read or changed. debootstrap
# itself is installed if missing. Daemons are kept from starting at install time
# (policy-rc.d), documentation is not unpacked, the .deb files are removed afterwards.
#
# Cached in ${CEPHRBD_CHROOT_CACHE:-/var/cache/cephrbd/chroots}/SUITE. A marker written
# last (SUITE/.cephrbd-chroot: recipe, package versions) tells a complete chroot from an
# interrupted build, which is wiped and redone. With the marker present the script only
# checks it (a few ms). Concurrent runs for one suite are serialised (flock).
#
# Run commands inside with scripts/compat-lab/run.sh SUITE -- COMMAND...
#
# Knobs (environment):
#   CEPHRBD_CHROOT_CACHE=/var/cache/cephrbd/chroots   where chroots live
#   CEPHRBD_CHROOT_FRESH=1                            wipe and rebuild
#   CEPHRBD_DEBIAN_MIRROR=URL                         mirror (default: the machine's)
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
COMPAT_PROG=compat-chroot
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

T0=$(date +%s%N)
elapsed() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '%d.%01d s' $((ms / 1000)) $((ms % 1000 / 100)); }

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        exit 0 ;;
esac
[ "$#" -eq 1 ] || compat_die "usage: chroot.sh bullseye|trixie|forky"
SUITE=$1
PACKAGES=$(compat_suite_packages "$SUITE") || compat_die "unknown suite $SUITE (bullseye, trixie or forky)"
RELEASE=$(compat_suite_release "$SUITE")
ROOT=$(compat_root "$SUITE")
MARKER=$ROOT/$COMPAT_MARKER

# --- fast path ---------------------------------------------------------------------------
if [ "${CEPHRBD_CHROOT_FRESH:-0}" != 1 ] && compat_ready "$SUITE"; then
    compat_log "$SUITE chroot ready in $ROOT ($(sed -n 2p "$MARKER"))"
    printf '%s\n' "$ROOT"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || compat_die "must run as root (debootstrap, chroot), and sudo is not available"
    exec sudo -E "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

mkdir -p -- "$COMPAT_CACHE"
exec 9>>"$COMPAT_CACHE/$SUITE.lock" || compat_die "cannot open $COMPAT_CACHE/$SUITE.lock"
if ! flock -n 9; then
    compat_log "waiting for another build of the $SUITE chroot"
    flock -w "${CEPHRBD_CHROOT_LOCK_TIMEOUT:-1800}" 9 || compat_die "timed out waiting for $COMPAT_CACHE/$SUITE.lock"
fi
if [ "${CEPHRBD_CHROOT_FRESH:-0}" != 1 ] && compat_ready "$SUITE"; then
    compat_log "$SUITE chroot built meanwhile by another run: $ROOT"
    printf '%s\n' "$ROOT"
    exit 0
fi

# --- tools ---------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
    compat_log "installing debootstrap"
    apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 debootstrap >&2 || {
        apt-get update -q -o Dpkg::Use-Pty=0 >&2 || compat_die "apt-get update failed"
        apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 debootstrap >&2 ||
            compat_die "apt-get install debootstrap failed"
    }
fi
# debootstrap knows a suite by a script named after it; a newer testing suite (forky on
# a Debian 12 debootstrap) is built with the script of sid, which fits every new suite.
SCRIPT=/usr/share/debootstrap/scripts/$SUITE
[ -e "$SCRIPT" ] || SCRIPT=/usr/share/debootstrap/scripts/sid
[ -e "$SCRIPT" ] || compat_die "debootstrap has no script for $SUITE (nor sid)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || compat_die "$KEYRING is missing (package debian-archive-keyring)"
MIRROR=${CEPHRBD_DEBIAN_MIRROR:-$(debian_mirror)}

# --- wipe a partial or stale chroot ------------------------------------------------------
if [ -e "$ROOT" ]; then
    # Mounts are only ever made in run.sh's private namespaces; refuse if the host has
    # one under ROOT anyway (rm -rf would descend into it).
    if awk -v r="$ROOT/" '{ if (index($5 "/", r) == 1) found = 1 } END { exit !found }' /proc/self/mountinfo; then
        compat_die "something is mounted under $ROOT on the host: unmount it first"
    fi
    compat_log "wiping $ROOT (incomplete, stale or CEPHRBD_CHROOT_FRESH=1)"
    rm -rf --one-file-system -- "$ROOT"
fi

# --- build -----------------------------------------------------------------------------------
compat_log "debootstrap $SUITE (minbase) from $MIRROR into $ROOT"
mkdir -p -- "$ROOT"
debootstrap --variant=minbase --keyring="$KEYRING" "$SUITE" "$ROOT" "$MIRROR" "$SCRIPT" >&2 ||
    compat_die "debootstrap $SUITE failed (log: $ROOT/debootstrap/debootstrap.log)"
compat_log "debootstrap done ($(elapsed))"

# Inside the chroot: its own sources, no daemons started by maintainer scripts, no docs.
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOT/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-cephrbd-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$ROOT/etc/apt/apt.conf.d/01-cephrbd" <<'EOF'
APT::Install-Recommends "0";
APT::Install-Suggests "0";
Acquire::Retries "3";
Dpkg::Use-Pty "0";
// A testing suite's Release expires within days: a mirror snapshot (or a lab clock
// ahead of the mirror) would otherwise refuse it. Signatures are still checked.
Acquire::Check-Valid-Until "false";
EOF
[ -f /etc/resolv.conf ] && cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

IN=("$HERE/run.sh" "$ROOT" env PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C)
compat_log "apt-get install $PACKAGES (inside the chroot)"
"${IN[@]}" apt-get -q update >&2 || compat_die "apt-get update in the $SUITE chroot failed"
# shellcheck disable=SC2086 # one word per package
"${IN[@]}" apt-get -q -y install $PACKAGES >&2 || compat_die "apt-get install $PACKAGES in the $SUITE chroot failed"
"${IN[@]}" apt-get clean >&2
rm -rf -- "$ROOT/var/lib/apt/lists/"*_Packages* "$ROOT/var/lib/apt/lists/"*_Translation* 2>/dev/null || true

# --- check and mark complete ------------------------------------------------------------------
VERSIONS=""
# shellcheck disable=SC2086
for p in $PACKAGES; do
    v=$("${IN[@]}" dpkg-query -W -f='${Version}' "$p" 2>/dev/null) || compat_die "$p is not installed in the chroot"
    VERSIONS+="$p=$v "
done
RBD_VERSION=$("${IN[@]}" rbd --version 2>/dev/null) || compat_die "rbd does not run in the $SUITE chroot"
case "$RBD_VERSION" in
    "ceph version $RELEASE."*) ;;
    *) compat_die "$SUITE carries '$RBD_VERSION', not Ceph $RELEASE: update compat_suite_release in scripts/compat-lab/lib.sh" ;;
esac
{
    compat_recipe "$SUITE"
    printf '\n%s\n%s\nbuilt %s from %s in %s\n' "${VERSIONS% }" "$RBD_VERSION" "$(date -Is)" "$MIRROR" "$(elapsed)"
} >"$MARKER.tmp"
mv -f -- "$MARKER.tmp" "$MARKER"
compat_log "$SUITE chroot ready in $(elapsed): $RBD_VERSION; $(du -sh --one-file-system "$ROOT" | cut -f1) in $ROOT"
printf '%s\n' "$ROOT"
