#!/usr/bin/env bash
# run.sh [--bind DIR]... SUITE|ROOT [--] COMMAND [ARG...] - run COMMAND inside a chroot
# made by chroot.sh (SUITE: bullseye, trixie, forky) or inside the directory ROOT (any
# argument with a slash).
#
# The command runs in a private mount namespace (unshare --mount, propagation private)
# where /proc, /dev and /sys and every --bind DIR are bind-mounted into the chroot at the
# same paths (the lab directory with ceph.conf and the keyring, a scratch directory, the
# directory of the binaries...). Nothing is mounted on the host: the mounts vanish with
# the namespace, i.e. when COMMAND and every process it left running (daemons) have
# exited, however they end. The network namespace is the host's, so 127.0.0.1 reaches
# the host's clusters.
#
# COMMAND is looked up with the caller's PATH inside the chroot and gets the caller's
# environment. The working directory is kept when it lies inside a bound directory,
# otherwise it is /. The exit status is COMMAND's; run.sh's own failures exit 125.
set -euo pipefail

COMPAT_PROG=compat-run
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
die() { printf '%s: ERROR: %s\n' "$COMPAT_PROG" "$*" >&2; exit 125; }
usage() { die "usage: run.sh [--bind DIR]... SUITE|ROOT [--] COMMAND [ARG...]"; }

BINDS=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --bind) [ "$#" -ge 2 ] || usage; BINDS+=("$2"); shift 2 ;;
        --bind=*) BINDS+=("${1#--bind=}"); shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ "$#" -ge 1 ] || usage
TARGET=$1
shift
[ "${1:-}" != -- ] || shift
[ "$#" -ge 1 ] || usage

case "$TARGET" in
    */*)
        ROOT=$(realpath -e -- "$TARGET" 2>/dev/null) || die "no such directory: $TARGET" ;;
    *)
        compat_suite_packages "$TARGET" >/dev/null || die "unknown suite $TARGET (bullseye, trixie or forky)"
        compat_ready "$TARGET" ||
            die "the $TARGET chroot is missing or incomplete: build it with scripts/compat-lab/chroot.sh $TARGET"
        ROOT=$(compat_root "$TARGET") ;;
esac
[ -d "$ROOT" ] && [ "$ROOT" != / ] || die "not a chroot directory: $ROOT"
[ "$(id -u)" -eq 0 ] || die "must run as root (mount namespace and chroot)"

# First pass: start again, in place (same PID), inside a fresh mount namespace. The
# marker holds this PID, so a run.sh started by COMMAND still gets its own namespace.
if [ "${CEPHRBD_CHROOT_NS:-}" != "$$" ]; then
    args=()
    for b in "${BINDS[@]}"; do args+=(--bind "$b"); done
    CEPHRBD_CHROOT_NS=$$ exec /usr/bin/unshare --mount --propagation private -- \
        "$BASH" "${BASH_SOURCE[0]}" "${args[@]}" "$ROOT" -- "$@"
fi
unset CEPHRBD_CHROOT_NS

# Second pass, inside the namespace.
mount_at() { # mount_at OPTION HOSTDIR
    local src=$2 dst=$ROOT$2
    mkdir -p -- "$dst" || die "cannot create the mount point $dst"
    mount "$1" -- "$src" "$dst" || die "mount $1 $src $dst failed"
}
mount_at --bind /proc
mount_at --rbind /dev
mount_at --rbind /sys
WD=/
for b in "${BINDS[@]}"; do
    d=$(realpath -e -- "$b" 2>/dev/null) || die "--bind $b: no such directory"
    [ -d "$d" ] && [ "$d" != / ] || die "--bind $b: not a directory other than /"
    mount_at --bind "$d"
    case "$PWD/" in "$d"/*) WD=$PWD ;; esac
done
exec /usr/bin/unshare --root="$ROOT" --wd="$WD" -- "$@"
