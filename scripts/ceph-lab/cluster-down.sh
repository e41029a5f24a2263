#!/usr/bin/env bash
# cluster-down.sh [DIR] [--keep] - stop the lab cluster started by cluster-up.sh from DIR
# (default ${CEPHRBD_LAB_DIR:-/tmp/cephrbd-lab}) and remove DIR unless --keep.
#
# Stops osd, then mgr, then mon (TERM, up to 1.5 s grace, then KILL), one daemon type
# at a time, and only processes whose /proc/PID/cmdline carries DIR/ceph.conf. Removes
# DIR only if it carries cluster-up.sh's marker. Idempotent: nothing running is not an error.
set -euo pipefail

LAB_PROG=cluster-down
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

KEEP=0
ARG_DIR=""
for a in "$@"; do
    case "$a" in
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
        -*) lab_die "unknown option $a (usage: cluster-down.sh [DIR] [--keep])" ;;
        *) [ -z "$ARG_DIR" ] || lab_die "usage: cluster-down.sh [DIR] [--keep]"; ARG_DIR=$a ;;
    esac
done
DIR=$(lab_resolve_dir "${ARG_DIR:-$LAB_DEFAULT_DIR}")
CONF=$DIR/ceph.conf

lab_lock "$DIR"
lab_stop_all "$CONF"

if [ "$KEEP" = 0 ] && [ -d "$DIR" ]; then
    if [ -f "$DIR/$LAB_MARKER_NAME" ]; then
        rm -rf -- "$DIR"
        lab_log "removed $DIR"
    else
        lab_log "not removing $DIR: it was not created by cluster-up.sh"
    fi
fi
exit 0
