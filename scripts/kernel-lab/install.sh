#!/usr/bin/env bash
# install.sh - install what the kernel lab (scripts/kernel-lab/run) needs on Debian 12.
#
# Idempotent: when everything is present it only verifies (well under a second).
# Progress goes to stderr; stdout stays empty. A piece that cannot be installed is an
# error that says what to do, never a silent skip.
#
# What it installs:
#   * a Debian 6.1 kernel, package linux-image-<kver>-unsigned from bookworm (or
#     bookworm-security), EXTRACTED into the cache (never installed as the host's
#     kernel), with depmod run on its module tree: it carries rbd.ko, nbd.ko, libceph.ko
#     and the virtio, 9p and overlay modules the guest boots with;
#   * qemu-system-x86 of exactly the host's qemu-utils version. qemu-utils from
#     <codename>-backports (this project's machines: 1:10.0.2~bpo12) gets
#     qemu-system-x86, qemu-system-common, qemu-system-data and seabios of the same
#     version from backports, downloaded with a private apt config in a scratch dir
#     (/etc/apt is never touched) and installed with `apt-get install /path/file.deb`.
#     A stock qemu-utils (or none) gets the stock qemu-system-x86;
#   * busybox-static (the initramfs), kmod (modprobe, depmod), nftables and udev: the
#     guest runs the host's root filesystem, so they must be on the host.
#
# Knobs:
#   KERNEL_LAB_CACHE=/var/cache/cephrbd/kernel-lab   where the kernel is extracted
#   KERNEL_LAB_KVER=6.1.0-NN-amd64                    kernel release to use (default: the
#                                                      newest bookworm 6.1 amd64 at the
#                                                      first install; kept afterwards)
set -euo pipefail

KLAB_PROG=kernel-lab/install
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        exit 0 ;;
    '') ;;
    *) klab_die "usage: install.sh (no arguments; knobs are environment variables)" ;;
esac

# root: apt, and the cache under /var/cache (run needs root anyway, for QEMU's export of /)
[ "$(id -u)" -eq 0 ] || klab_die "must run as root (sudo scripts/kernel-lab/install.sh)"
SUDO=()

export DEBIAN_FRONTEND=noninteractive
APT_INSTALL=(apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0)
KVER_WANTED=${KERNEL_LAB_KVER:-}
if [ -n "$KVER_WANTED" ] && ! [[ "$KVER_WANTED" =~ ^6\.1\.0-[0-9]+-amd64$ ]]; then
    klab_die "KERNEL_LAB_KVER must look like 6.1.0-57-amd64 (a bookworm amd64 kernel), not $KVER_WANTED"
fi

# --- helpers: scripts/lib/debian.sh (pkg_version, missing_pkgs, apt_update_once,
# mirror_from_sources) ------------------------------------------------------------
deb_log() { klab_log "$@"; }
deb_die() { klab_die "$@"; }
# shellcheck source=../lib/debian.sh
. "$HERE/../lib/debian.sh"

# A private apt configuration in a scratch dir: bookworm, bookworm-security and
# <codename>-backports, lists and cache inside the dir. /etc/apt is never read for
# sources nor written.
PRIV=""
PRIV_A=()
private_apt() {
    [ -n "$PRIV" ] && return 0
    local codename mirror security signed=()
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    mirror=$(mirror_from_sources '^(https?|ftp)://.*/debian/?$' http://deb.debian.org/debian)
    security=$(mirror_from_sources '^(https?|ftp)://.*/debian-security/?$' http://deb.debian.org/debian-security)
    PRIV=$(mktemp -d /tmp/cephrbd-kernel-lab-apt.XXXXXX)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf -- '$PRIV'" EXIT
    mkdir -p "$PRIV/lists/partial" "$PRIV/cache/archives/partial" "$PRIV/debs"
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
        signed=("[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]")
    {
        printf 'deb %s %s bookworm main\n' "${signed[*]}" "$mirror"
        printf 'deb %s %s bookworm-security main\n' "${signed[*]}" "$security"
        printf 'deb %s %s %s-backports main\n' "${signed[*]}" "$mirror" "$codename"
    } >"$PRIV/sources.list"
    PRIV_A=(-q -o Dpkg::Use-Pty=0
            -o "Dir::Etc::sourcelist=$PRIV/sources.list" -o "Dir::Etc::sourceparts=-"
            -o "Dir::State::Lists=$PRIV/lists" -o "Dir::Cache=$PRIV/cache"
            -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
            -o APT::Sandbox::User=root)
    klab_log "apt-get update with a private config ($mirror bookworm, $security bookworm-security, ${codename}-backports; in $PRIV)"
    "${SUDO[@]}" apt-get "${PRIV_A[@]}" update >&2 || klab_die "apt-get update (private config in $PRIV) failed"
}

# priv_download PKG[=VER]... -> into $PRIV/debs
priv_download() {
    (cd "$PRIV/debs" && "${SUDO[@]}" apt-get "${PRIV_A[@]}" download "$@" >&2)
}

strip_binnmu() { printf '%s' "${1%+b[0-9]*}"; }

qemu_ok() {
    local qu qs
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    qs=$(pkg_version qemu-system-x86)
    [ -n "$qs" ] || return 1
    qu=$(pkg_version qemu-utils)
    # no qemu-utils at all: any qemu-system-x86 does (install-deps.sh installs a matching one)
    [ -z "$qu" ] || [ "$(strip_binnmu "$qs")" = "$(strip_binnmu "$qu")" ]
}

# extract_vmlinux BZIMAGE OUT: the uncompressed ELF kernel inside Debian's bzImage (xz).
# QEMU boots it directly through its PVH entry point: that skips the firmware's kernel
# loading and the decompression, which take about 6 s under TCG.
extract_vmlinux() {
    local bz=$1 out=$2 off
    # shellcheck disable=SC2013 # one offset per line, no spaces
    for off in $(LC_ALL=C grep -abo $'\xfd7zXZ' "$bz" | cut -d: -f1); do
        # xz complains about the data after the stream: its status does not matter
        tail -c +$((off + 1)) "$bz" | xz -dc >"$out.tmp" 2>/dev/null || true
        if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
            mv -f -- "$out.tmp" "$out"
            return 0
        fi
    done
    rm -f -- "$out.tmp"
    return 1
}

kernel_ok() {
    local kdir kver m
    kdir=$(klab_kernel_dir)
    [ -n "$kdir" ] || return 1
    kver=$(klab_kver "$kdir")
    [ -z "$KVER_WANTED" ] || [ "$kver" = "$KVER_WANTED" ] || return 1
    [ -f "$kdir/boot/vmlinuz-$kver" ] && [ -f "$kdir/lib/modules/$kver/modules.dep.bin" ] || return 1
    if [ ! -f "$kdir/boot/vmlinux-$kver" ]; then
        klab_log "extracting the uncompressed kernel from $kdir/boot/vmlinuz-$kver"
        extract_vmlinux "$kdir/boot/vmlinuz-$kver" "$kdir/boot/vmlinux-$kver" ||
            klab_die "no xz-compressed ELF kernel found in $kdir/boot/vmlinuz-$kver"
    fi
    for m in "${KLAB_REQUIRED_MODULES[@]}"; do
        [ -n "$(klab_module_path "$kdir" "$kver" "$m")" ] || return 1
    done
}

# --- fast path -------------------------------------------------------------------------

MISSING=$(missing_pkgs "${KLAB_HOST_PKGS[@]}")
if [ -z "$MISSING" ] && qemu_ok && kernel_ok; then
    KDIR=$(klab_kernel_dir)
    klab_initramfs "$KDIR" >/dev/null
    klab_log "all present: kernel $(klab_kver "$KDIR"), qemu-system-x86 $(pkg_version qemu-system-x86)"
    exit 0
fi

# --- slow path: one installer at a time (concurrent runs of `run` all call install.sh) ---
mkdir -p "$KLAB_CACHE"
exec 9>>"$KLAB_CACHE/.install.lock"
flock -w 900 9 || klab_die "timed out waiting for $KLAB_CACHE/.install.lock (another install.sh)"
MISSING=$(missing_pkgs "${KLAB_HOST_PKGS[@]}")

# --- host packages ----------------------------------------------------------------------

if [ -n "$MISSING" ]; then
    # shellcheck disable=SC2086 # one package per line
    set -- $MISSING
    apt_update_once
    klab_log "installing: $*"
    "${SUDO[@]}" "${APT_INSTALL[@]}" "$@" >&2 || klab_die "apt-get install $* failed"
    MISSING=$(missing_pkgs "${KLAB_HOST_PKGS[@]}")
    [ -z "$MISSING" ] || klab_die "still missing after apt-get install: $(printf '%s' "$MISSING" | tr '\n' ' ')"
fi

# --- qemu-system-x86 ----------------------------------------------------------------------

if ! qemu_ok; then
    QU_VER=$(pkg_version qemu-utils)
    case "$QU_VER" in
        *bpo*)
            private_apt
            klab_log "qemu-utils $QU_VER is from backports: fetching qemu-system-x86 of the same version"
            if priv_download "qemu-system-x86=$QU_VER" "qemu-system-common=$QU_VER" \
                    "qemu-system-data=$QU_VER" "seabios/$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")-backports"; then
                :
            else
                klab_log "qemu-system-x86=$QU_VER is not on the mirror any more: fetching the current backports qemu (utils, block-extra and system) together"
                rm -f "$PRIV/debs"/*.deb
                bpo=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")-backports
                priv_download "qemu-utils/$bpo" "qemu-block-extra/$bpo" "qemu-system-x86/$bpo" \
                    "qemu-system-common/$bpo" "qemu-system-data/$bpo" "seabios/$bpo" ||
                    klab_die "could not download qemu-system-x86 from backports (private config in $PRIV)"
            fi
            debs=("$PRIV/debs"/*.deb)
            apt_update_once
            klab_log "installing ${debs[*]##*/}"
            "${SUDO[@]}" "${APT_INSTALL[@]}" "${debs[@]}" >&2 ||
                klab_die "apt-get install of ${debs[*]##*/} failed"
            ;;
        *)
            apt_update_once
            klab_log "installing the stock qemu-system-x86 (qemu-utils: ${QU_VER:-not installed})"
            "${SUDO[@]}" "${APT_INSTALL[@]}" qemu-system-x86 >&2 ||
                klab_die "apt-get install qemu-system-x86 failed"
            ;;
    esac
    qemu_ok || klab_die "qemu-system-x86 ($(pkg_version qemu-system-x86)) does not match qemu-utils ($(pkg_version qemu-utils)); install them from the same suite"
fi

# --- the kernel -----------------------------------------------------------------------------

if ! kernel_ok; then
    private_apt
    KVER=$KVER_WANTED
    if [ -z "$KVER" ]; then
        KVER=$(apt-cache "${PRIV_A[@]}" pkgnames linux-image-6.1.0- \
               | sed -n 's/^linux-image-\(6\.1\.0-[0-9]*-amd64\)-unsigned$/\1/p' | sort -V | tail -n1)
        [ -n "$KVER" ] || klab_die "no linux-image-6.1.0-*-amd64-unsigned package in bookworm / bookworm-security (private config in $PRIV)"
    fi
    PKG=linux-image-$KVER-unsigned
    klab_log "downloading $PKG"
    priv_download "$PKG" || klab_die "could not download $PKG (set KERNEL_LAB_KVER to a release the mirror has)"
    deb=$(ls "$PRIV/debs/${PKG}_"*.deb)
    KDIR=$KLAB_CACHE/kernel/$KVER
    mkdir -p "$KLAB_CACHE/kernel"
    rm -rf -- "$KDIR.tmp" "$KDIR"
    klab_log "extracting ${deb##*/} into $KDIR (not installed as the host's kernel)"
    dpkg-deb -x "$deb" "$KDIR.tmp" || klab_die "dpkg-deb -x $deb failed"
    [ -f "$KDIR.tmp/boot/vmlinuz-$KVER" ] || klab_die "$deb has no boot/vmlinuz-$KVER"
    depmod -b "$KDIR.tmp" "$KVER" || klab_die "depmod -b $KDIR.tmp $KVER failed"
    extract_vmlinux "$KDIR.tmp/boot/vmlinuz-$KVER" "$KDIR.tmp/boot/vmlinux-$KVER" ||
        klab_die "no xz-compressed ELF kernel found in ${deb##*/}"
    dpkg-deb -f "$deb" Package Version >"$KDIR.tmp/.complete.tmp"
    mv -- "$KDIR.tmp" "$KDIR"
    mv -- "$KDIR/.complete.tmp" "$KDIR/.complete"
    ln -sfn "kernel/$KVER" "$KLAB_CACHE/current.tmp"
    mv -T -- "$KLAB_CACHE/current.tmp" "$KLAB_CACHE/current"
    rm -f -- "$deb"
    for m in "${KLAB_REQUIRED_MODULES[@]}"; do
        [ -n "$(klab_module_path "$KDIR" "$KVER" "$m")" ] || klab_die "$PKG has no module $m"
    done
fi

# --- verification -----------------------------------------------------------------------------

kernel_ok || klab_die "the kernel in $KLAB_CACHE is incomplete: remove $KLAB_CACHE and run install.sh again"
KDIR=$(klab_kernel_dir)
for c in busybox modprobe depmod nft udevadm ip sysctl; do
    command -v "$c" >/dev/null 2>&1 || klab_die "$c not found in PATH after installation"
done
[ -x /lib/systemd/systemd-udevd ] || klab_die "/lib/systemd/systemd-udevd missing (package udev)"
klab_initramfs "$KDIR" >/dev/null
klab_log "done: kernel $(klab_kver "$KDIR") in $KDIR, qemu-system-x86 $(pkg_version qemu-system-x86)"
