# shellcheck shell=bash
# lib.sh - helpers shared by chroot.sh and run.sh (sourced, not run).

# shellcheck disable=SC2034 # used by the sourcing scripts
COMPAT_CACHE=${CEPHRBD_CHROOT_CACHE:-/var/cache/cephrbd/chroots}
# The file written last, inside the chroot's root, once the chroot is complete.
COMPAT_MARKER=.cephrbd-chroot

compat_log() { printf '%s: %s\n' "${COMPAT_PROG:-compat-lab}" "$*" >&2; }
compat_die() { printf '%s: ERROR: %s\n' "${COMPAT_PROG:-compat-lab}" "$*" >&2; exit 1; }

# compat_suite_packages SUITE -> the Debian packages the chroot gets (beside minbase)
compat_suite_packages() {
    case "$1" in
        bullseye) printf '%s' "ceph-common" ;;                                # 14.2 Nautilus: the dom0 client generation
        trixie | forky) printf '%s' "ceph-common ceph-mon ceph-mgr ceph-osd" ;; # 18.2 Reef, 20.2 Tentacle: clusters
        *) return 1 ;;
    esac
}

# compat_suite_release SUITE -> the Ceph release (major.minor) the suite is expected to carry
compat_suite_release() {
    case "$1" in
        bullseye) printf '14.2' ;;
        trixie) printf '18.2' ;;
        forky) printf '20.2' ;;
        *) return 1 ;;
    esac
}

# compat_recipe SUITE -> what a cached chroot must have been built from (first marker line)
compat_recipe() {
    printf 'recipe=1 suite=%s variant=minbase packages=%s' "$1" "$(compat_suite_packages "$1" | tr ' ' ,)"
}

# compat_root SUITE -> the chroot's root directory in the cache
compat_root() { printf '%s/%s' "${COMPAT_CACHE%/}" "$1"; }

# compat_ready SUITE: the cached chroot is complete and built from the current recipe
compat_ready() {
    local marker
    marker="$(compat_root "$1")/$COMPAT_MARKER"
    [ -f "$marker" ] && [ "$(head -n1 "$marker" 2>/dev/null)" = "$(compat_recipe "$1")" ]
}

# debian_mirror and the other package helpers the install scripts share.
# shellcheck source=../lib/debian.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/debian.sh"
