# shellcheck shell=bash
# lib.sh - helpers shared by cluster-up.sh and cluster-down.sh (sourced, not run).

# shellcheck disable=SC2034 # used by the sourcing scripts
LAB_MARKER_NAME=.cephrbd-lab
# shellcheck disable=SC2034
LAB_DEFAULT_DIR=${CEPHRBD_LAB_DIR:-/tmp/cephrbd-lab}

lab_log() { printf '%s: %s\n' "${LAB_PROG:-ceph-lab}" "$*" >&2; }
lab_die() { printf '%s: ERROR: %s\n' "${LAB_PROG:-ceph-lab}" "$*" >&2; exit 1; }

# lab_resolve_dir DIR -> absolute, normalised path; refuses odd paths.
lab_resolve_dir() {
    local d
    [ -n "$1" ] || lab_die "empty directory"
    d=$(realpath -m -- "$1") || lab_die "cannot resolve $1"
    case "$d" in
        / | /tmp | /var | /var/tmp | /root | /home | /usr | /etc)
            lab_die "refusing to use $d as the lab directory" ;;
    esac
    # The path ends up unquoted in ceph.conf and DIR/env: keep it simple.
    [[ "$d" =~ ^/[A-Za-z0-9._/+-]+$ ]] || lab_die "lab directory must match [A-Za-z0-9._/+-]: $d"
    printf '%s' "$d"
}

# lab_state PID -> one-letter process state from /proc/PID/stat (empty if gone)
lab_state() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    printf '%s' "${rest%% *}"
}

# lab_alive PID: process exists and is not a zombie/dead
lab_alive() {
    local s
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    s=$(lab_state "$1")
    [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ] && [ "$s" != x ]
}

# lab_cmdline_has_conf PID CONF: one argv element is CONF (after -c/--conf) or --conf=CONF
lab_cmdline_has_conf() {
    local a
    local -a args=()
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    for a in "${args[@]}"; do
        [ "$a" = "$2" ] || [ "$a" = "--conf=$2" ] && return 0
    done
    return 1
}

# lab_daemon_pid CONF NAME -> PID of the live ceph daemon NAME (mon.a, mgr.x, osd.0)
# from DIR/run/NAME.pid, verified against /proc/PID/cmdline. Empty if not running.
lab_daemon_pid() {
    local conf=$1 name=$2 pid
    pid=$(cat "${conf%/*}/run/$name.pid" 2>/dev/null) || return 0
    pid=${pid//[!0-9]/}
    [ -n "$pid" ] && lab_alive "$pid" && lab_cmdline_has_conf "$pid" "$conf" && printf '%s' "$pid"
    return 0
}

# lab_find_pids CONF EXE -> live PIDs whose argv0 basename is EXE and whose cmdline
# carries CONF (covers lost/stale pid files)
lab_find_pids() {
    local conf=$1 exe=$2 p a
    local -a args
    for p in /proc/[0-9]*; do
        args=()
        mapfile -d '' -t args 2>/dev/null <"$p/cmdline" || continue
        [ "${#args[@]}" -gt 0 ] || continue
        [ "${args[0]##*/}" = "$exe" ] || continue
        for a in "${args[@]}"; do
            if [ "$a" = "$conf" ] || [ "$a" = "--conf=$conf" ]; then
                lab_alive "${p#/proc/}" && printf '%s\n' "${p#/proc/}"
                break
            fi
        done
    done
    return 0
}

# lab_wait_gone N PID...: polls every 50 ms, N times at most; true once all PIDs are dead.
lab_wait_gone() {
    local tries=$1 pid _ left
    shift
    for _ in $(seq 1 "$tries"); do
        left=0
        for pid in "$@"; do lab_alive "$pid" && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.05
    done
    return 1
}

# lab_stop_pids PID...: TERM, wait up to 1.5 s, then KILL (and wait up to 1 s more).
lab_stop_pids() {
    local pid
    [ "$#" -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    lab_wait_gone 30 "$@" && return 0
    for pid in "$@"; do
        if lab_alive "$pid"; then
            lab_log "pid $pid did not stop within 1.5 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    lab_wait_gone 20 "$@" && return 0
    lab_log "WARNING: still alive after SIGKILL: $*"
}

# lab_stop_all CONF [kill]: stop osd, then mgr, then mon of the cluster using CONF.
# With "kill", SIGKILL at once (for a cluster about to be wiped anyway: an OSD whose mon
# is gone would otherwise sit out the whole TERM grace).
lab_stop_all() {
    local conf=$1 mode=${2:-term} exe
    local -a pids
    for exe in ceph-osd ceph-mgr ceph-mon; do
        mapfile -t pids < <(lab_find_pids "$conf" "$exe")
        [ "${#pids[@]}" -gt 0 ] || continue
        if [ "$mode" = kill ]; then
            lab_log "killing $exe (pid ${pids[*]})"
            kill -KILL "${pids[@]}" 2>/dev/null || true
        else
            lab_log "stopping $exe (pid ${pids[*]})"
            lab_stop_pids "${pids[@]}"
        fi
    done
    [ "$mode" = kill ] || return 0
    # wait (max 2 s) until they are gone or zombies, so their ports are free
    for _ in $(seq 1 40); do
        for exe in ceph-osd ceph-mgr ceph-mon; do
            [ -z "$(lab_find_pids "$conf" "$exe")" ] || { sleep 0.05; continue 2; }
        done
        return 0
    done
}

# lab_port_busy PORT: something listens on TCP PORT (any address, v4 or v6)
lab_port_busy() {
    local hex
    hex=$(printf '%04X' "$1")
    # /proc/net/tcp: "sl local_address rem_address st ..."; st 0A = LISTEN
    awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# lab_lock DIR: serialise cluster-up/cluster-down on DIR (lock file next to DIR,
# because DIR itself gets wiped). Uses fd 9; never let a daemon inherit it.
# With a second argument "create", the parent directory is created if missing; without
# it (cluster-down) a missing parent means there is nothing to lock.
lab_lock() {
    local lock="${1%/}.lock"
    if [ ! -d "${lock%/*}" ]; then
        [ "${2:-}" = create ] || return 0
        mkdir -p -- "${lock%/*}"
    fi
    exec 9>>"$lock" || lab_die "cannot open lock file $lock"
    flock -w "${CEPH_LAB_LOCK_TIMEOUT:-180}" 9 || lab_die "timed out waiting for lock $lock"
}
