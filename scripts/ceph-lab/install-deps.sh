#!/usr/bin/env bash
# install-deps.sh - install everything the Ceph RBD lab tests need on Debian 12.
#
# Idempotent: when every package is already installed, the qemu rbd block
# driver loads and the rust components exist, it only verifies and exits
# (well under a second). Progress goes to stderr; stdout stays empty.
#
# qemu (see docs/ceph-lab.md, "The qemu rbd-module version trap"):
#   * qemu-utils from <codename>-backports installed (1:10.x, "~bpo" version):
#     download the qemu-block-extra of EXACTLY that version from backports with
#     a private apt config in a scratch dir (/etc/apt is never touched) and
#     install it with `apt-get install /path/file.deb`.
#   * no qemu-utils, or a stock one: install stock
#     qemu-utils qemu-block-extra qemu-system-common (qemu-storage-daemon is in
#     qemu-system-common in Debian 12).
#
# Knobs:
#   CEPH_LAB_EXTRA_PKGS  extra Debian packages to install (space-separated)
#   CEPH_LAB_NO_RUST=1   skip the rustfmt/clippy check
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }
deb_log() { log "$@"; }
deb_die() { die "$@"; }
# shellcheck source=../lib/debian.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/debian.sh"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "must run as root (and sudo is not available)"
fi

export DEBIAN_FRONTEND=noninteractive
APT_INSTALL=(apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0)

# python3-rbd/python3-rados: the bindings only work with /usr/bin/python3.
BASE_PKGS=(ceph-mon ceph-mgr ceph-osd ceph-common rbd-nbd python3 python3-rbd python3-rados
           fio jq coreutils util-linux procps)
# shellcheck disable=SC2206 # word splitting is intended
[ -n "${CEPH_LAB_EXTRA_PKGS:-}" ] && BASE_PKGS+=(${CEPH_LAB_EXTRA_PKGS})

# --- helpers -----------------------------------------------------------------

rbd_module_path() {
    local f
    f=$(dpkg-query -L qemu-block-extra 2>/dev/null | grep -m1 '/qemu/block-rbd\.so$' || true)
    if [ -z "$f" ]; then
        for f in /usr/lib/*/qemu/block-rbd.so; do break; done
    fi
    [ -n "$f" ] && [ -f "$f" ] && printf '%s' "$f"
}

# qemu_ok: cheap check that the qemu tools and a version-matched rbd module are there
qemu_ok() {
    local c qu qb
    for c in qemu-storage-daemon qemu-img qemu-io; do
        command -v "$c" >/dev/null 2>&1 || return 1
    done
    qu=$(pkg_version qemu-utils)
    qb=$(pkg_version qemu-block-extra)
    [ -n "$qu" ] && [ -n "$qb" ] || return 1
    # qemu-block-extra may carry a binNMU suffix (+bN) in stock Debian
    [ "${qb%+b[0-9]*}" = "${qu%+b[0-9]*}" ] || return 1
    [ -n "$(rbd_module_path)" ]
}

rust_ok() {
    [ "${CEPH_LAB_NO_RUST:-0}" = 1 ] && return 0
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1
}

# Install qemu-block-extra matching the installed backports qemu-utils.
install_bpo_block_extra() {
    local qu_ver=$1 codename mirror work signed=() debs
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    mirror=$(debian_mirror)
    work=$(mktemp -d /tmp/cephrbd-qemu-bpo.XXXXXX)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf -- '$work'" EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
        signed=("[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]")
    printf 'deb %s %s %s-backports main\n' "${signed[*]}" "$mirror" "$codename" >"$work/bpo.list"
    local A=(-q -o Dpkg::Use-Pty=0
             -o "Dir::Etc::sourcelist=$work/bpo.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
             -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
             -o APT::Sandbox::User=root)
    log "qemu-utils $qu_ver is from ${codename}-backports: fetching the matching qemu-block-extra from $mirror (private apt config in $work)"
    "${SUDO[@]}" apt-get "${A[@]}" update >&2 || die "apt-get update of ${codename}-backports (private config) failed"
    if (cd "$work" && "${SUDO[@]}" apt-get "${A[@]}" download "qemu-block-extra=$qu_ver" >&2); then
        :
    else
        log "qemu-block-extra=$qu_ver is not on the mirror any more; fetching the current backports qemu-utils + qemu-block-extra pair"
        (cd "$work" && "${SUDO[@]}" apt-get "${A[@]}" download qemu-utils qemu-block-extra >&2) ||
            die "could not download qemu-block-extra from ${codename}-backports"
    fi
    debs=("$work"/*.deb)
    [ -f "${debs[0]}" ] || die "no .deb downloaded into $work"
    apt_update_once
    log "installing ${debs[*]##*/}"
    "${SUDO[@]}" "${APT_INSTALL[@]}" "${debs[@]}" >&2 || die "apt-get install of ${debs[*]##*/} failed"
    rm -rf -- "$work"
    trap - EXIT
}

# Explicit check that the rbd block driver module loads.
verify_qemu() {
    local c so out
    for c in qemu-storage-daemon qemu-img qemu-io; do
        command -v "$c" >/dev/null 2>&1 || die "$c not found in PATH after installation"
    done
    so=$(rbd_module_path) || true
    [ -n "$so" ] || die "qemu rbd block driver (block-rbd.so, package qemu-block-extra) is missing"
    if ldd "$so" 2>/dev/null | grep -q 'not found'; then
        die "$so has unresolved libraries: $(ldd "$so" | grep 'not found' | tr -s ' \t\n' ' ')"
    fi
    # The module loads lazily on first use of driver=rbd. A missing/mismatched module
    # gives "Unknown driver 'rbd'"; a loaded one fails later, at the (bogus) cluster.
    out=$(timeout 20 qemu-img info --image-opts 'driver=rbd,pool=p,image=i,conf=/dev/null,user=none' 2>&1 || true)
    case "$out" in
        *"Unknown driver"*|*"Unable to load module"*|*"Failed to open module"*|*"module"*"mismatch"*)
            die "qemu-img cannot load the rbd driver ($so): $(printf '%s' "$out" | tr '\n' ' ')" ;;
    esac
}

verify_all() {
    local m
    m=$(missing_pkgs "${BASE_PKGS[@]}")
    [ -z "$m" ] || die "packages still missing: $(printf '%s' "$m" | tr '\n' ' ')"
    verify_qemu
    if [ "${CEPH_LAB_NO_RUST:-0}" != 1 ]; then
        rust_ok || die "cargo fmt / cargo clippy are not available"
    fi
}

# --- fast path -----------------------------------------------------------------

MISSING=$(missing_pkgs "${BASE_PKGS[@]}")
if [ -z "$MISSING" ] && qemu_ok && rust_ok; then
    verify_all
    log "all dependencies present"
    exit 0
fi

# --- base packages -----------------------------------------------------------

if [ -n "$MISSING" ]; then
    # shellcheck disable=SC2086 # one package per line
    set -- $MISSING
    apt_update_once
    log "installing: $*"
    "${SUDO[@]}" "${APT_INSTALL[@]}" "$@" >&2 || die "apt-get install $* failed"
fi

# --- qemu ----------------------------------------------------------------------

if ! qemu_ok; then
    QU_VER=$(pkg_version qemu-utils)
    case "$QU_VER" in
        '')
            apt_update_once
            log "installing stock qemu-utils qemu-block-extra qemu-system-common"
            "${SUDO[@]}" "${APT_INSTALL[@]}" qemu-utils qemu-block-extra qemu-system-common >&2 ||
                die "apt-get install of stock qemu failed"
            ;;
        *bpo*)
            install_bpo_block_extra "$QU_VER"
            ;;
        *)
            apt_update_once
            log "qemu-utils $QU_VER is stock: installing matching qemu-block-extra qemu-system-common"
            "${SUDO[@]}" "${APT_INSTALL[@]}" qemu-utils qemu-block-extra qemu-system-common >&2 ||
                die "apt-get install of stock qemu failed"
            ;;
    esac
    qemu_ok || die "qemu tools / block-rbd.so still not consistent: qemu-utils=$(pkg_version qemu-utils) qemu-block-extra=$(pkg_version qemu-block-extra)"
fi

# --- rust components -------------------------------------------------------------

if ! rust_ok; then
    if command -v rustup >/dev/null 2>&1; then
        log "rustup component add rustfmt clippy"
        rustup component add rustfmt clippy >&2 || die "rustup component add rustfmt clippy failed"
    else
        die "cargo fmt / cargo clippy missing and rustup not found (install rustup first)"
    fi
fi

verify_all
log "done: $(qemu-img --version | head -n1), ceph $(pkg_version ceph-common), block-rbd.so loads"
