#!/usr/bin/env bash
# cluster-up.sh [DIR] - single-node Ceph (mon + mgr + 1 OSD) on 127.0.0.1, cephx on,
# everything (conf, keys, data, logs, pid files) inside DIR.
#
# DIR defaults to ${CEPHRBD_LAB_DIR:-/tmp/cephrbd-lab}. Recipe and the reasons behind each
# setting: docs/ceph-lab.md ("Bring-up", "Why each setting").
#
# stdout: ONLY the absolute path of DIR/ceph.conf (on success). Progress/errors: stderr.
# DIR/env: CEPH_CONF, CEPH_KEYRING, CEPH_USER, CEPH_MON_HOST, CEPH_POOL, CEPH_LAB_DIR
#          as `export KEY=VALUE` lines (shell-sourceable, no quoting).
#
# Idempotent: a healthy cluster already running from DIR with the same settings is
# reused (~50 ms); extra pools are added to it if missing. A DIR with our marker but a
# dead/partial cluster (or different settings) is stopped, wiped and rebuilt. A non-empty
# DIR without our marker is refused, and so are busy mon ports.
#
# ceph.conf has NO [client] keyring line: every client (this script included) must pass
# the admin keyring explicitly: -n client.admin (or --id admin) --keyring DIR/ceph.client.admin.keyring
#
# Knobs (environment):
#   CEPH_LAB_STORE=memstore|bluestore  OSD object store (default memstore; bluestore uses a
#                                      sparse DIR/osd/ceph-0/block file)
#   CEPH_LAB_MGR=1|0                   start a mgr (default 1; ceph df/get-quota need it)
#   CEPH_LAB_POOL=rbd                  main pool (written to DIR/env as CEPH_POOL)
#   CEPH_LAB_EXTRA_POOLS="rbd2 ..."    more rbd pools (default none)
#   CEPH_LAB_V2_PORT=3300              mon msgr2 port
#   CEPH_LAB_V1_PORT=6789              mon msgr1 port, 0 = msgr2 only
#   CEPH_LAB_OSD_BYTES=8589934592      OSD capacity (memstore device / bluestore block size)
#   CEPH_LAB_PG_NUM=8                  PGs per pool
#   CEPH_LAB_FRESH=1                   always wipe and rebuild
#   CEPH_LAB_CMD_TIMEOUT=30            time limit (s) for each ceph command
#   CEPH_LAB_CLIENT_KEY_TYPE=aes       cephx key type of client.admin on a Ceph that knows
#                                      aes256k (19.2.6+, 20.2.4+): aes (default) also allows
#                                      aes keys, as an upgraded cluster does, so clients up
#                                      to 18.2 connect; aes256k keeps a fresh cluster's
#                                      default (aes256k only). Daemon keys are aes256k there.
#                                      An older Ceph has only aes.
set -Eeuo pipefail

LAB_PROG=cluster-up
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

T0=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - T0) / 1000000)); }

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        exit 0 ;;
esac
[ "$#" -le 1 ] || lab_die "usage: cluster-up.sh [DIR]"

DIR=$(lab_resolve_dir "${1:-$LAB_DEFAULT_DIR}")
STORE=${CEPH_LAB_STORE:-memstore}
MGR=${CEPH_LAB_MGR:-1}
POOL=${CEPH_LAB_POOL:-rbd}
EXTRA_POOLS=${CEPH_LAB_EXTRA_POOLS:-}
V2_PORT=${CEPH_LAB_V2_PORT:-3300}
V1_PORT=${CEPH_LAB_V1_PORT:-6789}
OSD_BYTES=${CEPH_LAB_OSD_BYTES:-8589934592}
PG_NUM=${CEPH_LAB_PG_NUM:-8}
FRESH=${CEPH_LAB_FRESH:-0}
T=${CEPH_LAB_CMD_TIMEOUT:-30}
CLIENT_KEY_TYPE=${CEPH_LAB_CLIENT_KEY_TYPE:-aes}

case "$STORE" in memstore | bluestore) ;; *) lab_die "CEPH_LAB_STORE must be memstore or bluestore" ;; esac
case "$MGR" in 0 | 1) ;; *) lab_die "CEPH_LAB_MGR must be 0 or 1" ;; esac
case "$CLIENT_KEY_TYPE" in aes | aes256k) ;; *) lab_die "CEPH_LAB_CLIENT_KEY_TYPE must be aes or aes256k" ;; esac
for n in "$V2_PORT" "$V1_PORT" "$OSD_BYTES" "$PG_NUM" "$T"; do
    [[ "$n" =~ ^[0-9]+$ ]] || lab_die "not a number: $n"
done
if [ "$V2_PORT" -lt 1 ] || [ "$V2_PORT" -gt 65535 ] || [ "$V1_PORT" -gt 65535 ]; then lab_die "bad port"; fi
[ "$V2_PORT" != "$V1_PORT" ] || lab_die "CEPH_LAB_V2_PORT and CEPH_LAB_V1_PORT are equal"
# shellcheck disable=SC2206 # split on whitespace
POOLS=("$POOL" $EXTRA_POOLS)
for p in "${POOLS[@]}"; do
    [[ "$p" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || lab_die "bad pool name: $p"
done

CONF=$DIR/ceph.conf
KEYRING=$DIR/ceph.client.admin.keyring
MARKER=$DIR/$LAB_MARKER_NAME
if [ "$V1_PORT" = 0 ]; then
    MON_HOST="[v2:127.0.0.1:$V2_PORT]"
    MSGR1=false
else
    MON_HOST="[v2:127.0.0.1:$V2_PORT,v1:127.0.0.1:$V1_PORT]"
    MSGR1=true
fi
# Ceph 19.2.6 and 20.2.4 (CVE-2025-30156) add the cephx key type aes256k, and the monmap
# of a fresh cluster then allows no other: a key of type aes (all that clients up to 18.2
# and the kernel know) is refused with "permission denied". Such a Ceph's monmaptool
# takes --auth-allowed-ciphers; an older one has aes keys only.
AES256K=0
case "$(monmaptool --help 2>&1 || true)" in *--auth-allowed-ciphers*) AES256K=1 ;; esac
if [ "$AES256K" = 0 ] && [ "$CLIENT_KEY_TYPE" != aes ]; then
    lab_die "CEPH_LAB_CLIENT_KEY_TYPE=$CLIENT_KEY_TYPE: this Ceph knows only aes keys"
fi
# Settings that need a rebuild when they change (extra pools are just added).
PARAMS="store=$STORE mgr=$MGR pool=$POOL v2=$V2_PORT v1=$V1_PORT osd_bytes=$OSD_BYTES pg=$PG_NUM"
[ "$AES256K" = 0 ] || PARAMS="$PARAMS client_key=$CLIENT_KEY_TYPE"

# Every ceph/rbd call is time-limited; the script passes the keyring explicitly.
CT=$((T < 15 ? T : 15))
# The python `ceph` CLI given --keyring on the command line still logs "unable to find a
# keyring on /etc/ceph/... disabling cephx" (then works); via CEPH_ARGS it is silent.
CEPH=(env "CEPH_ARGS=--keyring $KEYRING" timeout -k 3 "$T" ceph --connect-timeout "$CT" -c "$CONF" -n client.admin)
lim() { timeout -k 3 "$T" "$@" >&2; }   # stdout is reserved for the conf path

# Daemons to watch while waiting on the cluster: "name:pid" entries.
WATCH=()
watch_daemon() { WATCH+=("$1:$2"); }
dead_daemon() {
    local w
    for w in "${WATCH[@]}"; do
        lab_alive "${w#*:}" || { printf '%s' "${w%%:*}"; return 0; }
    done
    return 1
}
# watched OUT CMD...: run the external command CMD (stdout+stderr appended to file OUT,
# or to our stderr if OUT is "-"), but give up at once if a watched daemon dies meanwhile
# instead of waiting for CMD's own time limit. CMD is exec'ed directly, so the TERM
# reaches timeout(1), which passes it on to the ceph client.
watched() {
    local out=$1 pid dead rc=0
    shift
    if [ "$out" = - ]; then
        "$@" >&2 &
    else
        "$@" >>"$out" 2>&1 &
    fi
    pid=$!
    while lab_alive "$pid"; do
        if dead=$(dead_daemon); then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            lab_die "$dead died (while running: ...${*: -6})"
        fi
        sleep 0.02
    done
    wait "$pid" || rc=$?
    return "$rc"
}
# spawn NAME CMD...: start daemon NAME in the foreground (-f) of its own session, with
# stdio on DIR/log/NAME.out and every other inherited fd (our lock, the caller's pipes)
# closed, so a caller capturing our output never waits on the daemon. The PID stays
# the daemon's (setsid execs in place), and it is watched from then on.
spawn() {
    local name=$1
    shift
    (
        for f in /proc/"$BASHPID"/fd/*; do
            f=${f##*/}
            if [ "$f" -gt 2 ]; then eval "exec $f>&-" 2>/dev/null || true; fi
        done
        exec setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1
    ) &
    watch_daemon "$name" "$!"
}

existing_pools() { cat "$DIR/pools" 2>/dev/null || true; }

create_pool() {
    local p=$1
    lab_log "pool $p: create + rbd pool init ($(elapsed_ms) ms)"
    watched "$DIR/log/cluster-up.out" "${CEPH[@]}" osd pool create "$p" "$PG_NUM" "$PG_NUM" replicated
    # pool init waits for the PGs to go active and sets application "rbd"
    watched - timeout -k 3 $((T * 4)) rbd -c "$CONF" -n client.admin --keyring "$KEYRING" pool init "$p"
    printf '%s\n' "$p" >>"$DIR/pools"
}

# With a mgr: wait until get-quota answers, i.e. the mgr publishes stats for the pool.
wait_pool_stats() {
    local p=$1 deadline=$((SECONDS + T * 2))
    [ "$MGR" = 1 ] || return 0
    until watched /dev/null "${CEPH[@]}" osd pool get-quota "$p" -f json; do
        [ "$SECONDS" -lt "$deadline" ] || lab_die "mgr did not publish stats for pool $p within $((T * 2)) s"
        sleep 0.1
    done
}

ensure_extra_pools() {
    local p have
    have=$(existing_pools)
    for p in "${POOLS[@]}"; do
        grep -qxF -- "$p" <<<"$have" && continue
        create_pool "$p"
        wait_pool_stats "$p"
    done
}

healthy() {
    [ -f "$MARKER" ] && [ -f "$DIR/env" ] && [ -f "$CONF" ] && [ -f "$KEYRING" ] || return 1
    [ "$(cat "$DIR/params" 2>/dev/null)" = "$PARAMS" ] || { lab_log "settings differ from the running cluster's"; return 1; }
    [ -n "$(lab_daemon_pid "$CONF" mon.a)" ] || { lab_log "mon.a is not running"; return 1; }
    [ -n "$(lab_daemon_pid "$CONF" osd.0)" ] || { lab_log "osd.0 is not running"; return 1; }
    if [ "$MGR" = 1 ] && [ -z "$(lab_daemon_pid "$CONF" mgr.x)" ]; then lab_log "mgr.x is not running"; return 1; fi
    # mon and OSD answer, and the main pool is there
    timeout -k 1 5 rbd -c "$CONF" -n client.admin --keyring "$KEYRING" ls "$POOL" >/dev/null 2>&1 ||
        { lab_log "cluster does not answer (rbd ls $POOL)"; return 1; }
}

print_logs() {
    local f
    for f in "$DIR"/log/*; do
        [ -s "$f" ] || continue
        printf '==> %s (last 25 lines) <==\n' "$f" >&2
        tail -n 25 -- "$f" >&2 || true
    done
}

BUILDING=0
exec 7>&2   # the original stderr, for the exit report
on_exit() {
    local rc=$?
    exec 2>&7
    if [ "$rc" != 0 ] && [ "$BUILDING" = 1 ]; then
        lab_log "bring-up FAILED (rc=$rc) after $(elapsed_ms) ms; daemon logs:"
        print_logs
        lab_stop_all "$CONF" kill
        lab_log "leftover state kept in $DIR (it will be wiped by the next cluster-up.sh)"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'lab_log "failed (rc=$?) at line $LINENO: $BASH_COMMAND"' ERR

lab_lock "$DIR" create

# --- reuse ------------------------------------------------------------------------
if [ "$FRESH" != 1 ] && [ -f "$MARKER" ] && healthy; then
    for d in mon.a mgr.x osd.0; do
        pid=$(lab_daemon_pid "$CONF" "$d")
        [ -z "$pid" ] || watch_daemon "$d" "$pid"
    done
    ensure_extra_pools
    lab_log "reusing the running cluster in $DIR ($(elapsed_ms) ms)"
    printf '%s\n' "$CONF"
    exit 0
fi

# --- clean up / refuse -------------------------------------------------------------
# Our own orphans (even if DIR vanished) would hold the ports: kill them first
# (their data is about to be wiped, a graceful stop buys nothing).
lab_stop_all "$CONF" kill
if [ -e "$DIR" ] || [ -L "$DIR" ]; then
    if [ ! -d "$DIR" ] || [ -L "$DIR" ]; then lab_die "$DIR exists and is not a directory"; fi
    if [ -f "$MARKER" ]; then
        lab_log "wiping $DIR (dead, partial, stale or CEPH_LAB_FRESH=1)"
        rm -rf -- "$DIR"
    elif [ -n "$(ls -A -- "$DIR")" ]; then
        lab_die "$DIR is not empty and was not created by cluster-up.sh (no $LAB_MARKER_NAME)"
    fi
fi
for port in "$V2_PORT" "$V1_PORT"; do
    [ "$port" = 0 ] && continue
    if lab_port_busy "$port"; then lab_die "127.0.0.1:$port already in use"; fi
done

# --- build ---------------------------------------------------------------------------
BUILDING=1
lab_log "building a $STORE cluster (mgr=$MGR) in $DIR, mon $MON_HOST"
mkdir -p "$DIR"/run "$DIR"/log "$DIR"/mon "$DIR"/mgr/ceph-x "$DIR"/osd/ceph-0
printf 'created by %s at %s\n' "$0" "$(date -Is)" >"$MARKER"

FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)

if [ "$STORE" = memstore ]; then
    STORE_CONF="osd objectstore = memstore
memstore device bytes = $OSD_BYTES"
else
    # NB: do not set "bluestore block path" ($osd_data/block): mkfs fails with ELOOP
    STORE_CONF="osd objectstore = bluestore
bluestore block create = true
bluestore block size = $OSD_BYTES
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824"
fi
NOMGR_CONF=""
[ "$MGR" = 1 ] || NOMGR_CONF="mon mgr mkfs grace = 31536000"

cat >"$CONF" <<EOF
# generated by cluster-up.sh - single-node lab cluster, 127.0.0.1 only
# No [client] keyring on purpose: clients pass --id admin and --keyring explicitly
[global]
fsid = $FSID
mon host = $MON_HOST
ms bind msgr1 = $MSGR1
ms bind msgr2 = true
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = $PG_NUM
osd pool default pgp num = $PG_NUM
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
paxos min wait = 0.01
mgr stats period = 1
$NOMGR_CONF
[mon]
mon data = $DIR/mon/\$cluster-\$id
keyring = \$mon_data/keyring
admin socket = $DIR/run/\$name.asok
[mgr]
mgr data = $DIR/mgr/\$cluster-\$id
keyring = \$mgr_data/keyring
admin socket = $DIR/run/\$name.asok
mgr disabled modules = nfs restful iostat dashboard prometheus diskprediction_local
[osd]
osd data = $DIR/osd/\$cluster-\$id
keyring = \$osd_data/keyring
admin socket = $DIR/run/\$name.asok
$STORE_CONF
EOF

# keys: mon., client.admin, mgr.x, osd.0; the mon's initial keyring holds all four, and
# ceph-mon --mkfs imports every entity in it into the auth database (no `ceph auth add`).
# A cephx secret is base64(u16 type | u32 sec | u32 nsec | u16 len | len random bytes),
# exactly what `ceph-authtool --gen-key` writes; generated here to save 8 execs. Type 1 is
# aes (16 bytes), type 2 aes256k (32 bytes).
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
gen_key() {
    local type=1 len=16
    [ "$1" = aes256k ] && type=2 len=32
    # shellcheck disable=SC2059 # the format is built from \x escapes on purpose
    { printf "\\x0$type\\x00$(le32 "$(date +%s)")\\x00\\x00\\x00\\x00$(printf '\\x%02x' "$len")\\x00"; head -c "$len" /dev/urandom; } |
        base64 -w0
}
SERVICE_KEY_TYPE=aes
[ "$AES256K" = 0 ] || SERVICE_KEY_TYPE=aes256k
# keyring_entry NAME KEYTYPE SUBSYS CAP [SUBSYS CAP]...
keyring_entry() {
    local name=$1 type=$2
    shift 2
    printf '[%s]\n\tkey = %s\n' "$name" "$(gen_key "$type")"
    while [ "$#" -ge 2 ]; do
        printf '\tcaps %s = "%s"\n' "$1" "$2"
        shift 2
    done
}
MONKR=$DIR/mon.keyring.init
(
    umask 077
    keyring_entry client.admin "$CLIENT_KEY_TYPE" mds 'allow *' mgr 'allow *' mon 'allow *' osd 'allow *' >"$KEYRING"
    keyring_entry mgr.x "$SERVICE_KEY_TYPE" mds 'allow *' mon 'allow profile mgr' osd 'allow *' >"$DIR/mgr/ceph-x/keyring"
    keyring_entry osd.0 "$SERVICE_KEY_TYPE" mgr 'allow profile osd' mon 'allow profile osd' osd 'allow *' \
        >"$DIR/osd/ceph-0/keyring"
    { keyring_entry mon. "$SERVICE_KEY_TYPE" mon 'allow *'; cat "$KEYRING" "$DIR/mgr/ceph-x/keyring" "$DIR/osd/ceph-0/keyring"; } >"$MONKR"
)
chmod 600 "$KEYRING"
lim ceph-authtool "$MONKR" --list >/dev/null 2>&1 || lab_die "generated keyring $MONKR does not parse"

# mon
# With an aes client key, allow aes beside aes256k (what `ceph mon set auth_allowed_ciphers
# aes,aes256k` does on a running cluster).
CIPHERS=()
[ "$AES256K" = 1 ] && [ "$CLIENT_KEY_TYPE" = aes ] && CIPHERS=(--auth-allowed-ciphers "aes,aes256k")
lim monmaptool --create --addv a "$MON_HOST" --fsid "$FSID" "${CIPHERS[@]}" "$DIR/monmap" 2>>"$DIR/log/mon.a.out"
lim ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$MONKR" </dev/null
lab_log "starting mon.a ($(elapsed_ms) ms)"
spawn mon.a ceph-mon -f -c "$CONF" -i a

# mgr (devicehealth monitoring off, or it creates a device_health_metrics pool;
# --force because the option is unknown until a mgr has run)
if [ "$MGR" = 1 ]; then
    watched - "${CEPH[@]}" config set mgr mgr/devicehealth/enable_monitoring false --force
    lab_log "starting mgr.x ($(elapsed_ms) ms)"
    spawn mgr.x ceph-mgr -f -c "$CONF" -i x
fi

# osd
watched "$DIR/log/cluster-up.out" "${CEPH[@]}" osd new "$OSD_UUID" 0
lim ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" </dev/null 2>>"$DIR/log/osd.0.out"
lab_log "starting osd.0 ($(elapsed_ms) ms)"
spawn osd.0 ceph-osd -f -c "$CONF" -i 0

# pools
: >"$DIR/pools"
for p in "${POOLS[@]}"; do create_pool "$p"; done
lab_log "pools ready ($(elapsed_ms) ms)"
for p in "${POOLS[@]}"; do wait_pool_stats "$p"; done

DAEMONS=(mon.a osd.0)
[ "$MGR" = 1 ] && DAEMONS+=(mgr.x)
for d in "${DAEMONS[@]}"; do
    [ -n "$(lab_daemon_pid "$CONF" "$d")" ] || lab_die "$d is not running"
done

printf '%s\n' "$PARAMS" >"$DIR/params"
cat >"$DIR/env.tmp" <<EOF
export CEPH_CONF=$CONF
export CEPH_KEYRING=$KEYRING
export CEPH_USER=admin
export CEPH_MON_HOST=$MON_HOST
export CEPH_POOL=$POOL
export CEPH_LAB_DIR=$DIR
EOF
mv -f "$DIR/env.tmp" "$DIR/env"
elapsed_ms >"$DIR/bringup_ms"
BUILDING=0
lab_log "cluster ready in $(elapsed_ms) ms; env: $DIR/env"
printf '%s\n' "$CONF"
